"""The embedded board: one SQLite file in WAL mode.

WAL lets readers (the dashboard, `kanban list`) run beside the one writer. Every write is
BEGIN IMMEDIATE: the write lock is taken at BEGIN, so a transaction never reads, then
fails to upgrade to writing half-way (a deferred BEGIN can, and then SQLite returns BUSY
without waiting). busy_timeout makes SQLite wait for the lock itself; past that,
SqlStore._do runs the whole transaction again until its deadline, so "database is
locked" never reaches a caller.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from hermes_container.kanban.errors import StoreUnavailable
from hermes_container.kanban.schema import SQLITE
from hermes_container.kanban.sql_store import SqlStore
from hermes_container.kanban.tx import Tx
from hermes_container.kanban.wake import WAKE_DIR, SocketListener, SocketNotifier

BUSY_TIMEOUT_MS = 5000
PAGE_SIZE = 1024
WAL_AUTOCHECKPOINT_PAGES = 16384  # 16 MiB of 1 KiB pages
WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
_BUSY_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _is_busy(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _BUSY_CODES  # extended codes such as SQLITE_BUSY_SNAPSHOT
    text = str(exc)
    return "locked" in text or "busy" in text


def prepare_file(path: Path) -> None:
    """The board holds prompts and answers: 0700 directory, 0600 file, created so before
    SQLite opens it (its -wal and -shm files copy the database file's mode)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.parent.stat().st_uid == os.geteuid():
        os.chmod(path.parent, 0o700)
    # Create only a new file: closing a descriptor of an existing board file would drop
    # every POSIX lock this process's SQLite connections hold on it (close(2) releases a
    # process's locks on the file through any descriptor), and a second store opened in
    # a process that has one would let another process delete the live WAL.
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        os.close(fd)
    if path.stat().st_uid == os.geteuid():
        os.chmod(path, 0o600)


class _Transaction:
    """BEGIN (IMMEDIATE for a write) ... COMMIT under the store's lock, rolled back on
    any exception. A class rather than a @contextmanager generator: this runs around
    every operation, and the generator machinery cost a few microseconds each time.
    Each store keeps one for reads and one for writes: its state is set and used only
    while the lock is held."""

    __slots__ = ("_conn", "_cursor", "_lock", "_write")

    def __init__(self, lock: threading.Lock, conn: sqlite3.Connection, write: bool) -> None:
        self._lock = lock
        self._conn = conn
        self._write = write

    def __enter__(self) -> sqlite3.Cursor:
        self._lock.acquire()
        try:
            self._cursor = self._conn.cursor()
            self._cursor.execute("BEGIN IMMEDIATE" if self._write else "BEGIN")
        except BaseException:
            self._release()
            raise
        return self._cursor

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if exc_type is None:
            try:
                self._cursor.execute("COMMIT")
            except BaseException:
                self._release()
                raise
            self._cursor.close()
            self._lock.release()
        else:
            self._release()

    def _release(self) -> None:
        """After a failure: roll back whatever is open, close the cursor (which resets a
        statement left half-read), let the next operation in."""
        try:
            if self._conn.in_transaction:
                self._conn.rollback()
        finally:
            try:
                self._cursor.close()
            except AttributeError:  # BEGIN's cursor() itself failed
                pass
            finally:
                self._lock.release()


class SqliteStore(SqlStore):
    dialect = SQLITE

    def __init__(self, path: Path, *, clock: Callable[[], float] | None = None) -> None:
        # The backend's own time is this host's (SqlStore._server_now), read directly.
        super().__init__(clock=clock or time.time)
        self.path = path
        # One connection per store, shared by its threads under a lock: sqlite3 objects
        # may not be used by two threads at once. Stores in other threads or processes
        # have their own connections and meet at the file's locks.
        self._lock = threading.Lock()
        try:
            prepare_file(path)
            self._conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
            )
            self._setup()
        except (OSError, sqlite3.DatabaseError) as exc:
            raise StoreUnavailable(f"cannot open the board database {path}: {exc}") from exc
        self._reads = _Transaction(self._lock, self._conn, write=False)
        self._writes = _Transaction(self._lock, self._conn, write=True)
        self._notifier = SocketNotifier(path.parent / WAKE_DIR)
        try:
            self._init_schema()
            self._conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            self.close()
            raise

    @property
    def identity(self) -> str:
        return "sqlite"  # the one board file of this home

    def checkpoint(self) -> None:
        """Copy the WAL into the database file now, without waiting for anyone (PASSIVE):
        the dispatcher calls it while idle, so commits seldom pay for a checkpoint."""
        with self._lock:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise

    def _changed(self, boards: set[str]) -> None:
        self._notifier.announce(boards)

    def listen(self) -> SocketListener:
        return SocketListener(self.path.parent / WAKE_DIR)

    def _setup(self) -> None:
        """Connection settings, outside any transaction: foreign_keys is a no-op inside
        one and journal_mode cannot change there. Switching to WAL needs a moment of
        exclusive access, so a busy answer here is retried like any other."""
        deadline = time.monotonic() + self._retry_deadline
        while True:
            try:
                self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                # Board rows are small: with 1 KiB pages a commit writes a quarter of
                # the bytes 4 KiB pages would (measured: +15% queue throughput). It
                # takes effect when the file is new, before it switches to WAL.
                self._conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
                # Off while the schema is made or migrated (on after _init_schema): a
                # migration that rebuilds a table needs it off, and checks the keys
                # itself before its COMMIT (SqlStore._broken_references).
                self._conn.execute("PRAGMA foreign_keys = OFF")
                # In WAL mode NORMAL survives any process kill; only a power loss can drop
                # the last commits, which a board survives (a lost claim is reclaimed).
                self._conn.execute("PRAGMA synchronous = NORMAL")
                # A checkpoint copies the WAL's pages into the file and fsyncs; at
                # SQLite's default (every 1,000 pages) that was 40% of a small task's
                # cost. With a bigger WAL a checkpoint writes each hot page once for
                # many commits, and the dispatcher checkpoints while idle (checkpoint
                # below), so the hot path rarely pays it. journal_size_limit trims the
                # WAL file back after a checkpoint.
                self._conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
                self._conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES}")
                # 8 MiB of page cache (SQLite's default is 2 MiB): a 10,000-task board's
                # hot pages stay in memory between a tick's queries.
                self._conn.execute("PRAGMA cache_size = -8192")
                mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()
                if mode is None or str(mode[0]).lower() != "wal":
                    raise StoreUnavailable(f"{self.path}: SQLite refused WAL mode ({mode})")
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)

    def _broken_references(self, tx: Tx) -> int:
        return len(tx.all("PRAGMA foreign_key_check"))

    def _transaction(self, write: bool) -> _Transaction:
        return self._writes if write else self._reads

    def _retryable(self, exc: BaseException) -> bool:
        return _is_busy(exc)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
        self._notifier.close()
