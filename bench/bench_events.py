"""The event ledger's costs (issue 16), each figure beside a baseline from the same run.

1. One append from a fresh process, what a slot's finish script pays: a `python -c` that
   imports the finish path (hermes_container.supervision.finish, which imports
   events.append) and records one `gateway.exited`, against the very same process with
   HERMES_EVENTS=0 (the same imports, nothing recorded). Runs alternate; medians in ms.
   Also reported: one record() in a warm process.
2. Crash -> ready of a real gateway under real s6: two s6-svscan trees side by side,
   one with the ledger on and one with HERMES_EVENTS=0, kills alternating between them;
   each sample is kill -9 until `gateway status`'s own reading (service_status.
   gateway_status, in-process) says ready with a new pid. Each tree also runs a sibling
   gateway, never killed. Target: the ledger costs <= 5%, judged on the median of the
   paired differences (kill i on one tree against kill i on the other) over the
   baseline's median. The ledger tree must have recorded every kill's
   exited/restarted/ready and the other tree nothing, or the comparison is void.
3. Replay speed for `gateway status --at`: 1,000,000 gateway events over 50 profiles
   written in big batches through Ledger.write, then `project(ledger.iterate(0,
   until=at), at)` timed, beside the bare read of the same events (iterate alone).
(Scrape time with 50 profiles, the issue's fourth figure, is bench_metrics.py's.)

Exit status: 0 when every target was measured and met, 1 otherwise.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _ports import free_port
from _s6tree import kill_leftovers, running_svscan

from hermes_container.events.ledger import Ledger, Pending
from hermes_container.events.replay import project
from hermes_container.home import HermesHome
from hermes_container.profiles import create_profile, ensure_default_profile
from hermes_container.state import write_desired
from hermes_container.supervision.service_status import gateway_status

HERMES = str(Path(sys.executable).parent / "hermes")
APPEND_RUNS = int(os.environ.get("BENCH_APPEND_RUNS", "25"))
KILLS = int(os.environ.get("BENCH_KILLS", "32"))
REPLAY_EVENTS = int(os.environ.get("BENCH_REPLAY_EVENTS", "1000000"))
REPLAY_PROFILES = 50
CRASH_TARGET = 1.05  # 1 + (median paired difference) / (baseline median)

APPEND_SCRIPT = """
import sys, time
from pathlib import Path
import hermes_container.supervision.finish
from hermes_container.events.append import record
started = time.perf_counter()
record(Path(sys.argv[1]), "gateway.exited", profile="target", actor="supervisor",
       expected=False, code=137, signal=9, how="killed by SIGKILL")
print((time.perf_counter() - started) * 1000)
"""


def base_env(scratch: Path) -> dict[str, str]:
    """The environment of every process started here: bytecode cached in a temp prefix
    (the image precompiles its venv; a dev shell's PYTHONDONTWRITEBYTECODE=1 would make
    each fresh process compile the package again), no inherited HERMES_EVENTS*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERMES_EVENTS")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(scratch / "pycache")
    return env


# -- 1. one append from a fresh process ---------------------------------------------------


