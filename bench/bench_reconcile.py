"""Boot reconcile time for 1, 10 and 50 profiles against a real s6-svscan.

Each size gets a fresh home and scandir. Two figures per size:
- register: every profile desired `stopped` (slots registered, nothing started);
- start: every profile desired `running`, with the default HERMES_GATEWAY_STAGGER=0
  (reconcile issues the starts and returns; gateways become ready afterwards). A
  stagger of S seconds adds (N-1) x S by design.

Every `hermes reconcile` run follows one `python3 -c pass` run (the baseline), so both
see the same machine load; figures are medians of BENCH_RUNS runs (default 3), with the
reconciler's own CPU time (user+sys, its exec'd tools included), which load barely moves.

Two configurations, measured in the same run, their runs interleaved (alternating which
goes first) so both see the same machine load:
- own: every gateway its slot's own process (HERMES_GATEWAY_ZYGOTE unset, as under
  `hermes supervise`);
- zygote, the image's default (Dockerfile: HERMES_GATEWAY_ZYGOTE=1): a `hermes gateway
  zygote` listens before the run's s6-svscan starts (as the image's `gateway-zygote`
  service is ready before `svscan-gateways`), every slot's process is a thin launcher and
  every gateway a child forked from the zygote. Its start-up is not part of the figure,
  as it is not part of the image's reconcile.

Targets (issue 21), judged on both configurations: register 50 profiles <= 500 ms, start
50 profiles <= 750 ms, and linear: the per-profile slope from 10 to 50 profiles at most
1.5x the slope from 1 to 10 (+2 ms of slack for the noise of a small difference).

Bytecode: the image precompiles its venv; a dev shell's PYTHONDONTWRITEBYTECODE=1 would
recompile edited modules in the reconciler and in every gateway on every run, so runs
get a temp PYTHONPYCACHEPREFIX warmed by one unmeasured run of each kind, as
bench_cli does (BENCH_NO_PYCACHE=1 measures without it).

Scandirs go on a tmpfs (/dev/shm) when there is one, as the image's does (s6-overlay's
/run); the homes, with their logs directories, on the scratch disk, as the image's volume.
The trees of all runs are deleted at the end, not after each run: on this machine's
ext4 (no journal) an inode deleted in the last minutes is skipped by a linear scan when
the next one is allocated (ext4 `recently_deleted`), so deleting run N's ~1,500 files
made run N+1's slot writes several times slower than a boot's, whose scandir is a
fresh tmpfs.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _ports import free_port
from _s6tree import running_svscan
from _zygote import start_zygote, stop_zygote

from hermes_container.home import HermesHome
from hermes_container.profiles import create_profile, ensure_default_profile
from hermes_container.state import write_desired

HERMES = str(Path(sys.executable).parent / "hermes")
BARE = [sys.executable, "-c", "pass"]
SIZES = (1, 10, 50)
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
TARGETS_MS = {"register": 500.0, "start": 750.0}  # at 50 profiles (issue 21)
SLOPE_RATIO = 1.5  # linear: slope(10->50) <= 1.5 x slope(1->10) + SLOPE_SLACK_MS
SLOPE_SLACK_MS = 2.0
CONFIGS = ("own", "zygote")


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall ms and CPU ms (user+sys of the process and the children it waited for)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = (time.perf_counter() - started) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
    return wall, cpu


def make_home(base: Path, size: int, desired: str, outer: dict[str, str]) -> dict[str, str]:
    home = base / "home"
    env = {
        **outer,
        "HERMES_HOME": str(home),
        "HERMES_S6_SCANDIR": str(base / "service"),
        "HERMES_GATEWAY_PORT_BASE": str(20000 + (free_port() % 20000)),
        "HERMES_GATEWAY_STAGGER": "0",
        "HERMES_ALLOW_ROOT_GATEWAY": "1",
    }
    os.environ["HERMES_GATEWAY_PORT_BASE"] = env["HERMES_GATEWAY_PORT_BASE"]
    hermes_home = HermesHome(home)
    ensure_default_profile(hermes_home)
    write_desired(home, desired)
    for i in range(size - 1):
        write_desired(create_profile(hermes_home, f"p{i:02d}"), desired)
    return env


def gateway_processes(home: str) -> list[int]:
    marker = f"HERMES_HOME={home}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if marker in Path(f"/proc/{entry}/environ").read_bytes():
                    pids.append(int(entry))
    return pids


def wait_ready(slot: Path, timeout: float = 60.0) -> None:
    """Until the slot's gateway notified readiness (the warm-up's gateway has then
    imported, and so compiled, everything it runs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["s6-svstat", "-o", "ready", str(slot)], capture_output=True)
        if out.stdout.strip() == b"true":
            return
        time.sleep(0.1)
    raise RuntimeError(f"warm-up gateway in {slot} not ready within {timeout:g}s")


