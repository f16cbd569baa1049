"""The scandir: where it is, and whether an s6-svscan is live on it."""

from __future__ import annotations

import contextlib
import errno
import os
import time
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from hermes_container.home import HermesHome

GATEWAY_PREFIX = "gateway-"


def slot_name(profile: str) -> str:
    return GATEWAY_PREFIX + profile


def resolve_scandir(home: HermesHome, env: dict[str, str] | None = None) -> Path:
    """HERMES_S6_SCANDIR (the image: /run/hermes/service), else $HERMES_HOME/run/service."""
    environ = os.environ if env is None else env
    value = environ.get("HERMES_S6_SCANDIR", "").strip()
    if value:
        return Path(value).absolute()
    return home.run_dir / "service"


def control_fifo(scandir: Path) -> Path:
    return scandir / ".s6-svscan" / "control"


def svscan_alive(scandir: Path) -> bool:
    """True when an s6-svscan reads the scandir's control FIFO.

    Opening a FIFO for writing without blocking fails with ENXIO when nobody reads
    it: exactly the test s6-svscanctl makes. If we may not open it (a root svscan
    whose control was not shared with us) we cannot tell, and assume it is live.
    """
    try:
        fd = os.open(control_fifo(scandir), os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return exc.errno == errno.EACCES
    os.close(fd)
    return True


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll `predicate` until it holds or `timeout` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):
            if predicate():
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