def bench_append(scratch: Path, env: dict[str, str]) -> None:
    root = scratch / "append-home"
    root.mkdir()
    Ledger(root).close()  # a booted container has its ledger already
    argv = [sys.executable, "-c", APPEND_SCRIPT, str(root)]
    on_env, off_env = env, {**env, "HERMES_EVENTS": "0"}
    for run_env in (on_env, off_env):  # warm the bytecode cache and the page cache
        subprocess.run(argv, env=run_env, check=True, stdout=subprocess.DEVNULL)

    inside: dict[int, list[float]] = {}  # what record() took within the process

    def once(run_env: dict[str, str], samples: list[float], held: bool) -> None:
        # held: another connection has the file open (a live gateway or the dashboard),
        # so the fresh process's exit is not the last close, which checkpoints the WAL.
        holder = Ledger(root) if held else None
        started = time.perf_counter()
        out = subprocess.run(argv, env=run_env, check=True, capture_output=True, text=True)
        samples.append((time.perf_counter() - started) * 1000)
        inside.setdefault(id(samples), []).append(float(out.stdout))
        if holder is not None:
            holder.close()

    off: list[float] = []
    alone: list[float] = []
    held: list[float] = []
    runs = [(off_env, off, False), (on_env, alone, False), (on_env, held, True)]
    for i in range(APPEND_RUNS):
        for run_env, samples, hold in runs[i % 3 :] + runs[: i % 3]:
            once(run_env, samples, hold)
    ledger = Ledger(root)
    recorded = ledger.bounds()[1]
    ledger.close()
    if recorded != 2 * APPEND_RUNS + 1:
        raise SystemExit(f"the ledger holds {recorded} events, expected {2 * APPEND_RUNS + 1}")
    base = statistics.median(off)
    print(
        f"fresh process, finish imports, HERMES_EVENTS=0     {base:7.1f} ms  (baseline, median "
        f"of {APPEND_RUNS}; record() inside it {statistics.median(inside[id(off)]):.2f} ms)"
    )
    for label, samples in (
        ("+ one append, ledger held open elsewhere", held),
        ("+ one append, the file's only connection", alone),
    ):
        cost = statistics.median(samples)
        print(
            f"  {label}  {cost:7.1f} ms  (+{cost - base:.1f} ms wall; record() inside the "
            f"process {statistics.median(inside[id(samples)]):.2f} ms)"
        )
    print(
        "  (held open: the usual case, a live gateway keeps its connection; the only "
        "connection's exit also checkpoints the WAL)"
    )
    warm_root = scratch / "warm-home"
    warm_root.mkdir()
    from hermes_container.events.append import record

    record(warm_root, "gateway.ready", profile="target", actor="bench")  # opened once
    warm = []
    for _ in range(2000):
        started = time.perf_counter()
        record(warm_root, "gateway.ready", profile="target", actor="bench", pid=1, port=2)
        warm.append((time.perf_counter() - started) * 1e6)
    print(
        f"warm process, one record()                          {statistics.median(warm):7.0f} µs  "
        f"(median of 2000; p99 {sorted(warm)[int(len(warm) * 0.99)]:.0f} µs)"
    )


# -- 2. crash -> ready, ledger on vs off ----------------------------------------------------


class Tree:
    """One s6-svscan tree: `target`, the gateway killed, and `sibling`, a gateway that
    keeps running (a container hosts several; it also holds the ledger open, as any
    live gateway does, so a finish script does not close the file's last connection)."""

    PROFILES = ("target", "sibling")

    def __init__(self, base: Path, env: dict[str, str], label: str) -> None:
        self.label = label
        self.home = HermesHome(base / "home")
        self.scandir = base / "service"
        self.env = {
            **env,
            "HERMES_HOME": str(self.home.root),
            "HERMES_S6_SCANDIR": str(self.scandir),
            "HERMES_CRASH_LOOP_MAX": "1000",
            "HERMES_ALLOW_ROOT_GATEWAY": "1",
            "HERMES_GATEWAY_PORT_BASE": str(free_port()),
        }
        ensure_default_profile(self.home)
        write_desired(self.home.root, "stopped")
        for name in self.PROFILES:
            profile_dir = create_profile(self.home, name)
            config = profile_dir / "config.yaml"
            config.write_text(
                "\n".join(
                    f"  port: {free_port()}" if line.startswith("  port:") else line
                    for line in config.read_text().splitlines()
                )
                + "\n"
            )
            write_desired(profile_dir, "running")
        self.samples: list[float] = []  # kill -> ready, ms
        self.respawns: list[float] = []  # kill -> up again (finish script + respawn), ms
        self.pid = 0
        self.sibling_pid = 0

    def status(self, profile: str = "target") -> tuple[bool, int | None, float | None]:
        st = gateway_status(self.home, self.scandir, profile)
        return st.ready, st.pid, st.uptime_s

    def wait_ready(
        self, old_pid: int | None, profile: str = "target", timeout: float = 30.0
    ) -> tuple[int, float]:
        """(new pid, perf_counter when it was first seen up: finish + respawn done)."""
        deadline = time.monotonic() + timeout
        respawned = None
        while time.monotonic() < deadline:
            ready, pid, _ = self.status(profile)
            if pid is not None and pid != old_pid and respawned is None:
                respawned = time.perf_counter()
            if ready and pid is not None and pid != old_pid:
                return pid, respawned or time.perf_counter()
            time.sleep(0.01)
        raise SystemExit(f"{self.label}: {profile} not ready within {timeout:g}s")

    def crash_once(self) -> None:
        # s6-supervise delays the respawn of a process younger than a second
        while (self.status()[2] or 0.0) < 1.0:
            time.sleep(0.02)
        started = time.perf_counter()
        os.kill(self.pid, signal.SIGKILL)
        self.pid, respawned = self.wait_ready(self.pid)
        self.samples.append((time.perf_counter() - started) * 1000)
        self.respawns.append((respawned - started) * 1000)


