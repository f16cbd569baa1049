"""Whether a claim's holder still lives, told by a lock it holds for its lifetime.

Every dispatcher process (the daemon, a foreground `kanban dispatch`) holds an flock on
`$HERMES_HOME/kanban/holders/<host>-<pid>.lock` until it exits; the kernel releases it
however the process ends. Another dispatcher on the same home that can take that lock
knows the holder is gone, even across a container restart (a new pid namespace, so
the pid alone says nothing) or from a second container on the same volume. A holder
whose lock file is not in this home (another host of a shared PostgreSQL board) is
judged by the pid (same pid namespace) or by its claim's expiry, as before.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from pathlib import Path

from hermes_container.kanban.model import Holder

HOLDERS_DIR = "holders"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def lock_path(directory: Path, holder: Holder) -> Path:
    return directory / f"{_UNSAFE.sub('_', holder.host)}-{holder.pid}.lock"


class LifeLock:
    """Our own lock: taken at start, held until the process ends (or `release`)."""

    def __init__(self, directory: Path, holder: Holder) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = lock_path(directory, holder)
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Held already: by this very process (a second dispatcher object in it),
            # since a pid is one process at a time in its namespace. Nothing to add.
            os.close(self._fd)
            self._fd = None

    def release(self) -> None:
        if self._fd is not None:  # only the process that took the lock removes it
            with contextlib.suppress(OSError):
                self.path.unlink()
            os.close(self._fd)
            self._fd = None


def _remove_if_free(path: Path) -> bool | None:
    """Take `path`'s lock if nobody holds it and remove the file: True. False: it is
    held. None: there is no such lock file (or it cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        with contextlib.suppress(OSError):
            path.unlink()
        return True
    finally:
        os.close(fd)


def gone(directory: Path, holder: Holder) -> bool | None:
    """True: the holder's lock is free (it is gone; its stale file is removed).
    False: someone holds it. None: no lock file here, so this home cannot tell."""
    return _remove_if_free(lock_path(directory, holder))


def sweep(directory: Path) -> int:
    """Remove lock files nobody holds (dispatchers killed before they could); how many."""
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    return sum(1 for name in names if name.endswith(".lock") and _remove_if_free(directory / name))
