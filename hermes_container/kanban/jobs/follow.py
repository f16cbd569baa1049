"""Runs following their tasks: the board's events of job tasks, read once, in order.

The board knows nothing of jobs (its hot path stays as it is); a job's run follows its
tasks by reading the board's append-only events after a cursor kept in the same
database (`kanban_job_cursor`, one row, row-locked while read), translating each event
of a job task into the job's own event and the run's state, and moving the cursor, all
in one transaction. So each board event is translated exactly once, by whichever
dispatcher gets there first, and a crash anywhere leaves the cursor where the job
events it covers are.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from hermes_container.kanban.jobs import book
from hermes_container.kanban.jobs.model import (
    ACTIVE,
    CANCELLED,
    COMPLETED,
    DEAD_LETTERED,
    DELIVERY_PENDING,
    JobRun,
)
from hermes_container.kanban.model import Task
from hermes_container.kanban.tasks import get_many
from hermes_container.kanban.tx import Tx

PAGE = 1000  # board events per transaction
PROMPT_IN_EVENT = 2000  # characters of a failed prompt in its dead_lettered event


@dataclass(frozen=True, slots=True)
class Finished:
    """A run that completed in this transaction: what its output file gets."""

    run: JobRun
    task: Task  # the last step


OnFinished = Callable[[Finished], None]


def _cursor(tx: Tx) -> int | None:
    row = tx.one("SELECT board_event FROM kanban_job_cursor WHERE id = 1" + tx.dialect.row_lock)
    return None if row is None else int(row[0])


def pending(tx: Tx) -> bool:
    """Whether board events wait to be followed (a cheap read, for idle ticks)."""
    row = tx.one(
        "SELECT (SELECT board_event FROM kanban_job_cursor WHERE id = 1), "
        "(SELECT MAX(id) FROM kanban_events)"
    )
    if row is None or row[1] is None:
        return False
    return row[0] is None or int(row[1]) > int(row[0])


def follow(tx: Tx, on_finished: OnFinished | None = None) -> int:
    """Translate the next page of board events; how many job events that made."""
    after = _cursor(tx)
    if after is None:
        # First follow on this database: start from the beginning (the join below skips
        # other tasks' events). ON CONFLICT: two dispatchers' first follows may race.
        tx.run(
            "INSERT INTO kanban_job_cursor (id, board_event) VALUES (1, 0) ON CONFLICT DO NOTHING"
        )
        after = _cursor(tx) or 0
    top_row = tx.one("SELECT MAX(id) FROM kanban_events")
    top = 0 if top_row is None or top_row[0] is None else int(top_row[0])
    if top <= after:
        return 0
    rows = tx.all(
        "SELECT e.id, e.task_id, e.kind, e.data, e.at, t.run_id, t.step "
        "FROM kanban_events e JOIN kanban_job_tasks t ON t.task_id = e.task_id "
        "WHERE e.id > ? AND e.id <= ? ORDER BY e.id LIMIT ?",
        (after, top, PAGE),
    )
    upto = top if len(rows) < PAGE else int(rows[-1][0])
    made = 0
    if rows:
        runs = {
            r.id: r
            for r in (
                book.get_run(tx, run_id, lock=True) for run_id in sorted({int(r[5]) for r in rows})
            )
        }
        tasks = get_many(tx, [int(r[1]) for r in rows])
        for event_id, task_id, kind, data, at, run_id, step in rows:
            run = runs[int(run_id)]
            task = tasks.get(int(task_id))
            if task is None:
                continue
            updated = _translate(
                tx, run, task, int(step), kind, json.loads(data), float(at), int(event_id)
            )
            if updated is not None:
                made += 1
                runs[run.id] = updated
                if updated.state == COMPLETED and run.state != COMPLETED and on_finished:
                    on_finished(Finished(updated, task))
    tx.run("UPDATE kanban_job_cursor SET board_event = ? WHERE id = 1", (upto,))
    return made


def _attempt(tx: Tx, task_id: int, board_run_id: object) -> int:
    """Which attempt a board run of a task is (1 for its first claim)."""
    if not isinstance(board_run_id, int):
        return 0
    row = tx.one(
        "SELECT COUNT(*) FROM kanban_runs WHERE task_id = ? AND id <= ?", (task_id, board_run_id)
    )
    return int(row[0]) if row else 0


def _translate(
    tx: Tx,
    run: JobRun,
    task: Task,
    step: int,
    kind: str,
    data: dict[str, object],
    at: float,
    board_event: int,
) -> JobRun | None:
    """One board event of a job task as the job's event (and the run's new state); None
    when the event means nothing to the job (assigned, commented, ...)."""
    last = run.last_task == task.id
    common = {
        "task_id": task.id,
        "step": step,
        "profile": task.assignee,
        "board_event": board_event,
    }

    def emit(job_kind: str, **extra: object) -> None:
        tx.emit_job(
            run.job, run.board, job_kind, run_id=run.id, slot=run.slot, at=at, **common, **extra
        )

    if kind == "claimed":
        emit("started", attempt=_attempt(tx, task.id, data.get("run_id")))
        return run
    if kind in ("failed", "timed_out"):
        emit("failed", attempt=data.get("failures"), error=data.get("error"), how=kind)
        return run
    if kind == "retry_scheduled":
        emit(
            "retry_scheduled",
            attempt=data.get("failures"),
            delay=data.get("delay"),
            not_before=data.get("not_before"),
        )
        return run
    if kind == "rate_limited":
        emit("rate_limited", retry_after=data.get("retry_after"))
        return run
    if kind == "reclaimed":
        emit("reclaimed", reason=data.get("reason"))
        return run
    if kind == "gave_up":
        error = str(data.get("error") or task.last_error or "")
        emit(
            "dead_lettered",
            attempts=data.get("failures"),
            error=error,
            # Cut: a 32,000-character prompt is up to 192 KB of JSON, past the ledger's
            # limit for one event's data (jobs dead reads the whole prompt from the task).
            prompt=task.body[:PROMPT_IN_EVENT],
        )
        return _set_state(tx, run, DEAD_LETTERED, at, error)
    if kind == "completed":
        if not last:
            emit("step_completed", latency_ms=data.get("latency_ms"))
            return run
        emit("completed", latency_ms=data.get("latency_ms"), attempts=task.attempts)
        return _set_state(tx, run, COMPLETED, at, None)
    if kind == "unblocked" and run.state == DEAD_LETTERED:
        # Someone unblocked the task on the board (`kanban unblock`), not `jobs retry`,
        # which sets the run active itself: either way the run is live again.
        emit("retried", via="board")
        return _set_state(tx, run, ACTIVE, None, None)
    if kind == "archived" and run.state in (ACTIVE, DEAD_LETTERED):
        emit("cancelled", why="its task was archived")
        return _set_state(tx, run, CANCELLED, at, run.error)
    return None


def _set_state(tx: Tx, run: JobRun, state: str, at: float | None, error: str | None) -> JobRun:
    delivery = run.delivery
    if state == COMPLETED:
        spec_row = tx.one("SELECT spec FROM kanban_jobs WHERE name = ?", (run.job,))
        wants = spec_row is not None and json.loads(spec_row[0]).get("deliver")
        delivery = DELIVERY_PENDING if wants else None
    tx.run(
        "UPDATE kanban_job_runs SET state = ?, finished_at = ?, error = ?, delivery = ?, "
        "delivery_next_at = ? WHERE id = ?",
        (
            state,
            at,
            error,
            delivery,
            tx.now if delivery == DELIVERY_PENDING else run.delivery_next_at,
            run.id,
        ),
    )
    return book.get_run(tx, run.id)
