"""CLI latency: `hermes --help`, `profile list`, `gateway status` vs bare `python3 -c pass`.

Each command runs N times in a fresh process; the median wall time is printed with
its ratio to the bare interpreter measured in the same run. Target: status <= 80 ms
and <= 4x bare python.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = int(os.environ.get("BENCH_RUNS", "15"))
HERMES = str(Path(sys.executable).parent / "hermes")


def median_ms(argv: list[str], env: dict[str, str]) -> float:
    samples = []
    for _ in range(RUNS):
        started = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> int:
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "HERMES_HOME": home}
        for i in range(5):
            subprocess.run(
                [HERMES, "profile", "create", f"p{i}"],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
        baseline = median_ms([sys.executable, "-c", "pass"], env)
        print(f"python3 -c pass            {baseline:7.1f} ms  (baseline)")
        cases = {
            "hermes --help": [HERMES, "--help"],
            "hermes profile list": [HERMES, "profile", "list"],
            "hermes gateway status": [HERMES, "gateway", "status"],
        }
        ok = True
        for label, argv in cases.items():
            value = median_ms(argv, env)
            ratio = value / baseline
            line = f"{label:<26} {value:7.1f} ms  {ratio:4.1f}x bare python"
            if label == "hermes gateway status":
                met = value <= 80 and ratio <= 4
                ok = ok and met
                line += f"  [target <= 80 ms, <= 4x: {'met' if met else 'MISSED'}]"
            print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