def gateway_kinds(root: Path, profile: str | None = None) -> list[str]:
    """The gateway.* kinds in a tree's ledger: only its gateways and finish scripts write
    those (this process's profile setup records profile and desired events there too)."""
    if not (root / "events").exists():
        return []
    ledger = Ledger(root)
    try:
        return [e.kind for e in ledger.iterate(0, kind="gateway.", profile=profile)]
    finally:
        ledger.close()


def bench_crash(scratch: Path, env: dict[str, str]) -> bool:
    on = Tree(scratch / "crash-on", env, "ledger on")
    off = Tree(scratch / "crash-off", {**env, "HERMES_EVENTS": "0"}, "HERMES_EVENTS=0")
    trees = (on, off)
    try:
        with (
            running_svscan(on.scandir, on.env, stop_timeout=60),
            running_svscan(off.scandir, off.env, stop_timeout=60),
        ):
            for tree in trees:
                subprocess.run(
                    [HERMES, "reconcile"], env=tree.env, check=True, stdout=subprocess.DEVNULL
                )
            for tree in trees:
                tree.pid = tree.wait_ready(None)[0]
                tree.sibling_pid = tree.wait_ready(None, "sibling")[0]
            for tree in trees:  # one unmeasured round each: caches warm on both sides
                tree.crash_once()
                tree.samples.clear()
                tree.respawns.clear()
            for i in range(KILLS):
                for tree in trees if i % 2 == 0 else trees[::-1]:
                    tree.crash_once()
            # Settle: the last ready events come after s6's readiness (on purpose).
            time.sleep(0.5)
            kinds = {on.label: gateway_kinds(on.home.root, "target")}
            kinds[off.label] = gateway_kinds(off.home.root)  # any profile: must be none
            calm = all(tree.status("sibling")[1] == tree.sibling_pid for tree in trees)
    finally:
        kill_leftovers([on.home.root, off.home.root])
    kills = KILLS + 1
    counts = {k: kinds[on.label].count(k) for k in ("gateway.exited", "gateway.restarted")}
    # ready: every respawn's, and the first start's
    counts["gateway.ready"] = kinds[on.label].count("gateway.ready") - 1
    off_written = len(kinds[off.label])
    base, cost = statistics.median(off.samples), statistics.median(on.samples)
    # Kills alternate between the trees, so sample i of each side ran at about the same
    # moment: the median of the paired differences cancels the machine's drifting load
    # better than the difference of the medians. The target is judged on it.
    diffs = [a - b for a, b in zip(on.samples, off.samples, strict=True)]
    paired = statistics.median(diffs)
    low, _, high = statistics.quantiles(diffs, n=4)
    ratio = 1 + paired / base
    print(
        f"crash -> ready, HERMES_EVENTS=0   {base:7.1f} ms  (baseline, median of {KILLS}; "
        f"min {min(off.samples):.0f}, max {max(off.samples):.0f})"
    )
    print(
        f"crash -> ready, ledger on         {cost:7.1f} ms  (median of {KILLS}; "
        f"min {min(on.samples):.0f}, max {max(on.samples):.0f})"
    )
    print(
        f"  of which finish + respawn: {statistics.median(off.respawns):.1f} ms without the "
        f"ledger, {statistics.median(on.respawns):.1f} ms with it (medians)"
    )
    met = ratio <= CRASH_TARGET
    print(
        f"ledger cost, median paired difference  {paired:+7.1f} ms  {(ratio - 1) * 100:+.1f}%  "
        f"(difference of medians {(cost / base - 1) * 100:+.1f}%)  "
        f"[target <= +5%: {'met' if met else 'MISSED'}]"
    )
    print(
        f"  noise: the paired differences' middle half spans {low:+.0f} .. {high:+.0f} ms "
        f"({low / base * 100:+.0f}% .. {high / base * 100:+.0f}%)"
    )
    valid = all(n == kills for n in counts.values()) and not off_written and calm
    print(
        f"  recorded with the ledger on, per kill: {counts} for {kills} kills; the "
        f"HERMES_EVENTS=0 tree's gateways and finish scripts recorded {off_written} events; "
        f"siblings {'never restarted' if calm else 'RESTARTED'}"
        + ("" if valid else "  [comparison void]")
    )
    return met and valid


