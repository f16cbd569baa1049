"""One open transaction, as the operations see it: statements in our `?` dialect, a
clock read once, and the events to append just before COMMIT."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from hermes_container.kanban.schema import Dialect

Row = tuple[Any, ...]


def _compact_encoder() -> Callable[[dict[str, Any]], str]:
    """An event's data as compact JSON (a few bytes less in every event row, and a task
    writes four or more).

    JSONEncoder.encode builds a new C encoder on every call, which was 40% of the cost
    of encoding an event (27,000 of the 68,000 instructions of a task's four events,
    measured with callgrind); the encoder json would build, built once, writes the same
    text. json.encoder.c_make_encoder is json's own but undeclared in typeshed: missing,
    or not writing what encode() writes, encode() it is."""
    encoder = json.JSONEncoder(separators=(",", ":"))
    make: Any = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython has its C accelerator
        return encoder.encode
    try:
        chunks = make(
            None,  # no circular-reference check: event data is built from plain values
            encoder.default,
            json.encoder.encode_basestring_ascii,
            None,  # indent
            ":",
            ",",
            False,  # sort_keys
            False,  # skipkeys
            True,  # allow_nan, as encode()
        )
    except TypeError:  # pragma: no cover - another signature
        return encoder.encode

    def encode(data: dict[str, Any]) -> str:
        return "".join(chunks(data, 0))

    sample: dict[str, Any] = {"a": [1, 2.5, None, "\u00e9", "\n"], "b": True, "c": {"d": 0}}
    return encode if encode(sample) == encoder.encode(sample) else encoder.encode


_encode = _compact_encoder()


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

    def insert_id(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> int | None:
        """Execute a one-row INSERT (written without RETURNING): the new row's id, or
        None if it inserted nothing (ON CONFLICT ... DO NOTHING).

        SQLite hands the id over through the cursor: RETURNING there gathers its rows in
        a temporary b-tree (about 22,000 instructions a statement, measured with
        callgrind). PostgreSQL has no such id, so it gets RETURNING."""
        if self.dialect.returning_id:
            row = self.one(sql + self.dialect.returning_id, params)
            return None if row is None else int(row[0])
        self.cursor.execute(sql, tuple(params))
        if self.cursor.rowcount < 1:
            return None
        return int(self.cursor.lastrowid)  # type: ignore[attr-defined]

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
