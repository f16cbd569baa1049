"""The container's event ledger: one append-only SQLite file, `$HERMES_HOME/events/ledger.db`.

Why SQLite and not a JSON-lines file: many processes append at once (finish scripts,
gateways, the CLI, the dashboard, the dispatcher) and every id must be unique and
increasing. SQLite gives that with AUTOINCREMENT (never reuses an id, also after old rows
are deleted), whole records (a writer killed mid-append leaves a rolled-back
transaction, never half a line), and reads from any id through the primary key.

Appends never hold up supervision: a write waits for the file's lock at most
`budget` seconds (20 ms by default); past that, or when the file cannot be written at
all, the event goes to the spool (spool.py) with its own time and a unique source key,
and the next append that succeeds delivers it. Delivery is idempotent by that key.

The file is bounded (HERMES_EVENTS_MAX_BYTES, 64 MiB by default): every so many appends
the oldest tenth of the rows is deleted once the used pages exceed the bound. SQLite
reuses the freed pages, so the file stops growing; ids keep counting up.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hermes_container.errors import UsageError
from hermes_container.events.model import ACTOR_MAX, LedgerEvent, known_kind

LEDGER_DIR = "events"
LEDGER_FILE = "ledger.db"
MAX_BYTES_ENV = "HERMES_EVENTS_MAX_BYTES"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
MIN_MAX_BYTES = 1024 * 1024
APPEND_BUDGET_SECONDS = 0.020
WAL_SIZE_LIMIT_BYTES = 4 * 1024 * 1024
ROTATE_CHECK_EVERY = 256  # appends between size checks
ROTATE_FRACTION = 0.1  # of the rows, deleted per rotation step
MAX_DATA_BYTES = 64 * 1024

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " at REAL NOT NULL,"
    " kind TEXT NOT NULL,"
    " profile TEXT,"
    " actor TEXT NOT NULL,"
    " data TEXT NOT NULL,"
    # Where a copied event came from (a spool file's entry, the board's event id):
    # unique, so delivering the same one twice inserts it once.
    " source TEXT UNIQUE)",
    "CREATE INDEX IF NOT EXISTS events_profile ON events (profile, id)",
    "CREATE INDEX IF NOT EXISTS events_kind ON events (kind, id)",
    "CREATE INDEX IF NOT EXISTS events_at ON events (at)",
    # How far each outside stream (a board store) has been copied; moved in the same
    # transaction as the copies, so a crash between them loses or doubles nothing.
    "CREATE TABLE IF NOT EXISTS cursors (stream TEXT PRIMARY KEY, last_id INTEGER NOT NULL)",
)


def ledger_dir(root: Path) -> Path:
    return root / LEDGER_DIR


def max_bytes(env: Mapping[str, str] | None = None) -> int:
    raw = (os.environ if env is None else env).get(MAX_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    try:
        value = int(raw)
    except ValueError:
        return DEFAULT_MAX_BYTES
    return max(MIN_MAX_BYTES, value)


@dataclass(frozen=True, slots=True)
class Pending:
    """An event not yet in the ledger (the spool's unit)."""

    at: float
    kind: str
    profile: str | None
    actor: str
    data: dict[str, Any]
    source: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "kind": self.kind,
            "profile": self.profile,
            "actor": self.actor,
            "data": self.data,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, obj: Any) -> Pending:
        if not isinstance(obj, dict):
            raise ValueError("not an object")
        at, kind, actor = obj.get("at"), obj.get("kind"), obj.get("actor")
        profile, data, source = obj.get("profile"), obj.get("data"), obj.get("source")
        if not isinstance(at, int | float) or not isinstance(kind, str):
            raise ValueError("bad at/kind")
        if not isinstance(actor, str) or not isinstance(data, dict):
            raise ValueError("bad actor/data")
        if profile is not None and not isinstance(profile, str):
            raise ValueError("bad profile")
        if source is not None and not isinstance(source, str):
            raise ValueError("bad source")
        return cls(float(at), kind, profile, actor, data, source)


def make_pending(
    kind: str,
    *,
    profile: str | None,
    actor: str,
    data: Mapping[str, Any] | None = None,
    at: float | None = None,
    source: str | None = None,
) -> Pending:
    """A checked event: known kind, short actor, JSON-able data of bounded size."""
    if not known_kind(kind):
        raise UsageError(f"unknown event kind {kind!r}")
    if not actor or len(actor) > ACTOR_MAX:
        raise UsageError(f"an event's actor is 1 to {ACTOR_MAX} characters")
    body = dict(data or {})
    if len(json.dumps(body, default=str)) > MAX_DATA_BYTES:
        raise UsageError(f"an event's data is at most {MAX_DATA_BYTES} bytes of JSON")
    return Pending(time.time() if at is None else at, kind, profile, actor, body, source)


def _event(row: tuple[Any, ...]) -> LedgerEvent:
    return LedgerEvent(
        id=int(row[0]),
        at=float(row[1]),
        kind=row[2],
        profile=row[3],
        actor=row[4],
        data=json.loads(row[5]),
    )