# -- 3. replay speed --------------------------------------------------------------------------


def build_ledger(root: Path, total: int) -> tuple[float, float]:
    """`total` gateway events over REPLAY_PROFILES profiles, a minute apart per profile
    cycle; (seconds to write, time of the last event)."""
    ledger = Ledger(root, limit_bytes=1 << 40)  # no rotation: every event is replayed
    profiles = [f"p{i:02d}" for i in range(REPLAY_PROFILES)]
    at = 1_800_000_000.0
    batch: list[Pending] = []
    written = 0
    started = time.perf_counter()

    def event(kind: str, profile: str, actor: str, **data: object) -> None:
        nonlocal at
        at += 0.01
        batch.append(Pending(at, kind, profile, actor, dict(data)))

    for name in profiles:
        event("slot.registered", name, "boot")
        event("desired.changed", name, "cli", **{"from": None, "to": "running"})
    cycle = 0
    while written + len(batch) < total:
        name = profiles[cycle % REPLAY_PROFILES]
        pid = 1000 + cycle
        event("gateway.starting", name, "gateway", pid=pid, port=9000 + cycle % 50)
        event("gateway.ready", name, "gateway", pid=pid, port=9000 + cycle % 50)
        if cycle % 7 == 6:
            event("gateway.stopped", name, "gateway", reason="stopped on request")
            event("gateway.exited", name, "supervisor", expected=True, code=0, how="exited 0")
        else:
            event(
                "gateway.exited",
                name,
                "supervisor",
                expected=False,
                code=137,
                signal=9,
                how="killed by SIGKILL",
            )
            event("gateway.restarted", name, "supervisor", restarts=cycle // 50 + 1)
        cycle += 1
        if len(batch) >= 50_000:
            written += ledger.write(batch)
            batch.clear()
    batch = batch[: total - written]
    written += ledger.write(batch)
    seconds = time.perf_counter() - started
    ledger.close()
    if written != total:
        raise SystemExit(f"wrote {written} events, expected {total}")
    return seconds, at


def bench_replay(scratch: Path) -> None:
    root = scratch / "replay-home"
    root.mkdir()
    write_s, last_at = build_ledger(root, REPLAY_EVENTS)
    size = (root / "events" / "ledger.db").stat().st_size
    print(
        f"ledger of {REPLAY_EVENTS:,} events written in batches: {write_s:.1f} s "
        f"({REPLAY_EVENTS / write_s:,.0f} events/s), {size / 1e6:.0f} MB"
    )
    with (root / "events" / "ledger.db").open("rb") as fh:  # into the page cache first:
        while fh.read(1 << 22):  # a cold first pass must not count against either side
            pass
    ledger = Ledger(root, limit_bytes=1 << 40)
    try:
        started = time.perf_counter()
        count = sum(1 for _ in ledger.iterate(0, until=last_at))
        read_s = time.perf_counter() - started
        started = time.perf_counter()
        states = project(ledger.iterate(0, until=last_at), last_at)
        replay_s = time.perf_counter() - started
    finally:
        ledger.close()
    if (
        count != REPLAY_EVENTS
        or len(states) != REPLAY_PROFILES
        or not all(s.registered and s.desired_state == "running" for s in states.values())
    ):
        raise SystemExit(f"replay read {count} events, {len(states)} profiles")
    print(
        f"read them all (iterate until=at)   {read_s:6.2f} s  {REPLAY_EVENTS / read_s:>10,.0f} "
        "events/s  (baseline)"
    )
    print(
        f"replay: project(iterate, at)       {replay_s:6.2f} s  {REPLAY_EVENTS / replay_s:>10,.0f} "
        f"events/s  (what `gateway status --all --at` pays for {REPLAY_EVENTS:,} events)"
    )


def main() -> int:
    if shutil.which("s6-svscan") is None:
        print("s6-svscan not found: install s6 to run this benchmark")
        return 1
    scratch = Path(tempfile.mkdtemp(prefix="bench-events-"))
    try:
        env = base_env(scratch)
        print("== one append from a fresh process")
        bench_append(scratch, env)
        print("== crash -> ready under s6, ledger on vs off (kills alternate)")
        crash_met = bench_crash(scratch, env)
        print("== replay speed")
        bench_replay(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if crash_met else 1


if __name__ == "__main__":
    raise SystemExit(main())
