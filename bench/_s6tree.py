"""A real s6-svscan for the benchmarks' live trees (not a benchmark itself)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def running_svscan(
    scandir: Path, env: dict[str, str], *, stop_timeout: float = 60.0
) -> Iterator[subprocess.Popen[bytes]]:
    """s6-svscan on `scandir` for the block: on entry it reads its control fifo; on exit
    `s6-svscanctl -t` brings every slot down, bounded by `stop_timeout`, then a kill."""
    scandir.mkdir(parents=True, exist_ok=True)
    svscan = subprocess.Popen(
        ["s6-svscan", str(scandir)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,  # s6-log tees every gateway line to it
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    control = scandir / ".s6-svscan" / "control"
    deadline = time.monotonic() + 10
    while True:
        try:
            os.close(os.open(control, os.O_WRONLY | os.O_NONBLOCK))
            break
        except OSError:
            if svscan.poll() is not None or time.monotonic() > deadline:
                svscan.kill()
                raise RuntimeError("s6-svscan did not come up") from None
            time.sleep(0.01)
    try:
        yield svscan
    finally:
        subprocess.run(["s6-svscanctl", "-t", str(scandir)], check=False)
        try:
            svscan.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            svscan.kill()
            svscan.wait(5)


def kill_leftovers(homes: list[Path]) -> None:
    """SIGKILL every process whose environment names one of `homes` as HERMES_HOME: what a
    benchmark's tree left behind (a gateway whose supervisor was killed, a finish script)."""
    markers = [f"HERMES_HOME={home}".encode() for home in homes]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            if any(marker in environ for marker in markers):
                os.kill(int(entry), signal.SIGKILL)
