"""Reading tasks and runs: the column lists and the row-to-value mapping."""

from __future__ import annotations

from collections.abc import Iterable

from hermes_container.kanban.errors import NotFound
from hermes_container.kanban.model import Run, Task
from hermes_container.kanban.tx import Row, Tx, placeholders

TASK_COLUMNS = (
    "id, board, title, body, assignee, status, priority, created_at, started_at, "
    "finished_at, attempts, consecutive_failures, max_retries, max_runtime, not_before, "
    "result, last_error, idempotency_key, current_run"
)
RUN_COLUMNS = (
    "id, task_id, host, pid, token, claimed_at, claim_expires_at, finished_at, outcome, "
    "error, latency_ms, tokens"
)


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def task_from_row(row: Row, parents: Iterable[int]) -> Task:
    return Task(
        id=int(row[0]),
        board=row[1],
        title=row[2],
        body=row[3],
        assignee=row[4],
        status=row[5],
        priority=int(row[6]),
        parents=tuple(sorted(parents)),
        created_at=float(row[7]),
        started_at=_float(row[8]),
        finished_at=_float(row[9]),
        attempts=int(row[10]),
        consecutive_failures=int(row[11]),
        max_retries=None if row[12] is None else int(row[12]),
        max_runtime=_float(row[13]),
        not_before=_float(row[14]),
        result=row[15],
        last_error=row[16],
        idempotency_key=row[17],
        current_run=None if row[18] is None else int(row[18]),
    )


def run_from_row(row: Row) -> Run:
    return Run(
        id=int(row[0]),
        task_id=int(row[1]),
        host=row[2],
        pid=int(row[3]),
        token=row[4],
        claimed_at=float(row[5]),
        claim_expires_at=float(row[6]),
        finished_at=_float(row[7]),
        outcome=row[8],
        error=row[9],
        latency_ms=None if row[10] is None else int(row[10]),
        tokens=None if row[11] is None else int(row[11]),
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
_RUN_AND_TASK = (
    f"SELECT {_prefixed('t', TASK_COLUMNS)}, {_HAS_PARENTS}, {_prefixed('r', RUN_COLUMNS)} "
    "FROM kanban_runs r JOIN kanban_tasks t ON t.id = r.task_id WHERE r.id = ?"
)
_TASK_WIDTH = len(TASK_COLUMNS.split(","))
# The same for an UPDATE of kanban_tasks (SQLite's RETURNING takes no table alias).
TASK_RETURNING = f"RETURNING {TASK_COLUMNS}, " + _HAS_PARENTS.replace("t.id", "kanban_tasks.id")


def task_from_returning(tx: Tx, row: Row) -> Task:
    """The task from a row of TASK_RETURNING."""
    return _task_with_flag(tx, row)


def _task_with_flag(tx: Tx, row: Row) -> Task:
    """A task from a row of its columns followed by the _HAS_PARENTS flag."""
    task_id = int(row[0])
    parents = parents_of(tx, [task_id])[task_id] if row[_TASK_WIDTH] else ()
    return task_from_row(row, parents)


def load_task(tx: Tx, task_id: int, *, lock: bool = False) -> Task:
    """The task, or NotFound. `lock`: the caller is about to change it (a row lock on
    PostgreSQL, so two writers cannot both act on the same old status)."""
    if not isinstance(task_id, int) or not 0 < task_id < 2**63:  # no such id can exist
        raise NotFound(f"no task {task_id}")
    row = tx.one(_TASK + (tx.dialect.row_lock if lock else ""), (task_id,))
    if row is None:
        raise NotFound(f"no task {task_id}")
    return _task_with_flag(tx, row)


def load_run(tx: Tx, run_id: int) -> Run:
    if not isinstance(run_id, int) or not 0 < run_id < 2**63:
        raise NotFound(f"no run {run_id}")
    row = tx.one(f"SELECT {RUN_COLUMNS} FROM kanban_runs WHERE id = ?", (run_id,))
    if row is None:
        raise NotFound(f"no run {run_id}")
    return run_from_row(row)


def load_run_and_task(tx: Tx, run_id: int) -> tuple[Run, Task]:
    """The run and its task (row-locked, as load_task(lock=True)) in one query: what
    every step of a run after its claim starts with, so it is the hot path."""
    if not isinstance(run_id, int) or not 0 < run_id < 2**63:
        raise NotFound(f"no run {run_id}")
    # OF t: the task row is the one the caller changes under the lock; the run row is
    # read as load_run reads it (the task's status and current_run guard it).
    row = tx.one(_RUN_AND_TASK + tx.dialect.row_lock_of("t"), (run_id,))
    if row is None:
        raise NotFound(f"no run {run_id}")
    return run_from_row(row[_TASK_WIDTH + 1 :]), _task_with_flag(tx, row)
