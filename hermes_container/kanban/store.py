"""The board store: the API every part of the work layer uses, and which backend to open.

SQLite at `$HERMES_HOME/kanban/kanban.db` unless `HERMES_KANBAN_DATABASE_URL` (or the
file `HERMES_KANBAN_DATABASE_URL_FILE` names: the URL holds a password) names a
PostgreSQL database; both run the same operations (sql_store.SqlStore) on the same
schema. Every operation is one short transaction that writes a change and its events
together; a busy database is retried inside, never reported as "locked".
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

from hermes_container.home import HermesHome
from hermes_container.kanban.model import (
    Board,
    ClaimLimits,
    Event,
    Holder,
    RetryPolicy,
    Run,
    Task,
)
from hermes_container.kanban.tx import Tx
from hermes_container.kanban.wake import Listener
from hermes_container.secret_env import secret_from_env

T = TypeVar("T")

DATABASE_URL_ENV = "HERMES_KANBAN_DATABASE_URL"


def database_url(env: Mapping[str, str] | None = None) -> str | None:
    """The shared board's PostgreSQL URL (HERMES_KANBAN_DATABASE_URL or its _FILE form),
    or None for the home's SQLite board; ConfigError when both forms are set or the file
    cannot be read."""
    url = secret_from_env(DATABASE_URL_ENV, env)
    return url.strip() if url is not None else None


def sqlite_path(home: HermesHome) -> Path:
    return home.root / "kanban" / "kanban.db"


class Store(Protocol):
    """What a board offers. Errors: UsageError (bad input, exit 2), NotFound,
    InvalidTransition (status forbids it), NotHolder (not the current run's holder),
    StoreUnavailable. Whenever one is raised, nothing was written."""

    # Told (board, kind) of the job events each committed transaction wrote.
    job_event_observer: Callable[[list[tuple[str, str]]], None] | None

    @property
    def identity(self) -> str:
        """Which database this is, for the event ledger's copy cursor (no secrets)."""
        ...

    def close(self) -> None: ...
    def checkpoint(self) -> None:
        """Fold the write-ahead log into the database (SQLite; a no-op elsewhere)."""
        ...

    def transact(self, fn: Callable[[Tx], T], *, write: bool = ...) -> T:
        """Run `fn` as one transaction (retried whole while the database is busy): for
        the work layer's own records beside the board's (kanban/jobs)."""
        ...

    @property
    def rng(self) -> random.Random:
        """The store's random source (jitter), replaceable in tests."""
        ...

    def listen(self) -> Listener:
        """A listener woken by every committed change to this board store (wake.py)."""
        ...

    # boards
    def create_board(self, slug: str) -> Board: ...
    def list_boards(self, *, include_archived: bool = False) -> list[Board]: ...
    def archive_board(self, slug: str) -> Board: ...

    # tasks
    def create_task(
        self,
        title: str,
        *,
        board: str = ...,
        body: str = ...,
        assignee: str | None = ...,
        priority: int = ...,
        parents: Sequence[int] = ...,
        max_retries: int | None = ...,
        max_runtime: float | None = ...,
        idempotency_key: str | None = ...,
        triage: bool = ...,
    ) -> Task: ...
    def get_task(self, task_id: int) -> Task: ...
    def get_tasks(self, task_ids: Sequence[int]) -> dict[int, Task]:
        """The tasks among `task_ids` that exist, by id (one query)."""
        ...

    def list_tasks(
        self,
        *,
        board: str | None = ...,
        status: str | None = ...,
        assignee: str | None = ...,
        limit: int | None = ...,
    ) -> list[Task]: ...
    def assign(self, task_id: int, assignee: str | None, *, source: str = ...) -> Task: ...
    def comment(self, task_id: int, text: str, *, author: str | None = ...) -> Task: ...
    def block(self, task_id: int, reason: str) -> Task: ...
    def unblock(self, task_id: int) -> Task: ...
    def archive(self, task_id: int) -> Task: ...
    def promote(self, board: str = ...) -> list[int]: ...

    # runs
    def claim(
        self,
        holder: Holder,
        limits: ClaimLimits | None = ...,
        *,
        board: str = ...,
        assignees: Collection[str] | None = ...,
        task_id: int | None = ...,
    ) -> Run | None: ...
    def claim_tasks(
        self,
        holder: Holder,
        task_ids: Sequence[int],
        limits: ClaimLimits | None = ...,
        *,
        board: str = ...,
    ) -> list[Run]:
        """Claim those of `task_ids` still ready and under the caps, in one transaction."""
        ...

    def extend_claim(self, run: Run, ttl_seconds: float) -> Run: ...
    def complete(
        self, run: Run, result: str, *, latency_ms: int | None = ..., tokens: int | None = ...
    ) -> Task: ...
    def fail(
        self,
        run: Run,
        error: str,
        policy: RetryPolicy | None = ...,
        *,
        latency_ms: int | None = ...,
    ) -> Task: ...
    def time_out(self, run_id: int, policy: RetryPolicy | None = ...) -> Task: ...
    def rate_limited(self, run: Run, retry_after: float) -> Task: ...
    def release(self, run_id: int, *, reason: str = ...) -> Task: ...
    def open_runs(self, board: str = ...) -> list[Run]: ...
    def runs_of(self, task_id: int) -> list[Run]: ...
    def running_counts(self, board: str = ...) -> dict[str, int]: ...
    def ready_queue(
        self, board: str = ..., *, with_promotable: bool = ..., limit: int | None = ...
    ) -> list[tuple[int, str | None]]: ...
    def next_due(self, board: str = ...) -> float | None: ...
    def now(self) -> float: ...

    # events
    def events_since(
        self,
        event_id: int = ...,
        *,
        board: str | None = ...,
        task_id: int | None = ...,
        limit: int = ...,
    ) -> list[Event]: ...


def open_store(
    home: HermesHome,
    env: Mapping[str, str] | None = None,
    *,
    clock: Callable[[], float] | None = None,
) -> Store:
    """The board of this home: PostgreSQL when `HERMES_KANBAN_DATABASE_URL` (or its
    _FILE form) is set (psycopg is imported only then), else the SQLite file under the
    home. `clock` replaces the store's time source (the server's on PostgreSQL, else
    time.time)."""
    url = database_url(os.environ if env is None else env)
    if url:
        from hermes_container.kanban.postgres_store import PostgresStore

        return PostgresStore(url, clock=clock)
    from hermes_container.kanban.sqlite_store import SqliteStore

    return SqliteStore(sqlite_path(home), clock=clock)
