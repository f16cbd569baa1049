"""Run every bench/bench_*.py in turn, each bounded in time, then print one table.

Each benchmark prints its own figures (its output is streamed as it runs); the final
table lists every benchmark's exit status (0 = all its targets met, 1 = a target
missed, anything else = it broke), its wall time, and the lines it printed that name
a target, e.g. `... [target <= 45 MB: met]`.

    python bench/run_all.py [--timeout SECONDS] [NAME_FILTER ...]

BENCH_TIMEOUT (default 900 s) bounds each benchmark; on timeout its whole process
group is killed and it counts as failed. Exit status: 0 when every benchmark exited 0.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
GRACE_S = 20.0  # after a timeout: SIGTERM, this long to clean up, then SIGKILL
TARGET_LINE = re.compile(r"target", re.IGNORECASE)


@dataclass
class Outcome:
    name: str
    code: int | None  # None: killed after the timeout
    seconds: float
    targets: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if self.code is None:
            return "TIMEOUT"
        if self.code == 0:
            return "met"
        if self.code == 1:
            return "MISSED"
        return f"BROKE ({self.code})"


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the benchmark's process group (it cleans up what it started), then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(GRACE_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def run_one(path: Path, timeout: float) -> Outcome:
    print(f"== {path.relative_to(REPO)} (timeout {timeout:g}s)", flush=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
    }
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, str(path)],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: a timeout kills all it started
    )
    assert proc.stdout is not None
    targets: list[str] = []
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = started + timeout
    pending = b""
    timed_out = False
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        if not selector.select(min(remaining, 1.0)):
            if proc.poll() is not None:
                break
            continue
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            print(f"   {line}", flush=True)
            if TARGET_LINE.search(line):
                targets.append(line.strip())
    if pending:
        print(f"   {pending.decode('utf-8', 'replace')}", flush=True)
    selector.close()
    if timed_out:
        stop_group(proc)
    code = proc.wait()
    proc.stdout.close()
    seconds = time.monotonic() - started
    return Outcome(path.stem, None if timed_out else code, seconds, targets)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--timeout",
        type=float,
        default=float(os.environ.get("BENCH_TIMEOUT", "900")),
        help="seconds per benchmark (default: $BENCH_TIMEOUT or 900)",
    )
    parser.add_argument("only", nargs="*", help="run only benchmarks whose name contains this")
    args = parser.parse_args()
    if not args.timeout > 0:
        parser.error("--timeout must be positive")
    benches = sorted(BENCH_DIR.glob("bench_*.py"))
    if args.only:
        benches = [b for b in benches if any(word in b.stem for word in args.only)]
    if not benches:
        parser.error("no benchmark matches")
    outcomes = [run_one(path, args.timeout) for path in benches]

    print("\n== summary")
    width = max(len(o.name) for o in outcomes)
    print(f"{'benchmark':<{width}}  {'exit':>7}  {'time':>7}  result")
    for o in outcomes:
        code = "-" if o.code is None else str(o.code)
        print(f"{o.name:<{width}}  {code:>7}  {o.seconds:6.0f}s  {o.verdict}")
        for line in o.targets:
            print(f"{'':<{width}}    {line}")
    failed = [o.name for o in outcomes if o.code != 0]
    print(f"{len(outcomes) - len(failed)}/{len(outcomes)} benchmarks met every target", end="")
    print(f"; not met: {', '.join(failed)}" if failed else "")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
