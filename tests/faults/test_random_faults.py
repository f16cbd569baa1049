"""200 seeded random faults over a 10-profile tree of real s6 and real gateways.

Fault kinds: kill -9 of a gateway, kill -9 of its s6-supervise, kill -9 of the whole
tree followed by a fresh s6-svscan + `hermes reconcile` (a simulated `docker restart`),
and CLI `gateway start/stop`. A step applies 2-8 faults to distinct profiles at once
(CLI calls run concurrently), then polls until the tree has converged:

- every profile's desired state is exactly what the user (the CLI) last asked for;
- desired-running gateways are up and ready, and s6, gateway_state.json and gateway.pid
  agree on one pid; desired-stopped ones are down with no process and no pidfile;
- every gateway_state.json parses (also checked by a sampler thread between steps);
- no orphan: every gateway process is the child of its own slot's s6-supervise;
- never two gateways serving one profile (a sampler thread watches listening sockets).

The seed is printed; rerun a failure with HERMES_FAULT_SEED=<seed>.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hermes_container.supervision.svstat import SvStat, svstat
from tests.faults.conftest import GatewayProc, gateway_processes, supervisor_dirs
from tests.s6.conftest import GATEWAY_UID, Tree

TOTAL_FAULTS = 200
FULL_RESTARTS = 4  # the expensive kind: every gateway of the tree comes back
PROFILES = ("default", *(f"f{i}" for i in range(1, 10)))
CONVERGE_S = 45.0  # generous bound for one step to settle (liveness, not timing)
CLI_TIMEOUT_S = 60.0
POLL_S = 0.1


@dataclass
class Run:
    seed: int
    tree: Tree
    desired: dict[str, str]
    counts: Counter[str] = field(default_factory=Counter)
    log: list[str] = field(default_factory=list)
    restarts: int = 0

    def context(self) -> str:
        return f"seed={self.seed} (HERMES_FAULT_SEED to replay); last steps:\n  " + "\n  ".join(
            self.log[-6:]
        )


class Sampler(threading.Thread):
    """Between checkpoints: no two serving gateways per profile, every state file parses."""

    def __init__(self, tree: Tree) -> None:
        super().__init__(daemon=True)
        self.tree = tree
        self.stop_event = threading.Event()
        self.violations: list[str] = []
        self.samples = 0

    def run(self) -> None:
        while not self.stop_event.wait(0.2):
            serving: dict[str, list[int]] = {}
            for proc in gateway_processes(self.tree.home.root, with_sockets=True):
                if proc.listens:
                    serving.setdefault(proc.profile, []).append(proc.pid)
            for profile, pids in serving.items():
                if len(pids) > 1:
                    self.violations.append(f"two gateways serve {profile}: {pids}")
            for profile in PROFILES:
                problem = _state_file_problem(self.tree, profile)
                if problem:
                    self.violations.append(problem)
            self.samples += 1


def _state_file_problem(tree: Tree, profile: str) -> str | None:
    path = tree.home.profile_dir(profile) / "gateway_state.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"{profile}: gateway_state.json is missing"
    except (OSError, ValueError) as exc:
        return f"{profile}: gateway_state.json does not parse: {exc}"
    if not isinstance(data, dict):
        return f"{profile}: gateway_state.json is not an object"
    return None


def _read_json(path: Path) -> dict[str, object]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _pidfile(tree: Tree, profile: str) -> int | None:
    try:
        return int((tree.home.profile_dir(profile) / "gateway.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def problems(run: Run) -> list[str]:
    """Everything that differs from the converged, desired tree (empty when all is well)."""
    tree = run.tree
    found: list[str] = []
    procs = gateway_processes(tree.home.root)
    supervisors = supervisor_dirs(tree.base)
    by_profile: dict[str, list[GatewayProc]] = {}
    for proc in procs:
        by_profile.setdefault(proc.profile, []).append(proc)
        slot = str(tree.slot(proc.profile))
        if supervisors.get(proc.ppid) != slot:
            found.append(
                f"orphan: gateway {proc.profile} pid {proc.pid} has parent {proc.ppid}, "
                f"not the s6-supervise of {slot}"
            )
    for profile in PROFILES:
        problem = _state_file_problem(tree, profile)
        if problem:
            found.append(problem)
            continue
        state = _read_json(tree.home.profile_dir(profile) / "gateway_state.json")
        want = run.desired[profile]
        if state.get("desired_state") != want:
            found.append(f"{profile}: desired_state {state.get('desired_state')!r} != {want!r}")
        try:
            st: SvStat | None = svstat(str(tree.slot(profile)))
        except Exception as exc:  # not supervised (yet)
            found.append(f"{profile}: s6-svstat failed: {exc}")
            st = None
        pids = sorted(p.pid for p in by_profile.get(profile, []))
        pidfile = _pidfile(tree, profile)
        if want == "running":
            if st is None or not (st.up and st.ready):
                found.append(f"{profile}: desired running but not up+ready ({st})")
                continue
            if pids != [st.pid]:
                found.append(f"{profile}: gateway processes {pids}, s6 runs {st.pid}")
            if state.get("gateway_state") != "running" or state.get("pid") != st.pid:
                found.append(
                    f"{profile}: state file says {state.get('gateway_state')} pid "
                    f"{state.get('pid')}, s6 runs {st.pid}"
                )
            if pidfile != st.pid:
                found.append(f"{profile}: gateway.pid says {pidfile}, s6 runs {st.pid}")
        else:
            if st is not None and st.up:
                found.append(f"{profile}: desired stopped but up (pid {st.pid})")
            if pids:
                found.append(f"{profile}: desired stopped but gateway processes {pids}")
            if state.get("gateway_state") not in (None, "stopped"):
                found.append(f"{profile}: desired stopped, state {state.get('gateway_state')}")
            if pidfile is not None:
                found.append(f"{profile}: desired stopped but gateway.pid names {pidfile}")
    return found


def converge(run: Run, what: str) -> float:
    """Poll until `problems` is empty; fail with the last problems after CONVERGE_S."""
    started = time.monotonic()
    deadline = started + CONVERGE_S
    while True:
        found = problems(run)
        if not found:
            return time.monotonic() - started
        if time.monotonic() > deadline:
            listing = "\n    ".join(found)
            pytest.fail(
                f"not converged {CONVERGE_S:g}s after {what}:\n    {listing}\n{run.context()}"
            )
        time.sleep(POLL_S)


def _cli(tree: Tree, *args: str) -> subprocess.Popen[str]:
    kwargs: dict[str, object] = {}
    if tree.drop:
        kwargs = {"user": GATEWAY_UID, "group": GATEWAY_UID, "extra_groups": []}
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "hermes_container", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=tree.env,
        cwd=tree.base,
        **kwargs,
    )


def _supervise_pid(tree: Tree, profile: str) -> int:
    slot = str(tree.slot(profile))
    for pid, cwd in supervisor_dirs(tree.base).items():
        if cwd == slot:
            return pid
    raise AssertionError(f"no s6-supervise for {slot}")


def full_restart(run: Run) -> None:
    """docker restart after a crash: SIGKILL everything, fresh svscan, root reconcile."""
    tree = run.tree
    tree.kill_everything()
    run.restarts += 1
    tree.start_svscan(tree.base / f"service-{run.restarts}")
    out = tree.ok("reconcile", as_root=True, timeout=CLI_TIMEOUT_S)
    lines = tree.home.boot_log.read_text().splitlines()[-len(PROFILES) :]
    for profile in PROFILES:
        wanted = "started" if run.desired[profile] == "running" else "registered"
        assert any(f" profile={profile} " in ln and f"action={wanted}" in ln for ln in lines), (
            f"boot log lacks {profile} {wanted}:\n{out}\n{run.context()}"
        )


def apply_step(run: Run, rng: random.Random, size: int) -> None:
    """Up to `size` faults on distinct profiles, applied together."""
    tree = run.tree
    chosen = rng.sample(PROFILES, size)
    clis: list[tuple[str, str, subprocess.Popen[str]]] = []
    done = []
    for profile in chosen:
        running = run.desired[profile] == "running"
        if running:
            kind = rng.choices(["kill_gateway", "kill_supervise", "cli_stop"], [55, 20, 25])[0]
        else:
            kind = rng.choices(["cli_start", "kill_supervise"], [75, 25])[0]
        if kind == "kill_gateway":
            pid = svstat(str(tree.slot(profile))).pid
            assert pid is not None, f"{profile} should be up\n{run.context()}"
            os.kill(pid, signal.SIGKILL)
        elif kind == "kill_supervise":
            os.kill(_supervise_pid(tree, profile), signal.SIGKILL)
        else:
            action = "start" if kind == "cli_start" else "stop"
            run.desired[profile] = "running" if action == "start" else "stopped"
            clis.append((profile, action, _cli(tree, "-p", profile, "gateway", action)))
        run.counts[kind] += 1
        done.append(f"{kind}:{profile}")
    run.log.append(" ".join(done))
    for profile, action, proc in clis:
        try:
            out, err = proc.communicate(timeout=CLI_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        assert proc.returncode == 0, (
            f"hermes -p {profile} gateway {action} -> {proc.returncode}\n{out}{err}\n"
            f"{run.context()}"
        )


def _setup(tree: Tree, rng: random.Random) -> dict[str, str]:
    for profile in PROFILES[1:]:
        tree.create(profile)
    desired = {p: "running" if rng.random() < 0.7 else "stopped" for p in PROFILES}
    for action, want in (("start", "running"), ("stop", "stopped")):
        names = [p for p in PROFILES if desired[p] == want]
        procs = [_cli(tree, "-p", p, "gateway", action) for p in names]
        for name, proc in zip(names, procs, strict=True):
            out, err = proc.communicate(timeout=CLI_TIMEOUT_S)
            assert proc.returncode == 0, f"initial {action} of {name}: {out}{err}"
    return desired


def _leftover_temp_files(tree: Tree) -> int:
    count = 0
    for profile in PROFILES:
        with contextlib.suppress(FileNotFoundError):
            count += sum(
                1
                for name in os.listdir(tree.home.profile_dir(profile))
                if name.startswith(".gateway_state.json.") and name.endswith(".tmp")
            )
    return count


@pytest.mark.s6
@pytest.mark.timeout(600)
def test_random_faults(fault_tree: Tree, capsys: pytest.CaptureFixture[str]) -> None:
    seed = int(os.environ.get("HERMES_FAULT_SEED") or random.SystemRandom().randrange(2**32))
    with capsys.disabled():
        print(f"\nrandom faults: seed={seed} (replay with HERMES_FAULT_SEED={seed})", flush=True)
    rng = random.Random(seed)
    started = time.monotonic()
    run = Run(seed=seed, tree=fault_tree, desired=_setup(fault_tree, rng))
    converge(run, "setup")

    # Spread the full restarts over the run, never as the very first fault.
    restart_at = set(rng.sample(range(10, TOTAL_FAULTS), FULL_RESTARTS))
    sampler = Sampler(fault_tree)
    sampler.start()
    faults = steps = 0
    settle: list[float] = []
    try:
        while faults < TOTAL_FAULTS:
            if faults in restart_at:
                run.counts["full_restart"] += 1
                run.log.append("full_restart")
                full_restart(run)
                size = 1
            else:
                # Stop short of the next full restart so it is its own step.
                size = min(rng.randint(2, 8), TOTAL_FAULTS - faults)
                for offset in range(1, size):
                    if faults + offset in restart_at:
                        size = offset
                        break
                apply_step(run, rng, size)
            faults += size
            steps += 1
            settle.append(converge(run, f"step {steps} ({run.log[-1]})"))
            assert not sampler.violations, f"{sampler.violations[:5]}\n{run.context()}"
    finally:
        sampler.stop_event.set()
        sampler.join(5)
    assert not sampler.violations, f"{sampler.violations[:5]}\n{run.context()}"

    # The CLI agrees with what the checks saw.
    statuses = json.loads(fault_tree.ok("gateway", "status", "--all", "--json"))
    for st in statuses:
        assert st["desired_state"] == run.desired[st["profile"]]
        assert (st["up"] and st["ready"]) == (run.desired[st["profile"]] == "running")

    elapsed = time.monotonic() - started
    settle.sort()
    summary = ", ".join(f"{kind}={n}" for kind, n in sorted(run.counts.items()))
    with capsys.disabled():
        print(
            f"random faults: seed={seed}: {faults} faults in {steps} steps over "
            f"{len(PROFILES)} profiles ({summary}); {elapsed:.0f}s total; settle median "
            f"{settle[len(settle) // 2]:.2f}s, max {settle[-1]:.2f}s; sampler checks "
            f"{sampler.samples}; final desired running "
            f"{sum(v == 'running' for v in run.desired.values())}/{len(PROFILES)}; "
            f"leftover state temp files {_leftover_temp_files(fault_tree)}",
            flush=True,
        )
    assert sum(run.counts.values()) == TOTAL_FAULTS