def scandir_parent(scratch: Path) -> Path:
    """Where the runs' scandirs go: a tmpfs when the machine has one (/dev/shm), as the
    image's scandir is (/run/hermes/service, on s6-overlay's tmpfs /run); the homes stay
    on the scratch disk, as the image's volume does."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return Path(tempfile.mkdtemp(prefix="bench-reconcile-svc-", dir=shm))
    return scratch


def one_run(
    scratch: Path,
    size: int,
    desired: str,
    outer: dict[str, str],
    *,
    warm_up: bool = False,
    scandirs: Path | None = None,
    config: str = "own",
) -> tuple[float, float, float]:
    """(reconcile wall ms, reconcile CPU ms, bare python wall ms) in a fresh tree; with
    config "zygote", a gateway zygote listening before its s6-svscan starts."""
    base = Path(tempfile.mkdtemp(prefix="run-", dir=scratch))
    env = make_home(base, size, desired, outer)
    scandir = Path(tempfile.mkdtemp(prefix="run-", dir=scandirs or scratch)) / "service"
    env["HERMES_S6_SCANDIR"] = str(scandir)
    scandir.mkdir()
    env.pop("HERMES_GATEWAY_ZYGOTE", None)
    zygote = start_zygote(base, env) if config == "zygote" else None  # sets the variable
    try:
        with running_svscan(scandir, env, stop_timeout=60):
            bare, _ = timed(BARE, env)
            wall, cpu = timed([HERMES, "reconcile"], env)
            if warm_up and desired == "running":
                wait_ready(scandir / "gateway-default")
            return wall, cpu, bare
    finally:
        if zygote is not None:  # after the slots stopped, as in the image
            stop_zygote(zygote)
        for pid in gateway_processes(env["HERMES_HOME"]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def slopes(figures: dict[int, float]) -> tuple[float, float]:
    """Per-profile slopes from 1 to 10 and from 10 to 50 profiles."""
    return (figures[10] - figures[1]) / 9, (figures[50] - figures[10]) / 40


def measure(label: str, desired: str, scratch: Path, outer: dict[str, str], scandirs: Path) -> bool:
    walls: dict[str, dict[int, float]] = {config: {} for config in CONFIGS}
    ok = True
    for size in SIZES:
        runs: dict[str, list[tuple[float, float, float]]] = {config: [] for config in CONFIGS}
        for i in range(RUNS):
            for config in CONFIGS if i % 2 == 0 else CONFIGS[::-1]:
                runs[config].append(
                    one_run(scratch, size, desired, outer, scandirs=scandirs, config=config)
                )
        for config in CONFIGS:
            wall = statistics.median(r[0] for r in runs[config])
            cpu = statistics.median(r[1] for r in runs[config])
            bare = statistics.median(r[2] for r in runs[config])
            walls[config][size] = wall
            line = (
                f"reconcile {label:<8} {config:<6} {size:>3} profiles {wall:8.1f} ms  "
                f"{wall / bare:5.1f}x bare python ({bare:.1f} ms)  cpu {cpu:6.1f} ms  "
                f"({wall / size:5.1f} ms/profile)"
            )
            if size == 50:
                target = TARGETS_MS[label]
                met = wall <= target
                ok = ok and met
                line += f"  [target <= {target:.0f} ms: {'met' if met else 'MISSED'}]"
            print(line, flush=True)
    for config in CONFIGS:
        figures = walls[config]
        small, large = slopes(figures)
        limit = SLOPE_RATIO * max(small, 0.0) + SLOPE_SLACK_MS
        linear = large <= limit
        ok = ok and linear
        fit_slope, fit_intercept = statistics.linear_regression(
            list(figures), list(figures.values())
        )
        print(
            f"  {label} {config}: slope 1->10 {small:.1f} ms/profile, 10->50 {large:.1f} "
            f"ms/profile; fit {fit_intercept:.0f} ms + {fit_slope:.1f} ms/profile  "
            f"[target linear, 10->50 <= {SLOPE_RATIO:g}x 1->10 + {SLOPE_SLACK_MS:g} ms "
            f"= {limit:.1f}: {'met' if linear else 'MISSED'}]",
            flush=True,
        )
    return ok


def main() -> int:
    if shutil.which("s6-svscan") is None:
        print("s6-svscan not found: install s6 to run this benchmark")
        return 1
    scratch = Path(tempfile.mkdtemp(prefix="bench-reconcile-"))
    scandirs = scandir_parent(scratch)
    outer = dict(os.environ)
    try:
        if os.environ.get("BENCH_NO_PYCACHE") != "1":
            outer.pop("PYTHONDONTWRITEBYTECODE", None)
            outer["PYTHONPYCACHEPREFIX"] = str(scratch / "pycache")
            # Compiles the reconciler, a gateway, the zygote and the launcher.
            for desired, config in (("stopped", "own"), ("running", "own"), ("running", "zygote")):
                one_run(scratch, 1, desired, outer, warm_up=True, scandirs=scandirs, config=config)
        print(
            "bytecode: "
            + ("cached in a temp PYTHONPYCACHEPREFIX" if "PYTHONPYCACHEPREFIX" in outer else "none")
        )
        print(f"each figure: median of {RUNS} runs, each after one `python3 -c pass` run")
        print(
            "own: gateways in their own processes; zygote: forked from a gateway zygote "
            "(the image's default)"
        )
        print(f"scandirs in {scandirs.parent} (the image's is on tmpfs), homes in {scratch.parent}")
        ok = True
        for desired, label in (("stopped", "register"), ("running", "start")):
            ok = measure(label, desired, scratch, outer, scandirs) and ok
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(scandirs, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
