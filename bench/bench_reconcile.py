"""Boot reconcile time for 1, 10 and 50 profiles against a real s6-svscan.

Each size gets a fresh home and scandir. Two figures per size:
- register: every profile desired `stopped` (slots registered, nothing started);
- start: every profile desired `running`, with the default HERMES_GATEWAY_STAGGER=0
  (reconcile issues the starts and returns; gateways become ready afterwards). A
  stagger of S seconds adds (N-1) x S by design.
Ratios are against `python3 -c pass` measured in the same run. Target: 50 profiles
<= 1.5 s in both cases; a least-squares line over the sizes shows the per-profile slope.
"""

from __future__ import annotations

import contextlib
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
from _s6tree import running_svscan

from hermes_container.home import HermesHome
from hermes_container.profiles import create_profile, ensure_default_profile
from hermes_container.state import write_desired

HERMES = str(Path(sys.executable).parent / "hermes")
SIZES = (1, 10, 50)
RUNS = int(os.environ.get("BENCH_RUNS", "3"))


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - started) * 1000


def make_home(base: Path, size: int, desired: str) -> dict[str, str]:
    home = base / "home"
    env = {
        **os.environ,
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


def one_run(size: int, desired: str) -> float:
    base = Path(tempfile.mkdtemp(prefix="bench-reconcile-"))
    env = make_home(base, size, desired)
    scandir = base / "service"
    scandir.mkdir()
    try:
        with running_svscan(scandir, env, stop_timeout=60):
            return timed([HERMES, "reconcile"], env)
    finally:
        for pid in gateway_processes(env["HERMES_HOME"]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


def main() -> int:
    if shutil.which("s6-svscan") is None:
        print("s6-svscan not found: install s6 to run this benchmark")
        return 1
    baseline = statistics.median(
        timed([sys.executable, "-c", "pass"], dict(os.environ)) for _ in range(9)
    )
    print(f"python3 -c pass                   {baseline:8.1f} ms  (baseline)")
    ok = True
    for desired, label in (("stopped", "register"), ("running", "start")):
        figures = {}
        for size in SIZES:
            value = statistics.median(one_run(size, desired) for _ in range(RUNS))
            figures[size] = value
            line = (
                f"reconcile {label:<8} {size:>3} profiles {value:8.1f} ms  "
                f"{value / baseline:5.1f}x bare python  ({value / size:6.1f} ms/profile)"
            )
            if size == 50:
                met = value <= 1500
                ok = ok and met
                line += f"  [target <= 1.5 s: {'met' if met else 'MISSED'}]"
            print(line)
        slope, intercept = statistics.linear_regression(list(figures), list(figures.values()))
        print(f"  {label}: fit {intercept:.0f} ms + {slope:.1f} ms per profile")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
