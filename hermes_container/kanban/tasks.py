"""Task operations other than running one: create, assign, comment, block, unblock,
archive, promote, list. Each runs inside one write transaction (store.SqlStore._write)
and records its events through `tx.emit`, so the change and its events commit together."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from hermes_container.errors import UsageError
from hermes_container.kanban import boards
from hermes_container.kanban.errors import InvalidTransition, NotFound
from hermes_container.kanban.model import (
    ARCHIVED,
    BLOCKED,
    DONE,
    READY,
    RUNNING,
    STATUSES,
    TODO,
    TRIAGE,
    Task,
)
from hermes_container.kanban.rows import TASK_COLUMNS, load_task, tasks_from_rows
from hermes_container.kanban.schema import Dialect
from hermes_container.kanban.tx import Tx, placeholders
from hermes_container.names import validate_profile_name

MAX_TITLE = 500
MAX_INT = 2**63 - 1
MAX_KEY = 200


def _int(value: object, what: str, *, minimum: int | None = None) -> int:
    # bool is an int subclass; True as a priority is a caller's bug, not 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise UsageError(f"{what} must be an integer, not {value!r}")
    if minimum is not None and value < minimum:
        raise UsageError(f"{what} must be at least {minimum}, not {value}")
    if not -MAX_INT <= value <= MAX_INT:  # both backends store 64-bit integers
        raise UsageError(f"{what} is out of range (at most {MAX_INT})")
    return value


def _assignee(value: str | None) -> str | None:
    return None if value is None else validate_profile_name(value)


def create(
    tx: Tx,
    *,
    board: str,
    title: str,
    body: str,
    assignee: str | None,
    priority: int,
    parents: Sequence[int],
    max_retries: int | None,
    max_runtime: float | None,
    idempotency_key: str | None,
    triage: bool,
) -> Task:
    title = title.strip() if isinstance(title, str) else ""
    if not title or len(title) > MAX_TITLE or "\n" in title:
        raise UsageError(f"a task title is one non-empty line of at most {MAX_TITLE} characters")
    if not isinstance(body, str):
        raise UsageError("a task body must be text")
    assignee = _assignee(assignee)
    _int(priority, "priority")
    if max_retries is not None:
        _int(max_retries, "max_retries", minimum=0)
    if max_runtime is not None and (
        isinstance(max_runtime, bool)
        or not isinstance(max_runtime, int | float)
        or not max_runtime > 0
    ):
        raise UsageError(f"max_runtime must be a positive number of seconds, not {max_runtime!r}")
    if idempotency_key is not None and (
        not isinstance(idempotency_key, str) or not 0 < len(idempotency_key) <= MAX_KEY
    ):
        raise UsageError(f"an idempotency key is 1 to {MAX_KEY} characters")
    parent_ids = sorted({_int(parent, "a parent id") for parent in parents})
    # A key or parents are looked up on this board below, so it must take work first;
    # otherwise the INSERT checks the board itself (one statement less: 4% of the
    # instructions of a create, measured) and `require` runs only if it inserted
    # nothing, to say why.
    board_checked = idempotency_key is not None or bool(parent_ids)
    if board_checked:
        boards.require(tx, board)
    else:
        boards.validate_slug(board)

    if idempotency_key is not None:
        existing = tx.one(
            f"SELECT {TASK_COLUMNS} FROM kanban_tasks WHERE board = ? AND idempotency_key = ?",
            (board, idempotency_key),
        )
        if existing is not None:
            return tasks_from_rows(tx, [existing])[0]

    parent_status: dict[int, str] = {}
    if parent_ids:
        rows = tx.all(
            f"SELECT id, board, status FROM kanban_tasks "
            f"WHERE id IN ({placeholders(len(parent_ids))})" + tx.dialect.share_lock,
            parent_ids,
        )
        parent_status = {int(row[0]): row[2] for row in rows if row[1] == board}
        missing = [pid for pid in parent_ids if pid not in parent_status]
        if missing:
            raise UsageError(f"parent task(s) {missing} do not exist on board {board!r}")
        archived = [pid for pid, status in parent_status.items() if status == ARCHIVED]
        if archived:
            raise UsageError(f"parent task(s) {archived} are archived and will never be done")
    # FOR SHARE (PostgreSQL) holds the parents as read until COMMIT: a parent archived
    # meanwhile, or completed (then the status above is the new one), cannot slip by.
    # A new task has no children yet, so its parent links cannot close a cycle: every
    # parent already exists and none of them can reach a task that does not.

    if triage:
        status = TRIAGE
    elif all(status == DONE for status in parent_status.values()):
        status = READY
    else:
        status = TODO
    task_id = tx.insert_id(
        _insert_sql(tx.dialect),
        (
            title,
            body,
            assignee,
            status,
            priority,
            tx.now,
            max_retries,
            max_runtime,
            idempotency_key,
            board,
        ),
    )
    if task_id is None:
        if not board_checked:
            boards.require(tx, board)  # raises: no such board, or it is archived
            raise RuntimeError(f"board {board!r} took no task and says nothing against it")
        row = tx.one(
            f"SELECT {TASK_COLUMNS} FROM kanban_tasks WHERE board = ? AND idempotency_key = ?",
            (board, idempotency_key),
        )
        assert row is not None
        return tasks_from_rows(tx, [row])[0]
    for parent in parent_ids:
        tx.run(
            "INSERT INTO kanban_task_parents (task_id, parent_id) VALUES (?, ?)",
            (task_id, parent),
        )
    tx.emit(
        task_id,
        board,
        "created",
        title=title,
        status=status,
        assignee=assignee,
        priority=priority,
        parents=parent_ids,
    )
    if assignee is not None:
        tx.emit(task_id, board, "assigned", assignee=assignee, previous=None, source="create")
    # Built here rather than read back: the row holds exactly these values, and the
    # two queries a re-read costs are a fifth of a small create.
    return Task(
        id=task_id,
        board=board,
        title=title,
        body=body,
        assignee=assignee,
        status=status,
        priority=priority,
        parents=tuple(parent_ids),
        created_at=tx.now,
        started_at=None,
        finished_at=None,
        attempts=0,
        consecutive_failures=0,
        max_retries=max_retries,
        max_runtime=None if max_runtime is None else float(max_runtime),
        not_before=None,
        result=None,
        last_error=None,
        idempotency_key=idempotency_key,
        current_run=None,
    )


@functools.cache
def _insert_sql(dialect: Dialect) -> str:
    """A task's INSERT, which inserts nothing unless its board exists and takes work.
    ON CONFLICT: two creators racing with one key (PostgreSQL): the loser inserts
    nothing and returns the winner's task. The casts give PostgreSQL the type of the
    two parameters that may be NULL and are not text: in INSERT ... SELECT it cannot
    take them from the target columns."""
    return (
        "INSERT INTO kanban_tasks (board, title, body, assignee, status, priority, "
        "created_at, max_retries, max_runtime, idempotency_key) "
        f"SELECT slug, ?, ?, ?, ?, ?, ?, CAST(? AS {dialect.bigint}), CAST(? AS {dialect.real}), ? "
        "FROM kanban_boards WHERE slug = ? AND archived_at IS NULL "
        "ON CONFLICT (board, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
    )


def _refuse(task: Task, action: str, statuses: tuple[str, ...]) -> None:
    if task.status in statuses:
        raise InvalidTransition(f"cannot {action} task {task.id}: it is {task.status}")


def assign(tx: Tx, task_id: int, assignee: str | None, source: str) -> Task:
    assignee = _assignee(assignee)
    task = load_task(tx, task_id, lock=True)
    _refuse(task, "reassign", (RUNNING, DONE, ARCHIVED))
    if task.assignee == assignee:
        return task
    tx.run("UPDATE kanban_tasks SET assignee = ? WHERE id = ?", (assignee, task_id))
    tx.emit(
        task_id, task.board, "assigned", assignee=assignee, previous=task.assignee, source=source
    )
    return load_task(tx, task_id)


def comment(tx: Tx, task_id: int, text: str, author: str | None) -> Task:
    if not isinstance(text, str) or not text.strip():
        raise UsageError("a comment cannot be empty")
    task = load_task(tx, task_id, lock=True)
    tx.emit(task_id, task.board, "commented", text=text, author=author)
    return task


def block(tx: Tx, task_id: int, reason: str) -> Task:
    if not isinstance(reason, str) or not reason.strip():
        raise UsageError("blocking a task needs a reason")
    task = load_task(tx, task_id, lock=True)
    # A running task has a holder that would go on working: reclaim (release) it first.
    _refuse(task, "block", (RUNNING, BLOCKED, DONE, ARCHIVED))
    tx.run(
        "UPDATE kanban_tasks SET status = ?, last_error = ? WHERE id = ?",
        (BLOCKED, reason, task_id),
    )
    tx.emit(task_id, task.board, "blocked", reason=reason, previous=task.status)
    return load_task(tx, task_id)


def unblock(tx: Tx, task_id: int) -> Task:
    """blocked or triage -> todo; a person decided to try again, so the failure count
    and the backoff start over. `promote` then makes it ready once its parents are done."""
    task = load_task(tx, task_id, lock=True)
    if task.status not in (BLOCKED, TRIAGE):
        raise InvalidTransition(f"cannot unblock task {task_id}: it is {task.status}")
    tx.run(
        "UPDATE kanban_tasks SET status = ?, consecutive_failures = 0, not_before = NULL "
        "WHERE id = ?",
        (TODO, task_id),
    )
    tx.emit(task_id, task.board, "unblocked", previous=task.status)
    return load_task(tx, task_id)


def archive(tx: Tx, task_id: int) -> Task:
    task = load_task(tx, task_id, lock=True)
    _refuse(task, "archive", (RUNNING, ARCHIVED))
    tx.run("UPDATE kanban_tasks SET status = ? WHERE id = ?", (ARCHIVED, task_id))
    tx.emit(task_id, task.board, "archived", previous=task.status)
    return load_task(tx, task_id)


def promote(tx: Tx, board: str) -> list[int]:
    """todo -> ready for every task whose parents are all done and whose not_before has
    passed. The issue's event list has no kind for this step, so it writes none."""
    boards.require(tx, board, allow_archived=True)
    rows = tx.all(
        "SELECT t.id FROM kanban_tasks t WHERE t.board = ? AND t.status = ? "
        "AND (t.not_before IS NULL OR t.not_before <= ?) "
        "AND NOT EXISTS (SELECT 1 FROM kanban_task_parents p "
        "JOIN kanban_tasks q ON q.id = p.parent_id "
        "WHERE p.task_id = t.id AND q.status <> ?) ORDER BY t.id" + tx.dialect.skip_locked,
        (board, TODO, tx.now, DONE),
    )
    promoted = []
    for (task_id,) in rows:
        # Compare-and-set: a concurrent unblock/archive already moved it otherwise.
        if tx.run(
            "UPDATE kanban_tasks SET status = ? WHERE id = ? AND status = ?",
            (READY, task_id, TODO),
        ):
            promoted.append(int(task_id))
    return promoted


