"""One gateway per profile: an exclusive flock on `gateway.lock`, plus `gateway.pid`.

The flock is the truth: the kernel drops it when its holder dies, so a lock that can
be taken means any pidfile left behind is stale and is simply overwritten. The
pidfile (checked against /proc/<pid>/cmdline, with /proc/locks as a fallback) only
names the holder for messages and for a takeover, and a takeover never signals a
process that is not a hermes gateway. The lock is held until the process exits,
after its socket is closed and `stopped` is recorded, so two gateways of one
profile never serve at the same moment.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import signal
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from hermes_container.errors import HermesError
from hermes_container.fsutil import atomic_write_text
from hermes_container.home import GATEWAY_LOCK, GATEWAY_PID

log = logging.getLogger("hermes.gateway")

POLL_S = 0.05
HOLDER_LOOKUP_S = 2.0  # a new holder writes its pidfile right after taking the lock
KILL_WAIT_S = 5.0


class Takeover(Enum):
    REFUSE = "refuse"  # a plain second `gateway run`
    REPLACE = "replace"  # `--replace`: the user asked to take over
    ADOPT = "adopt"  # `--supervised`: an orphan left by a killed s6-supervise is replaced


@dataclass
class GatewayLock:
    fd: int
    pid_path: Path

    def write_pid(self) -> None:
        atomic_write_text(self.pid_path, f"{os.getpid()}\n")

    def release(self) -> None:
        """Remove our pidfile, then drop the lock (the order keeps the pidfile honest)."""
        if read_pidfile(self.pid_path) == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                self.pid_path.unlink()
        os.close(self.fd)


def read_pidfile(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode("utf-8", "replace").split("\0")


def is_gateway_process(pid: int) -> bool:
    """True when `pid` is a live `hermes ... gateway run` (not a reused pid, not a zombie)."""
    args = _cmdline(pid)
    if not any("hermes" in arg for arg in args) or "gateway" not in args:
        return False
    rest = args[args.index("gateway") + 1 :]
    if "run" in rest:
        return True
    # A gateway forked by the gateway zygote (gateway/zygote.py) keeps the zygote's
    # command line; the zygote itself never takes a lock, so only its children count.
    return "zygote" in rest and _cmdline(parent_pid(pid) or 0) == args


def parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 4, after the parenthesised command name (which may contain spaces).
    fields = stat.rsplit(")", 1)[-1].split()
    return int(fields[1]) if len(fields) > 1 else None


def _try_lock(path: Path) -> int | None:
    """Take the flock without blocking; None while someone else holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        # Someone may have unlinked the file we locked (a cleanup at boot): then the
        # lock guards nothing, so lock whatever is at the path now.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _holder_from_proc_locks(path: Path) -> int | None:
    try:
        st = os.stat(path)
        text = Path("/proc/locks").read_text()
    except OSError:
        return None
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in text.splitlines():
        parts = line.split()
        if len(parts) > 5 and parts[1] == "FLOCK" and parts[5] == dev and parts[4].isdigit():
            return int(parts[4])
    return None


def find_holder(lock_path: Path, pid_path: Path) -> int | None:
    """The pid of the gateway holding the lock, if it can be identified as one."""
    # /proc/locks first: it names the real holder even before its pidfile is written.
    for candidate in (_holder_from_proc_locks(lock_path), read_pidfile(pid_path)):
        if candidate and candidate != os.getpid() and is_gateway_process(candidate):
            return candidate
    return None


def _supervised_elsewhere(pid: int) -> bool:
    """True when `pid` is the live child of another s6-supervise: not an orphan."""
    parent = parent_pid(pid)
    if parent is None or parent in (1, os.getppid()):
        return False
    args = _cmdline(parent)
    return bool(args) and os.path.basename(args[0]) == "s6-supervise"


def _wait_for_lock(path: Path, seconds: float) -> int | None:
    deadline = time.monotonic() + seconds
    while True:
        fd = _try_lock(path)
        if fd is not None or time.monotonic() >= deadline:
            return fd
        time.sleep(POLL_S)


def _signal(pid: int, sig: signal.Signals) -> None:
    # Re-check right before signalling: never hit a pid reused by another program.
    if is_gateway_process(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _take_over(path: Path, pid: int, grace_s: float) -> int | None:
    _signal(pid, signal.SIGTERM)
    fd = _wait_for_lock(path, grace_s)
    if fd is None:
        log.warning("gateway pid %d did not stop within %.0fs; killing it", pid, grace_s)
        _signal(pid, signal.SIGKILL)
        fd = _wait_for_lock(path, KILL_WAIT_S)
    return fd


def _find_holder_patiently(lock_path: Path, pid_path: Path) -> tuple[int | None, int | None]:
    """(fd, None) if the lock came free meanwhile, else (None, holder pid or None)."""
    deadline = time.monotonic() + HOLDER_LOOKUP_S
    while True:
        holder = find_holder(lock_path, pid_path)
        if holder is not None or time.monotonic() >= deadline:
            return None, holder
        fd = _try_lock(lock_path)
        if fd is not None:
            return fd, None
        time.sleep(POLL_S)


def acquire(profile_dir: Path, profile: str, mode: Takeover, grace_s: float) -> GatewayLock:
    """Take the profile's gateway lock, or raise a one-line HermesError (exit 1)."""
    lock_path, pid_path = profile_dir / GATEWAY_LOCK, profile_dir / GATEWAY_PID
    try:
        fd = _try_lock(lock_path)
        holder = None
        if fd is None:
            fd, holder = _find_holder_patiently(lock_path, pid_path)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise HermesError(f"cannot open {lock_path}: {exc.strerror}") from None
        raise
    if fd is not None:
        stale = read_pidfile(pid_path)
        if stale is not None:
            log.info("reclaimed stale pidfile of profile %r (pid %d is gone)", profile, stale)
        return _locked(fd, pid_path)
    if holder is None:
        raise HermesError(
            f"{lock_path} is held by a process that is not a hermes gateway; not starting"
        )
    if mode is Takeover.REFUSE:
        raise HermesError(
            f"the gateway of profile {profile!r} is already running (pid {holder}); "
            "stop it first or use --replace"
        )
    if mode is Takeover.ADOPT and _supervised_elsewhere(holder):
        raise HermesError(
            f"the gateway of profile {profile!r} (pid {holder}) is supervised by another "
            "s6-supervise; not taking over"
        )
    verb = "replacing" if mode is Takeover.REPLACE else "adopting orphaned"
    log.warning("%s gateway of profile %r (pid %d): SIGTERM, then the lock", verb, profile, holder)
    fd = _take_over(lock_path, holder, grace_s)
    if fd is None:
        raise HermesError(f"the gateway of profile {profile!r} (pid {holder}) would not stop")
    log.warning("took over profile %r from pid %d", profile, holder)
    return _locked(fd, pid_path)


def _locked(fd: int, pid_path: Path) -> GatewayLock:
    lock = GatewayLock(fd=fd, pid_path=pid_path)
    lock.write_pid()
    return lock
