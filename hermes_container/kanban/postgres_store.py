"""A shared board on PostgreSQL (psycopg 3), for several containers or hosts.

One connection per store in autocommit mode; each operation is one explicit transaction
(`Connection.transaction()`), READ COMMITTED, with the row and board locks the operations
ask for through the dialect (schema.POSTGRES). A deadlock or serialization failure rolls
the transaction back and SqlStore._do runs it again.

The database URL may carry a password: it is never logged or put in an error; `describe`
gives host, port, database and user only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from hermes_container.kanban.errors import StoreUnavailable
from hermes_container.kanban.schema import POSTGRES
from hermes_container.kanban.sql_store import SqlStore
from hermes_container.kanban.tx import Cursor
from hermes_container.kanban.wake import PostgresListener

# 40001 serialization_failure, 40P01 deadlock_detected: PostgreSQL's "try again".
_RETRY_SQLSTATES = ("40001", "40P01")
CONNECT_TIMEOUT_SECONDS = 10


def describe(url: str) -> str:
    """`user@host:port/dbname` from a URL or a key=value conninfo, never the password."""
    try:
        parts: dict[str, Any] = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "an unparsable HERMES_KANBAN_DATABASE_URL"
    user = f"{parts['user']}@" if parts.get("user") else ""
    host = parts.get("host") or "localhost"
    port = f":{parts['port']}" if parts.get("port") else ""
    dbname = f"/{parts['dbname']}" if parts.get("dbname") else ""
    return f"postgresql://{user}{host}{port}{dbname}"


def _first_line(exc: BaseException, url: str) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    password = _password(url)
    # libpq does not echo the password, but a message quoting the conninfo would.
    return text.replace(password, "***") if password else text


def _password(url: str) -> str | None:
    try:
        value = conninfo_to_dict(url).get("password")
    except psycopg.ProgrammingError:
        return None
    return str(value) if value else None


class PostgresStore(SqlStore):
    dialect = POSTGRES

    def __init__(self, url: str, *, clock: Callable[[], float] | None = None) -> None:
        super().__init__(clock=clock)
        self._url = url
        self.where = describe(url)
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] = self._connect()
        self._init_schema()

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(
                self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
            )
        except psycopg.Error as exc:
            raise StoreUnavailable(
                f"cannot connect to the board database {self.where}: {_first_line(exc, self._url)}"
            ) from None  # the chained exception could carry the conninfo

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[Cursor]:
        with self._lock:
            if self._conn.closed or self._conn.broken:
                # A server restart or a network cut: a new connection for the next
                # operation. The one that saw the cut got an error and wrote nothing
                # it could not roll back (its COMMIT had not been acknowledged).
                self._conn = self._connect()
            try:
                with self._conn.transaction(), self._conn.cursor() as cursor:
                    yield cursor
            except psycopg.OperationalError as exc:
                if self._conn.broken:
                    raise StoreUnavailable(
                        f"lost the board database {self.where}: {_first_line(exc, self._url)}"
                    ) from None
                raise

    def _server_now(self, cursor: Cursor) -> float:
        # A shared board has one clock, the server's: claim expiry and retry times
        # written by one host are compared by another, whose clock may be off.
        # now() is the transaction's start, read once like SQLite's time.time().
        cursor.execute("SELECT EXTRACT(EPOCH FROM now())::float8")
        row = cursor.fetchone()
        return float(row[0])

    def _retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, psycopg.Error) and exc.sqlstate in _RETRY_SQLSTATES

    def _translate(self, exc: BaseException) -> Exception | None:
        # e.g. a role without rights on the schema: one line, not a traceback.
        if isinstance(exc, psycopg.Error):
            return StoreUnavailable(
                f"the board database {self.where} refused: {_first_line(exc, self._url)}"
            )
        return None

    def checkpoint(self) -> None:
        """Nothing to do: the server manages its own write-ahead log."""

    @property
    def identity(self) -> str:
        return self.where  # user@host:port/dbname, never the password

    def listen(self) -> PostgresListener:
        try:
            return PostgresListener(self._url)
        except psycopg.Error as exc:
            raise StoreUnavailable(
                f"cannot listen on the board database {self.where}: {_first_line(exc, self._url)}"
            ) from None

    def close(self) -> None:
        with self._lock:
            self._conn.close()