def list_tasks(
    tx: Tx, board: str | None, status: str | None, assignee: str | None, limit: int | None
) -> list[Task]:
    sql = f"SELECT {TASK_COLUMNS} FROM kanban_tasks WHERE 1 = 1"
    params: list[object] = []
    if board is not None:
        boards.validate_slug(board)
        sql += " AND board = ?"
        params.append(board)
    if status is not None:
        if status not in STATUSES:
            raise UsageError(f"unknown status {status!r} (one of {', '.join(STATUSES)})")
        sql += " AND status = ?"
        params.append(status)
    if assignee is not None:
        sql += " AND assignee = ?"
        params.append(validate_profile_name(assignee))
    sql += " ORDER BY priority DESC, created_at, id"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(_int(limit, "limit", minimum=1))
    return tasks_from_rows(tx, tx.all(sql, params))


def get(tx: Tx, task_id: int) -> Task:
    if not isinstance(task_id, int) or isinstance(task_id, bool):
        raise NotFound(f"no task {task_id!r}")
    return load_task(tx, task_id)


def get_many(tx: Tx, task_ids: Sequence[int]) -> dict[int, Task]:
    wanted = sorted({t for t in task_ids if isinstance(t, int) and 0 < t < 2**63})
    if not wanted:
        return {}
    rows = tx.all(
        f"SELECT {TASK_COLUMNS} FROM kanban_tasks WHERE id IN ({placeholders(len(wanted))})",
        wanted,
    )
    return {task.id: task for task in tasks_from_rows(tx, rows)}