class Ledger:
    """One process's connection to the ledger file (thread-safe)."""

    def __init__(
        self,
        root: Path,
        *,
        budget: float = APPEND_BUDGET_SECONDS,
        limit_bytes: int | None = None,
    ) -> None:
        self.directory = ledger_dir(root)
        self.path = self.directory / LEDGER_FILE
        self.budget = budget
        self.limit_bytes = max_bytes() if limit_bytes is None else limit_bytes
        self._lock = threading.Lock()
        self._appends = 0
        self._conn = self._open()

    def _open(self) -> sqlite3.Connection:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Events name profiles, users and errors: the owner's alone (its -wal and -shm
        # copy the database file's mode).
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=self.budget
        )
        conn.execute(f"PRAGMA busy_timeout = {max(1, int(self.budget * 1000))}")
        conn.execute("PRAGMA synchronous = NORMAL")
        # The WAL is trimmed back after each checkpoint: the bound covers the whole
        # ledger, not only its database file.
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES}")
        if _initialised(conn):
            return conn  # the usual case: no write lock needed, so no wait behind a writer
        deadline = time.monotonic() + 5.0
        while True:  # WAL and the schema once per file; another opener may hold it
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                with _tx(conn):
                    for statement in _SCHEMA:
                        conn.execute(statement)
                return conn
            except sqlite3.OperationalError:
                if time.monotonic() >= deadline:
                    conn.close()
                    raise
                time.sleep(0.01)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- writing ------------------------------------------------------------------------

    def write(self, events: Iterable[Pending], *, cursor: tuple[str, int] | None = None) -> int:
        """Insert `events` in one transaction (those whose source is known already are
        skipped); with `cursor`, move that stream's cursor in the same transaction.
        The number inserted. Raises sqlite3 errors (busy past the budget included)."""
        batch = list(events)
        with self._lock, _tx(self._conn):
            inserted = 0
            for event in batch:
                # A known source is skipped by a lookup, not by INSERT OR IGNORE: an
                # ignored insert still uses up an AUTOINCREMENT id, and a gap in the ids
                # would read like an event lost. (The write lock is held: no race.)
                if event.source is not None and self._known(event.source):
                    continue
                cur = self._conn.execute(
                    "INSERT OR IGNORE INTO events (at, kind, profile, actor, data, source) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        event.at,
                        event.kind,
                        event.profile,
                        event.actor,
                        json.dumps(event.data, default=str, sort_keys=True),
                        event.source,
                    ),
                )
                inserted += cur.rowcount
            if cursor is not None:
                self._conn.execute(
                    "INSERT INTO cursors (stream, last_id) VALUES (?, ?) "
                    "ON CONFLICT (stream) DO UPDATE SET last_id = excluded.last_id",
                    cursor,
                )
            self._appends += len(batch)
            check = self._appends >= ROTATE_CHECK_EVERY
            if check:
                self._appends = 0
        if check:
            self.rotate()
        return inserted

    def _known(self, source: str) -> bool:
        row = self._conn.execute("SELECT 1 FROM events WHERE source = ?", (source,)).fetchone()
        return row is not None

    def cursor(self, stream: str) -> int:
        with self._lock:
            row = self._conn.execute(
                "SELECT last_id FROM cursors WHERE stream = ?", (stream,)
            ).fetchone()
        return 0 if row is None else int(row[0])

    def used_bytes(self) -> int:
        with self._lock:
            pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
            free = self._conn.execute("PRAGMA freelist_count").fetchone()[0]
            size = self._conn.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def rotate(self) -> int:
        """Delete the oldest rows while the used size exceeds the bound; rows deleted."""
        deleted = 0
        for _ in range(20):  # bounded: a tenth per step
            if self.used_bytes() <= self.limit_bytes:
                break
            with self._lock, _tx(self._conn):
                count = self._conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
                drop = max(1, int(count * ROTATE_FRACTION))
                row = self._conn.execute(
                    "SELECT id FROM events ORDER BY id LIMIT 1 OFFSET ?", (drop,)
                ).fetchone()
                if row is None:
                    break
                cur = self._conn.execute("DELETE FROM events WHERE id < ?", (row[0],))
                deleted += cur.rowcount
        return deleted

    # -- reading ------------------------------------------------------------------------

    def read(
        self,
        after_id: int = 0,
        *,
        profile: str | None = None,
        kind: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 1000,
    ) -> list[LedgerEvent]:
        """Events with id > after_id, oldest first. `kind` ending in '.' is a prefix."""
        sql = "SELECT id, at, kind, profile, actor, data FROM events WHERE id > ?"
        params: list[Any] = [after_id]
        if profile is not None:
            sql += " AND profile = ?"
            params.append(profile)
        if kind is not None:
            if kind.endswith("."):
                sql += " AND substr(kind, 1, ?) = ?"
                params += [len(kind), kind]
            else:
                sql += " AND kind = ?"
                params.append(kind)
        if since is not None:
            sql += " AND at >= ?"
            params.append(since)
        if until is not None:
            sql += " AND at <= ?"
            params.append(until)
        sql += " ORDER BY id LIMIT ?"
        params.append(limit)
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [_event(tuple(r)) for r in rows]

    def iterate(self, after_id: int = 0, page: int = 5000, **filters: Any) -> Iterator[LedgerEvent]:
        while True:
            batch = self.read(after_id, limit=page, **filters)
            yield from batch
            if len(batch) < page:
                return
            after_id = batch[-1].id

    def bounds(self) -> tuple[int, int]:
        """(first id kept, last id written); (0, 0) when empty."""
        # Two subqueries: SQLite answers a lone MIN or MAX from the index's ends, but
        # MIN and MAX together scan the whole table.
        with self._lock:
            row = self._conn.execute(
                "SELECT (SELECT MIN(id) FROM events), (SELECT MAX(id) FROM events)"
            ).fetchone()
        return (int(row[0] or 0), int(row[1] or 0))


_SCHEMA_NAMES = ("events", "cursors", "events_profile", "events_kind", "events_at")


def _initialised(conn: sqlite3.Connection) -> bool:
    """Whether the file is in WAL mode with the whole schema already: then opening it
    takes no write lock. Setting WAL or creating the schema does (BEGIN IMMEDIATE),
    and behind another process's write that would wait far past the append budget."""
    try:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    except sqlite3.OperationalError:
        return False
    return str(mode).lower() == "wal" and names.issuperset(_SCHEMA_NAMES)


@contextmanager
def _tx(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
