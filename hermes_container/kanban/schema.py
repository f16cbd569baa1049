"""The board's tables, one definition for SQLite and PostgreSQL.

The dialects differ in three places only, spelled out in `Dialect`:
- the auto-increment key (SQLite's rowid key; PostgreSQL identity). Rows are never
  deleted, so SQLite's max(id) + 1 never reuses an id; AUTOINCREMENT would add a write
  to sqlite_sequence to every insert for a guarantee we do not need;
- the 64-bit integer and float type names;
- the placeholder (`?` in our SQL; psycopg wants `%s`, so `Dialect.sql` rewrites it —
  no statement here contains a literal `?` or `%`).

A version row in `kanban_schema` lets a later release migrate (`migrate`); a database
newer than this code is refused instead of half-understood.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hermes_container.kanban.errors import StoreUnavailable
from hermes_container.kanban.model import STATUSES

SCHEMA_VERSION = 2


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    id_pk: str
    bigint: str
    real: str
    placeholder: str
    # Row locks. SQLite has none and needs none: every write holds the database's one
    # write lock from BEGIN IMMEDIATE to COMMIT.
    row_lock: str  # after a SELECT of rows the transaction is about to change
    skip_locked: str  # after the claim's candidate SELECT
    board_lock: str  # after the SELECT of the board row that serialises claims
    share_lock: str  # after a SELECT of rows that must not change until COMMIT
    # Before a column in a WHERE term that must not choose the index (SQLite's unary +).
    unindexed: str
    # What an INSERT needs to hand back its new id (tx.insert_id): nothing on SQLite,
    # whose cursor has it.
    returning_id: str

    def row_lock_of(self, alias: str) -> str:
        """row_lock for a SELECT that joins tables: lock the rows of `alias` only."""
        return f"{self.row_lock} OF {alias}" if self.row_lock else ""

    def sql(self, statement: str) -> str:
        if self.placeholder == "?":
            return statement
        return statement.replace("?", self.placeholder)


SQLITE = Dialect(
    name="sqlite",
    id_pk="INTEGER PRIMARY KEY",
    bigint="INTEGER",
    real="REAL",
    placeholder="?",
    row_lock="",
    skip_locked="",
    board_lock="",
    share_lock="",
    unindexed="+",
    returning_id="",
)
POSTGRES = Dialect(
    name="postgresql",
    id_pk="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    bigint="BIGINT",
    real="DOUBLE PRECISION",
    placeholder="%s",
    # NO KEY UPDATE, not UPDATE: we never change a key, and NO KEY UPDATE leaves alone the
    # FOR KEY SHARE locks that foreign keys take (inserting a task locks its board row
    # and its parents' rows so), so a claim or a completion never holds up a create.
    row_lock=" FOR NO KEY UPDATE",
    skip_locked=" FOR NO KEY UPDATE SKIP LOCKED",
    board_lock=" FOR NO KEY UPDATE",
    share_lock=" FOR SHARE",
    unindexed="",
    returning_id=" RETURNING id",
)

# One comparison per status, not `status IN (...)`: SQLite builds a temporary b-tree for
# an IN list of more than two constants, once per statement that checks the constraint
# (every INSERT, and every UPDATE of status), which was 17% of the instructions of the
# create + claim + complete benchmark. Both backends accept the same set either way.
_STATUS_CHECK = " OR ".join(f"status = '{status}'" for status in STATUSES)

# A task row's columns, in the order the code reads them (rows.task_from_row) and a
# migration copies them (by name: a copy by position would depend on the old table).
TASK_COLUMNS = (
    "id, board, title, body, assignee, status, priority, created_at, started_at, "
    "finished_at, attempts, consecutive_failures, max_retries, max_runtime, not_before, "
    "result, last_error, idempotency_key, current_run"
)

# The task table by itself: schema version 1 to 2 on SQLite rebuilds it (`migrate`).
_TASKS_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    id {id_pk},
    board TEXT NOT NULL REFERENCES kanban_boards (slug),
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    assignee TEXT,
    status TEXT NOT NULL CHECK ({status_check}),
    priority {bigint} NOT NULL,
    created_at {real} NOT NULL,
    started_at {real},
    finished_at {real},
    attempts {bigint} NOT NULL DEFAULT 0,
    consecutive_failures {bigint} NOT NULL DEFAULT 0,
    max_retries {bigint},
    max_runtime {real},
    not_before {real},
    result TEXT,
    last_error TEXT,
    idempotency_key TEXT,
    current_run {bigint}
)"""

