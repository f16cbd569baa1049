"""One open transaction, as the operations see it: statements in our `?` dialect, a
clock read once, and the events to append just before COMMIT."""

from __future__ import annotations

import json
from typing import Any, Protocol

from hermes_container.kanban.schema import Dialect

Row = tuple[Any, ...]
_encode = json.JSONEncoder(separators=(",", ":")).encode


class Cursor(Protocol):
    """What sqlite3 and psycopg cursors have in common, and all we use."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, query: Any, params: Any = ..., /) -> Any: ...

    def executemany(self, query: Any, params_seq: Any, /) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> Any: ...


class Tx:
    def __init__(self, cursor: Cursor, dialect: Dialect, now: float) -> None:
        self.cursor = cursor
        self.dialect = dialect
        self.now = now
        self.pending_events: list[tuple[int, str, str, str, float]] = []
        self.job_kinds: list[tuple[str, str]] = []  # (board, kind) of every job event
        self.pending_job_events: list[
            tuple[str, str, int | None, float | None, str, str, float]
        ] = []

    def one(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> Row | None:
        self.cursor.execute(self.dialect.sql(sql), tuple(params))
        row = self.cursor.fetchone()
        return None if row is None else tuple(row)

    def all(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[Row]:
        self.cursor.execute(self.dialect.sql(sql), tuple(params))
        return [tuple(row) for row in self.cursor.fetchall()]

    def run(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> int:
        """Execute a statement; the number of rows it changed."""
        self.cursor.execute(self.dialect.sql(sql), tuple(params))
        return int(self.cursor.rowcount)

    def many(self, sql: str, rows: list[tuple[Any, ...]]) -> int:
        """Execute a statement once per row, in order: one call into the driver instead
        of one per row (sqlite3 steps a single prepared statement; psycopg pipelines).
        The number of rows changed, summed (both drivers sum it so)."""
        self.cursor.executemany(self.dialect.sql(sql), rows)
        return int(self.cursor.rowcount)

    def insert(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> int:
        """Execute an INSERT ... RETURNING id (SQLite >= 3.35 and PostgreSQL both have it)."""
        row = self.one(sql, params)
        assert row is not None
        return int(row[0])

    def emit(self, task_id: int, board: str, kind: str, **data: Any) -> None:
        """Queue an event; the store writes it in this transaction, after every other
        statement (events.flush explains why last)."""
        # Compact separators: a few bytes less in every event row, and a task writes
        # three or more of them.
        self.pending_events.append((task_id, board, kind, _encode(data), self.now))

    def emit_job(
        self,
        job: str,
        board: str,
        kind: str,
        *,
        run_id: int | None = None,
        slot: float | None = None,
        at: float | None = None,
        **data: Any,
    ) -> None:
        """Queue a job event (kanban/jobs); written with the task events, the same way.
        `at`: when it happened, if not now (a board event translated later keeps its time)."""
        self.pending_job_events.append(
            (job, board, run_id, slot, kind, json.dumps(data), self.now if at is None else at)
        )
        self.job_kinds.append((board, kind))


def placeholders(count: int) -> str:
    return ", ".join("?" * count)
