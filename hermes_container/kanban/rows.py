"""Reading tasks and runs: the column lists and the row-to-value mapping."""

from __future__ import annotations

from collections.abc import Iterable

from hermes_container.kanban.errors import NotFound
from hermes_container.kanban.model import Run, Task
from hermes_container.kanban.schema import TASK_COLUMNS as TASK_COLUMNS  # re-exported
from hermes_container.kanban.tx import Row, Tx, placeholders

RUN_COLUMNS = (
    "id, task_id, host, pid, token, claimed_at, claim_expires_at, finished_at, outcome, "
    "error, latency_ms, tokens"
)


def task_from_row(row: Row, parents: Iterable[int]) -> Task:
    # Positional, in Task's field order: twenty keyword arguments were a third of the
    # cost of building a Task, and this runs for every task a query returns.
    return Task(
        int(row[0]),  # id
        row[1],  # board
        row[2],  # title
        row[3],  # body
        row[4],  # assignee
        row[5],  # status
        int(row[6]),  # priority
        tuple(sorted(parents)),
        float(row[7]),  # created_at
        None if row[8] is None else float(row[8]),  # started_at
        None if row[9] is None else float(row[9]),  # finished_at
        int(row[10]),  # attempts
        int(row[11]),  # consecutive_failures
        None if row[12] is None else int(row[12]),  # max_retries
        None if row[13] is None else float(row[13]),  # max_runtime
        None if row[14] is None else float(row[14]),  # not_before
        row[15],  # result
        row[16],  # last_error
        row[17],  # idempotency_key
        None if row[18] is None else int(row[18]),  # current_run
    )


def run_from_row(row: Row) -> Run:
    return Run(
        int(row[0]),  # id, positional in Run's field order as in task_from_row
        int(row[1]),  # task_id
        row[2],  # host
        int(row[3]),  # pid
        row[4],  # token
        float(row[5]),  # claimed_at
        float(row[6]),  # claim_expires_at
        None if row[7] is None else float(row[7]),  # finished_at
        row[8],  # outcome
        row[9],  # error
        None if row[10] is None else int(row[10]),  # latency_ms
        None if row[11] is None else int(row[11]),  # tokens
    )


def parents_of(tx: Tx, task_ids: list[int]) -> dict[int, list[int]]:
    found: dict[int, list[int]] = {task_id: [] for task_id in task_ids}
    # Chunks keep the statement under SQLite's bound-parameter limit.
    for start in range(0, len(task_ids), 500):
        chunk = task_ids[start : start + 500]
        for task_id, parent_id in tx.all(
            f"SELECT task_id, parent_id FROM kanban_task_parents "
            f"WHERE task_id IN ({placeholders(len(chunk))})",
            chunk,
        ):
            found[int(task_id)].append(int(parent_id))
    return found


def tasks_from_rows(tx: Tx, rows: list[Row]) -> list[Task]:
    parents = parents_of(tx, [int(row[0]) for row in rows])
    return [task_from_row(row, parents[int(row[0])]) for row in rows]


def _prefixed(alias: str, columns: str) -> str:
    return ", ".join(f"{alias}.{column.strip()}" for column in columns.split(","))


# Whether a task has parents, read with its row: most tasks have none, and then the
# second query for them (parents_of) is not needed.
_HAS_PARENTS = "EXISTS (SELECT 1 FROM kanban_task_parents p WHERE p.task_id = t.id)"
_TASK = f"SELECT {_prefixed('t', TASK_COLUMNS)}, {_HAS_PARENTS} FROM kanban_tasks t WHERE t.id = ?"
_TASK_WIDTH = len(TASK_COLUMNS.split(","))
_TASK_INDEX = {column.strip(): i for i, column in enumerate(TASK_COLUMNS.split(","))}
# A row of run_and_task_row: the task's columns, its has-parents flag, the run's token
# and outcome (what the holder checks need), then, if asked for, the run's columns from
# RUN_OFFSET on (complete, the commonest step, does without: a dozen columns less).
_RUN_AND_TASK = (
    f"SELECT {_prefixed('t', TASK_COLUMNS)}, {_HAS_PARENTS}, r.token, r.outcome{{run}} "
    "FROM kanban_runs r JOIN kanban_tasks t ON t.id = r.task_id WHERE r.id = ?"
)
_HOLDER_ONLY = _RUN_AND_TASK.format(run="")
_WHOLE_RUN = _RUN_AND_TASK.format(run=", " + _prefixed("r", RUN_COLUMNS))
TASK_STATUS = _TASK_INDEX["status"]
TASK_CURRENT_RUN = _TASK_INDEX["current_run"]
RUN_TOKEN = _TASK_WIDTH + 1
RUN_OUTCOME = _TASK_WIDTH + 2
RUN_OFFSET = _TASK_WIDTH + 3


def task_with_flag(tx: Tx, row: Row, changes: dict[str, object] | None = None) -> Task:
    """A task from a row of its columns followed by the _HAS_PARENTS flag. `changes`
    (column -> value) replaces what the row holds: what an UPDATE in this transaction
    wrote, so the task need not be read back."""
    task_id = int(row[0])
    parents = parents_of(tx, [task_id])[task_id] if row[_TASK_WIDTH] else ()
    if changes:
        values = list(row)
        for column, value in changes.items():
            values[_TASK_INDEX[column]] = value
        row = tuple(values)
    return task_from_row(row, parents)


def load_task(tx: Tx, task_id: int, *, lock: bool = False) -> Task:
    """The task, or NotFound. `lock`: the caller is about to change it (a row lock on
    PostgreSQL, so two writers cannot both act on the same old status)."""
    if not isinstance(task_id, int) or not 0 < task_id < 2**63:  # no such id can exist
        raise NotFound(f"no task {task_id}")
    row = tx.one(_TASK + (tx.dialect.row_lock if lock else ""), (task_id,))
    if row is None:
        raise NotFound(f"no task {task_id}")
    return task_with_flag(tx, row)


def load_run(tx: Tx, run_id: int) -> Run:
    if not isinstance(run_id, int) or not 0 < run_id < 2**63:
        raise NotFound(f"no run {run_id}")
    row = tx.one(f"SELECT {RUN_COLUMNS} FROM kanban_runs WHERE id = ?", (run_id,))
    if row is None:
        raise NotFound(f"no run {run_id}")
    return run_from_row(row)


def run_and_task_row(tx: Tx, run_id: int, *, whole_run: bool) -> Row:
    """The run and its task (row-locked, as load_task(lock=True)) in one query, as a
    row (see _RUN_AND_TASK): what every step of a run after its claim starts with, so
    it is the hot path."""
    if not isinstance(run_id, int) or not 0 < run_id < 2**63:
        raise NotFound(f"no run {run_id}")
    # OF t: the task row is the one the caller changes under the lock; the run row is
    # read as load_run reads it (the task's status and current_run guard it).
    sql = _WHOLE_RUN if whole_run else _HOLDER_ONLY
    row = tx.one(sql + tx.dialect.row_lock_of("t"), (run_id,))
    if row is None:
        raise NotFound(f"no run {run_id}")
    return row