_TABLES = """
CREATE TABLE IF NOT EXISTS kanban_schema (
    version {bigint} NOT NULL
);
CREATE TABLE IF NOT EXISTS kanban_boards (
    slug TEXT PRIMARY KEY,
    created_at {real} NOT NULL,
    archived_at {real}
);
{tasks_table};
CREATE UNIQUE INDEX IF NOT EXISTS kanban_tasks_idempotency
    ON kanban_tasks (board, idempotency_key) WHERE idempotency_key IS NOT NULL;
DROP INDEX IF EXISTS kanban_tasks_queue;
CREATE INDEX IF NOT EXISTS kanban_tasks_order
    ON kanban_tasks (board, status, priority DESC, created_at, id);
CREATE TABLE IF NOT EXISTS kanban_task_parents (
    task_id {bigint} NOT NULL REFERENCES kanban_tasks (id),
    parent_id {bigint} NOT NULL REFERENCES kanban_tasks (id),
    PRIMARY KEY (task_id, parent_id)
);
CREATE INDEX IF NOT EXISTS kanban_task_parents_parent ON kanban_task_parents (parent_id);
CREATE TABLE IF NOT EXISTS kanban_runs (
    id {id_pk},
    task_id {bigint} NOT NULL REFERENCES kanban_tasks (id),
    host TEXT NOT NULL,
    pid {bigint} NOT NULL,
    token TEXT NOT NULL,
    claimed_at {real} NOT NULL,
    claim_expires_at {real} NOT NULL,
    finished_at {real},
    outcome TEXT,
    error TEXT,
    latency_ms {bigint},
    tokens {bigint}
);
CREATE INDEX IF NOT EXISTS kanban_runs_task ON kanban_runs (task_id);
CREATE TABLE IF NOT EXISTS kanban_events (
    id {id_pk},
    task_id {bigint} NOT NULL REFERENCES kanban_tasks (id),
    board TEXT NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    at {real} NOT NULL
);
CREATE INDEX IF NOT EXISTS kanban_events_task ON kanban_events (task_id, id);
CREATE TABLE IF NOT EXISTS kanban_jobs (
    name TEXT PRIMARY KEY,
    board TEXT NOT NULL REFERENCES kanban_boards (slug),
    spec TEXT NOT NULL,
    secret TEXT,
    paused {bigint} NOT NULL DEFAULT 0,
    created_at {real} NOT NULL,
    anchor {real} NOT NULL,
    next_slot {real},
    last_slot {real}
);
CREATE INDEX IF NOT EXISTS kanban_jobs_due ON kanban_jobs (next_slot) WHERE paused = 0;
CREATE TABLE IF NOT EXISTS kanban_job_runs (
    id {id_pk},
    job TEXT NOT NULL,
    board TEXT NOT NULL,
    slot {real} NOT NULL,
    state TEXT NOT NULL,
    manual {bigint} NOT NULL DEFAULT 0,
    created_at {real} NOT NULL,
    finished_at {real},
    first_task {bigint},
    last_task {bigint},
    error TEXT,
    delivery TEXT,
    delivery_attempts {bigint} NOT NULL DEFAULT 0,
    delivery_next_at {real},
    delivery_error TEXT,
    UNIQUE (job, slot)
);
CREATE INDEX IF NOT EXISTS kanban_job_runs_state ON kanban_job_runs (state, board, job);
CREATE INDEX IF NOT EXISTS kanban_job_runs_delivery
    ON kanban_job_runs (delivery_next_at) WHERE delivery = 'pending';
CREATE TABLE IF NOT EXISTS kanban_job_tasks (
    task_id {bigint} PRIMARY KEY REFERENCES kanban_tasks (id),
    run_id {bigint} NOT NULL REFERENCES kanban_job_runs (id),
    step {bigint} NOT NULL
);
CREATE INDEX IF NOT EXISTS kanban_job_tasks_run ON kanban_job_tasks (run_id);
CREATE TABLE IF NOT EXISTS kanban_job_events (
    id {id_pk},
    job TEXT NOT NULL,
    board TEXT NOT NULL,
    run_id {bigint},
    slot {real},
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    at {real} NOT NULL
);
CREATE INDEX IF NOT EXISTS kanban_job_events_job ON kanban_job_events (job, id);
CREATE TABLE IF NOT EXISTS kanban_job_cursor (
    id {bigint} PRIMARY KEY,
    board_event {bigint} NOT NULL
);
"""


def _tasks_table(dialect: Dialect, name: str) -> str:
    return _TASKS_TABLE.format(
        name=name,
        id_pk=dialect.id_pk,
        bigint=dialect.bigint,
        real=dialect.real,
        status_check=_STATUS_CHECK,
    ).strip()


def statements(dialect: Dialect) -> list[str]:
    """The DDL for `dialect`, one statement per item, each idempotent (IF NOT EXISTS)."""
    text = _TABLES.format(
        id_pk=dialect.id_pk,
        bigint=dialect.bigint,
        real=dialect.real,
        tasks_table=_tasks_table(dialect, "kanban_tasks"),
    )
    return [part.strip() for part in text.split(";") if part.strip()]


def migrate(run: Callable[[str], object], dialect: Dialect, found: int) -> None:
    """Bring a database at schema version `found` to SCHEMA_VERSION, inside the caller's
    write transaction (all or nothing). `run` executes one statement.

    1 -> 2: the status CHECK without an IN list. SQLite cannot change a constraint in
    place, so the task table is rebuilt its documented way (a new table, the rows
    copied, the old one dropped, the new one renamed; the caller has foreign key
    enforcement off, as that procedure needs, and checks the keys before COMMIT); the
    indexes on it are made again by `statements`, run after. PostgreSQL evaluates the
    old IN list cheaply, so its table stays as it is.
    """
    if found < 2 and dialect.name == "sqlite":
        run(_tasks_table(dialect, "kanban_tasks_v2"))
        run(f"INSERT INTO kanban_tasks_v2 ({TASK_COLUMNS}) SELECT {TASK_COLUMNS} FROM kanban_tasks")
        run("DROP TABLE kanban_tasks")
        run("ALTER TABLE kanban_tasks_v2 RENAME TO kanban_tasks")
        for statement in statements(dialect):
            run(statement)


def check_version(found: int | None) -> None:
    if found is not None and found > SCHEMA_VERSION:
        raise StoreUnavailable(
            f"the board database has schema version {found}, newer than this hermes "
            f"understands ({SCHEMA_VERSION}): upgrade hermes"
        )
