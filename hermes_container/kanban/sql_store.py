"""The board store over a DB-API connection: every public method is one transaction.

Backends (sqlite_store, postgres_store) supply `_transaction` (BEGIN ... COMMIT on one
connection) and `_retryable` (which errors mean "run the whole transaction again": a busy
SQLite file, a PostgreSQL deadlock). A retried transaction starts over from its first
statement with a fresh clock, so an operation is never half-applied or applied twice.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from typing import TypeVar

from hermes_container.kanban import boards, events, runs, schema, tasks
from hermes_container.kanban.errors import StoreUnavailable
from hermes_container.kanban.model import (
    DEFAULT_BOARD,
    Board,
    ClaimLimits,
    Event,
    Holder,
    RetryPolicy,
    Run,
    Task,
)
from hermes_container.kanban.schema import Dialect
from hermes_container.kanban.tx import Cursor, Tx

T = TypeVar("T")

# How long an operation keeps retrying a busy database before it reports that as an
# error: far past any short transaction, short enough that a stuck writer gets noticed.
RETRY_DEADLINE_SECONDS = 30.0


class SqlStore:
    dialect: Dialect

    def __init__(
        self,
        *,
        clock: Callable[[], float] | None = None,
        rng: random.Random | None = None,
        retry_deadline: float = RETRY_DEADLINE_SECONDS,
    ) -> None:
        # None: the backend's own time (`_server_now`), else this clock (tests use a
        # fake one to step through backoffs and expiries).
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self._retry_deadline = retry_deadline
        # Told (board, kind) of the job events each committed transaction wrote: the
        # dispatcher counts them for its metrics (kanban/jobs/scheduler.py).
        self.job_event_observer: Callable[[list[tuple[str, str]]], None] | None = None

    # -- backend hooks --------------------------------------------------------------

    def _transaction(self, write: bool) -> AbstractContextManager[Cursor]:
        raise NotImplementedError

    def _retryable(self, exc: BaseException) -> bool:
        raise NotImplementedError

    def _server_now(self, cursor: Cursor) -> float:
        return time.time()

    def _translate(self, exc: BaseException) -> Exception | None:
        """The one-line error a driver's failure becomes (None: raise it as it is)."""
        return None

    def _changed(self, boards: set[str]) -> None:
        """After a commit that wrote events: wake whoever waits for changes to `boards`
        (PostgreSQL needs nothing here: its NOTIFY went out with the COMMIT)."""

    def close(self) -> None:
        raise NotImplementedError

    # -- transactions ---------------------------------------------------------------

    def _do(self, fn: Callable[[Tx], T], *, write: bool = True) -> T:
        deadline = time.monotonic() + self._retry_deadline
        pause = 0.005
        while True:
            try:
                with self._transaction(write) as cursor:
                    now = self._clock() if self._clock else self._server_now(cursor)
                    tx = Tx(cursor, self.dialect, now)
                    result = fn(tx)
                    changed = (
                        events.flush(tx) if tx.pending_events or tx.pending_job_events else None
                    )
            except Exception as exc:
                if not self._retryable(exc):
                    translated = self._translate(exc)
                    if translated is not None:
                        raise translated from None
                    raise
                if time.monotonic() >= deadline:
                    raise StoreUnavailable(
                        f"the board database stayed busy for {self._retry_deadline:g}s: {exc}"
                    ) from exc
                time.sleep(pause * (0.5 + self._rng.random()))
                pause = min(pause * 2, 0.25)
                continue
            if changed:
                self._changed(changed)
            if tx.job_kinds and self.job_event_observer is not None:
                self.job_event_observer(tx.job_kinds)
            return result

    def _read(self, fn: Callable[[Tx], T]) -> T:
        return self._do(fn, write=False)

    def transact(self, fn: Callable[[Tx], T], *, write: bool = True) -> T:
        """Run `fn` as one transaction of this store (retried whole when busy)."""
        return self._do(fn, write=write)

    @property
    def rng(self) -> random.Random:
        return self._rng

    def _init_schema(self) -> None:
        def init(tx: Tx) -> None:
            if tx.dialect.name == "postgresql":
                # Several dispatchers may open a fresh database at once; CREATE ... IF NOT
                # EXISTS is not safe against itself there.
                tx.one("SELECT pg_advisory_xact_lock(?)", (events.EVENT_LEDGER_LOCK + 1,))
            for statement in schema.statements(tx.dialect):
                tx.run(statement)
            row = tx.one("SELECT MAX(version) FROM kanban_schema")
            found = None if row is None or row[0] is None else int(row[0])
            schema.check_version(found)
            if found is None:
                tx.run("INSERT INTO kanban_schema (version) VALUES (?)", (schema.SCHEMA_VERSION,))
            elif found < schema.SCHEMA_VERSION:
                broken = self._broken_references(tx)
                schema.migrate(tx.run, tx.dialect, found)
                now_broken = self._broken_references(tx)
                if now_broken > broken:  # raising rolls the whole migration back
                    raise StoreUnavailable(
                        f"migrating the board database to schema {schema.SCHEMA_VERSION} "
                        f"would break {now_broken - broken} references; nothing was changed"
                    )
                tx.run("UPDATE kanban_schema SET version = ?", (schema.SCHEMA_VERSION,))
            boards.ensure_default(tx)

        self._do(init)

    def _broken_references(self, tx: Tx) -> int:
        """Foreign keys that do not hold. SQLite migrates with their enforcement off, so
        a migration counts them before and after; PostgreSQL enforces them throughout."""
        return 0

    def now(self) -> float:
        """The time this store stamps and compares with (claim expiry, not_before)."""
        return self._read(lambda tx: tx.now)

    # -- boards ---------------------------------------------------------------------

    def create_board(self, slug: str) -> Board:
        return self._do(lambda tx: boards.create(tx, slug))

    def list_boards(self, *, include_archived: bool = False) -> list[Board]:
        return self._read(lambda tx: boards.list_all(tx, include_archived=include_archived))

    def archive_board(self, slug: str) -> Board:
        return self._do(lambda tx: boards.archive(tx, slug))

    # -- tasks ----------------------------------------------------------------------

    def create_task(
        self,
        title: str,
        *,
        board: str = DEFAULT_BOARD,
        body: str = "",
        assignee: str | None = None,
        priority: int = 0,
        parents: Sequence[int] = (),
        max_retries: int | None = None,
        max_runtime: float | None = None,
        idempotency_key: str | None = None,
        triage: bool = False,
    ) -> Task:
        return self._do(
            lambda tx: tasks.create(
                tx,
                board=board,
                title=title,
                body=body,
                assignee=assignee,
                priority=priority,
                parents=parents,
                max_retries=max_retries,
                max_runtime=max_runtime,
                idempotency_key=idempotency_key,
                triage=triage,
            )
        )

    def get_task(self, task_id: int) -> Task:
        return self._read(lambda tx: tasks.get(tx, task_id))

    def get_tasks(self, task_ids: Sequence[int]) -> dict[int, Task]:
        return self._read(lambda tx: tasks.get_many(tx, task_ids))

    def list_tasks(
        self,
        *,
        board: str | None = DEFAULT_BOARD,
        status: str | None = None,
        assignee: str | None = None,
        limit: int | None = None,
    ) -> list[Task]:
        return self._read(lambda tx: tasks.list_tasks(tx, board, status, assignee, limit))

    def assign(self, task_id: int, assignee: str | None, *, source: str = "user") -> Task:
        return self._do(lambda tx: tasks.assign(tx, task_id, assignee, source))

    def comment(self, task_id: int, text: str, *, author: str | None = None) -> Task:
        return self._do(lambda tx: tasks.comment(tx, task_id, text, author))

    def block(self, task_id: int, reason: str) -> Task:
        return self._do(lambda tx: tasks.block(tx, task_id, reason))

    def unblock(self, task_id: int) -> Task:
        return self._do(lambda tx: tasks.unblock(tx, task_id))

    def archive(self, task_id: int) -> Task:
        return self._do(lambda tx: tasks.archive(tx, task_id))

    def promote(self, board: str = DEFAULT_BOARD) -> list[int]:
        return self._do(lambda tx: tasks.promote(tx, board))

    # -- runs -----------------------------------------------------------------------

    def claim(
        self,
        holder: Holder,
        limits: ClaimLimits | None = None,
        *,
        board: str = DEFAULT_BOARD,
        assignees: Collection[str] | None = None,
        task_id: int | None = None,
    ) -> Run | None:
        limits = limits or ClaimLimits()
        return self._do(lambda tx: runs.claim(tx, board, holder, limits, assignees, task_id))

    def claim_tasks(
        self,
        holder: Holder,
        task_ids: Sequence[int],
        limits: ClaimLimits | None = None,
        *,
        board: str = DEFAULT_BOARD,
    ) -> list[Run]:
        rules = limits or ClaimLimits()
        return self._do(lambda tx: runs.claim_tasks(tx, board, holder, rules, task_ids))

    def extend_claim(self, run: Run, ttl_seconds: float) -> Run:
        return self._do(lambda tx: runs.extend(tx, run, ttl_seconds))

    def complete(
        self, run: Run, result: str, *, latency_ms: int | None = None, tokens: int | None = None
    ) -> Task:
        return self._do(lambda tx: runs.complete(tx, run, result, latency_ms, tokens))

    def fail(
        self,
        run: Run,
        error: str,
        policy: RetryPolicy | None = None,
        *,
        latency_ms: int | None = None,
    ) -> Task:
        rules = policy or RetryPolicy()
        return self._do(
            lambda tx: runs.fail(
                tx, run.id, run.token, error, rules, self._rng, kind="failed", latency_ms=latency_ms
            )
        )

    def time_out(self, run_id: int, policy: RetryPolicy | None = None) -> Task:
        rules = policy or RetryPolicy()
        error = "timed out: ran past the task's max_runtime"
        return self._do(
            lambda tx: runs.fail(tx, run_id, None, error, rules, self._rng, kind="timed_out")
        )

    def rate_limited(self, run: Run, retry_after: float) -> Task:
        return self._do(lambda tx: runs.rate_limited(tx, run, retry_after))

    def release(self, run_id: int, *, reason: str = "") -> Task:
        return self._do(lambda tx: runs.release(tx, run_id, reason))

    def open_runs(self, board: str = DEFAULT_BOARD) -> list[Run]:
        return self._read(lambda tx: runs.open_runs(tx, board))

    def runs_of(self, task_id: int) -> list[Run]:
        return self._read(lambda tx: runs.runs_of(tx, task_id))

    def running_counts(self, board: str = DEFAULT_BOARD) -> dict[str, int]:
        return self._read(lambda tx: runs.running_counts(tx, board))

    def ready_queue(
        self,
        board: str = DEFAULT_BOARD,
        *,
        with_promotable: bool = False,
        limit: int | None = None,
    ) -> list[tuple[int, str | None]]:
        return self._read(lambda tx: runs.ready_queue(tx, board, with_promotable, limit))

    def next_due(self, board: str = DEFAULT_BOARD) -> float | None:
        return self._read(lambda tx: runs.next_due(tx, board))

    # -- events ---------------------------------------------------------------------

    def events_since(
        self,
        event_id: int = 0,
        *,
        board: str | None = None,
        task_id: int | None = None,
        limit: int = 1000,
    ) -> list[Event]:
        return self._read(lambda tx: events.since(tx, event_id, board, task_id, limit))
