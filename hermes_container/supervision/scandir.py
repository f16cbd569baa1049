"""The scandir: where it is, and whether an s6-svscan is live on it."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
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


def open_control(fifo: Path) -> int | None:
    """A write end of an s6 control FIFO, or None when nobody reads it.

    What s6-svc and s6-svscanctl do (s6_svc_write): open the FIFO for writing without
    blocking; ENXIO means no s6-supervise / s6-svscan listens, and a missing FIFO means
    none ever did. Other errors (EACCES) propagate. Unlike s6-svc, a symlink in the
    FIFO's place is not followed and anything but a FIFO is refused (EINVAL): the
    scandir is writable by the user the gateways run as.
    """
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENXIO, errno.ENOENT, errno.ENOTDIR):
            return None
        raise
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a FIFO", str(fifo))
    return fd


def has_reader(fifo: Path) -> bool:
    """Whether an s6 process listens on the control FIFO `fifo` (no exec, unlike s6-svok)."""
    fd = open_control(fifo)
    if fd is None:
        return False
    os.close(fd)
    return True


def svscan_alive(scandir: Path) -> bool:
    """True when an s6-svscan reads the scandir's control FIFO.

    If we may not open it (a root svscan whose control was not shared with us) we
    cannot tell, and assume it is live.
    """
    try:
        return has_reader(control_fifo(scandir))
    except OSError as exc:
        return exc.errno == errno.EACCES


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
