"""Waking whoever waits for the board to change, instead of having them poll it.

A dispatcher must pick up a new task within a second, yet cost nothing while the board
is idle. So every committed write that records events announces the boards it touched:

- SQLite: each waiting process binds a datagram socket in `kanban/wake/` (the board's
  0700 directory, so only the home's owner can send to it); a writer sends one datagram
  to every socket there after its COMMIT. A socket nobody reads any more (its process was
  killed) refuses the datagram and the writer removes it.
- PostgreSQL: the write's transaction calls pg_notify (events.NOTIFY_CHANNEL), which the
  server delivers at COMMIT to every connection that LISTENs, on any host.

A listener is a file descriptor to select() on beside others (the daemon adds its
signal wake-up pipe), plus `drain()` to read what arrived. Announcements are hints: a
lost one costs at most one dispatch interval, never a task.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

WAKE_DIR = "wake"
_SUFFIX = ".sock"
_MAX_DATAGRAM = 4096


class Listener(Protocol):
    def fileno(self) -> int: ...

    def drain(self) -> set[str]:
        """The boards announced since the last drain (empty if none); never blocks."""
        ...

    def close(self) -> None: ...


def wait(listener: Listener, timeout: float | None, *extra_fds: int) -> set[str]:
    """Block until the board changes, one of `extra_fds` is readable, or `timeout`
    seconds pass; the boards announced meanwhile."""
    fds = [listener.fileno(), *extra_fds]
    try:
        ready, _, _ = select.select(fds, [], [], None if timeout is None else max(0.0, timeout))
    except InterruptedError:  # pragma: no cover - Python retries select itself (PEP 475)
        ready = []
    return listener.drain() if listener.fileno() in ready else set()


# sun_path holds 108 bytes; a deep HERMES_HOME can be longer than that.
_MAX_SOCKET_PATH = 100
# A directory listing is reused only while the directory's mtime is older than this:
# a coarse mtime could otherwise hide a listener that arrived within the same tick.
_STABLE_NS = 1_000_000_000


class _ShortPaths:
    """Socket addresses in `directory` that fit sun_path: the real path when short
    enough, else `/proc/self/fd/<n>/<name>` through a descriptor of the directory
    (Linux resolves it like any path; the descriptor stays open while we need it)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fd: int | None = None

    def address(self, name: str) -> str:
        path = str(self.directory / name)
        if len(path.encode()) <= _MAX_SOCKET_PATH:
            return path
        if self._fd is None:
            self._fd = os.open(self.directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        return f"/proc/self/fd/{self._fd}/{name}"

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class SocketNotifier:
    """The SQLite writer's side: one unbound, non-blocking datagram socket."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._path = os.fspath(directory)  # checked on every commit: no Path conversion
        self._paths = _ShortPaths(directory)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._listing: tuple[int, list[str]] | None = None  # (mtime_ns, socket names)

    def _listeners(self) -> list[str]:
        """The socket names in the directory; one stat() per write when nothing
        changed (a listdir per commit costs a tenth of a small transaction)."""
        if self._listing is None and not os.access(self._path, os.F_OK):
            # Nobody has listened yet (the directory is made before the first socket
            # is bound): access() says so without the exception a failing stat()
            # raises, which cost a store without a dispatcher 5% of a small write.
            return []
        st = os.stat(self._path)
        cached = self._listing
        stable = time.time_ns() - st.st_mtime_ns > _STABLE_NS
        if cached is not None and cached[0] == st.st_mtime_ns and stable:
            return cached[1]
        names = [n for n in os.listdir(self.directory) if n.endswith(_SUFFIX)]
        self._listing = (st.st_mtime_ns, names)
        return names

    def announce(self, boards: Iterable[str]) -> None:
        try:
            names = self._listeners()
        except OSError:
            return  # nobody ever listened here
        if not names:
            return
        payload = "\n".join(sorted(boards)).encode()[:_MAX_DATAGRAM]
        for name in names:
            try:
                self._sock.sendto(payload, self._paths.address(name))
            except ConnectionRefusedError:
                # Bound by a process that is gone: nobody will ever read it.
                with contextlib.suppress(OSError):
                    (self.directory / name).unlink()
            except OSError:
                # EAGAIN: its queue is full, so a wake-up is pending there already;
                # ENOENT: it went away between listdir and sendto. Hints either way.
                pass

    def close(self) -> None:
        self._sock.close()
        self._paths.close()


class SocketListener:
    """The SQLite waiter's side: a datagram socket bound in the wake directory."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(mode=0o700, exist_ok=True)
        name = f"{os.getpid()}-{secrets.token_hex(4)}{_SUFFIX}"
        self.path = directory / name
        self._paths = _ShortPaths(directory)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        try:
            self._sock.bind(self._paths.address(name))
        finally:
            self._paths.close()  # bound: the address is no longer needed

    def fileno(self) -> int:
        return self._sock.fileno()

    def drain(self) -> set[str]:
        boards: set[str] = set()
        while True:
            try:
                data = self._sock.recv(_MAX_DATAGRAM)
            except BlockingIOError:
                return boards
            boards.update(b for b in data.decode("utf-8", "replace").split("\n") if b)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
        self._sock.close()


class PostgresListener:
    """A LISTENing connection of its own (the store's connection runs transactions)."""

    def __init__(self, url: str) -> None:
        import psycopg

        from hermes_container.kanban.events import NOTIFY_CHANNEL
        from hermes_container.kanban.postgres_store import CONNECT_TIMEOUT_SECONDS

        self._conn: Any = psycopg.connect(
            url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
        )
        self._conn.execute(f"LISTEN {NOTIFY_CHANNEL}")

    def fileno(self) -> int:
        return int(self._conn.fileno())

    def drain(self) -> set[str]:
        # libpq's own calls: read what the socket holds, then take the parsed
        # notifications, without waiting for more.
        pgconn = self._conn.pgconn
        pgconn.consume_input()
        boards: set[str] = set()
        while (notify := pgconn.notifies()) is not None:
            boards.add(notify.extra.decode("utf-8", "replace"))
        if pgconn.status != 0:  # CONNECTION_BAD: the server went away
            raise ConnectionError("the board database closed the LISTEN connection")
        return boards

    def close(self) -> None:
        self._conn.close()
