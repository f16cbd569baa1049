"""Slots becoming runs: the scheduler's half of a job.

`fire_due` takes the jobs whose next slot has come (row-locked, SKIP LOCKED on
PostgreSQL so several dispatchers split them and none waits), decides per slot what
happens (scheduled, queued, skipped), and moves the job's `next_slot` past now, all in
one transaction. A slot is a row with UNIQUE (job, slot) and its first task carries the
idempotency key `job:<name>:<slot>`, so even a scheduler that somehow saw an old
`next_slot` (a clock stepped back, a second dispatcher) cannot fire it twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from hermes_container.kanban.errors import NotFound
from hermes_container.kanban.jobs import book
from hermes_container.kanban.jobs.model import ACTIVE, QUEUED, SKIPPED, Job, JobRun
from hermes_container.kanban.jobs.schedule import slot_name
from hermes_container.kanban.jobs.spec import CATCHUP_ALL_LIMIT, JobSpec
from hermes_container.kanban.tasks import create as create_task
from hermes_container.kanban.tx import Tx

# A slot is "missed" when the scheduler first sees it this late; `catchup: none` skips it.
MISFIRE_GRACE_SECONDS = 60.0
FIRE_BATCH = 200  # jobs per transaction; more due jobs wait for the next pass
# A job whose board was archived does not fire (its tasks could not be created): it
# waits, as its board's other tasks do, and fires again if the board is restored.
LIVE_BOARDS = "SELECT slug FROM kanban_boards WHERE archived_at IS NULL"


@dataclass(frozen=True, slots=True)
class Limits:
    max_concurrent: int | None = None  # job runs active per board; None: no cap


def task_key(name: str, slot: float, step: int) -> str:
    base = f"job:{name}:{slot_name(slot)}"
    return base if step == 1 else f"{base}:{step}"


def _active_on_board(tx: Tx, board: str) -> int:
    row = tx.one(
        "SELECT COUNT(*) FROM kanban_job_runs WHERE state = ? AND board = ?", (ACTIVE, board)
    )
    return int(row[0]) if row else 0


def _has_room(tx: Tx, board: str, limits: Limits) -> bool:
    cap = limits.max_concurrent
    if cap is None or cap < 1:
        return True
    # The board row's lock (the one claims take) makes count-then-start one step across
    # dispatchers, so two cannot both take the last place.
    tx.one("SELECT slug FROM kanban_boards WHERE slug = ?" + tx.dialect.board_lock, (board,))
    return _active_on_board(tx, board) < cap


def materialize(tx: Tx, run: JobRun, spec: JobSpec) -> list[int]:
    """Put a run's tasks on the board: one per step, each a child of the one before, so
    a step starts when the previous is done and gets its result as context."""
    task_ids: list[int] = []
    count = len(spec.steps)
    for index, step in enumerate(spec.steps, start=1):
        title = f"job {spec.name} {slot_name(run.slot)}"
        if count > 1:
            title += f" step {index}/{count}"
        task = create_task(
            tx,
            board=spec.board,
            title=title,
            body=step.prompt,
            assignee=step.profile,
            priority=0,
            parents=task_ids[-1:],
            max_retries=spec.max_retries,
            max_runtime=spec.timeout,
            idempotency_key=task_key(spec.name, run.slot, index),
            triage=False,
        )
        tx.run(
            "INSERT INTO kanban_job_tasks (task_id, run_id, step) VALUES (?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            (task.id, run.id, index),
        )
        task_ids.append(task.id)
    tx.run(
        "UPDATE kanban_job_runs SET state = ?, first_task = ?, last_task = ? WHERE id = ?",
        (ACTIVE, task_ids[0], task_ids[-1], run.id),
    )
    tx.emit_job(
        spec.name,
        spec.board,
        "scheduled",
        run_id=run.id,
        slot=run.slot,
        tasks=task_ids,
        manual=run.manual,
        waited=round(max(0.0, tx.now - run.created_at), 3),
    )
    return task_ids


def _new_run(tx: Tx, spec: JobSpec, slot: float, state: str, manual: bool) -> JobRun | None:
    """The slot's row, or None when the slot exists already (fired before)."""
    row = tx.one(
        "INSERT INTO kanban_job_runs (job, board, slot, state, manual, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (job, slot) DO NOTHING RETURNING id",
        (spec.name, spec.board, slot, state, int(manual), tx.now),
    )
    if row is None:
        return None
    return JobRun(
        id=int(row[0]),
        job=spec.name,
        board=spec.board,
        slot=slot,
        state=state,
        manual=manual,
        created_at=tx.now,
        finished_at=None,
        first_task=None,
        last_task=None,
        error=None,
        delivery=None,
        delivery_attempts=0,
        delivery_next_at=None,
        delivery_error=None,
    )


def _take_slot(
    tx: Tx, job: Job, slot: float, limits: Limits, *, catching_up: bool, manual: bool = False
) -> JobRun | None:
    spec = job.spec
    busy = book.in_flight(tx, spec.name)
    if busy and spec.overlap == "skip" and not catching_up and not manual:
        run = _new_run(tx, spec, slot, SKIPPED, manual)
        if run is not None:
            tx.emit_job(
                spec.name,
                spec.board,
                "skipped_overlap",
                run_id=run.id,
                slot=slot,
                in_flight=[r.id for r in busy],
            )
        return run
    if busy or not _has_room(tx, spec.board, limits):
        run = _new_run(tx, spec, slot, QUEUED, manual)
        if run is not None:
            tx.emit_job(
                spec.name,
                spec.board,
                "queued",
                run_id=run.id,
                slot=slot,
                behind=[r.id for r in busy],
                manual=manual,
            )
        return run
    run = _new_run(tx, spec, slot, QUEUED, manual)
    if run is None:
        return None
    materialize(tx, run, spec)
    return book.get_run(tx, run.id)


def _due_slots(job: Job, now: float) -> tuple[list[float], int]:
    """(slots to fire, how many missed slots are skipped) per the job's catch-up rule."""
    assert job.next_slot is not None
    schedule, first = job.spec.schedule, job.next_slot
    limit = CATCHUP_ALL_LIMIT if job.spec.catchup == "all" else 1
    later, later_count = schedule.slots(first, now, job.anchor, limit)
    total = 1 + later_count
    slots = ([first, *later])[-limit:]
    if job.spec.catchup == "none":
        slots = [s for s in slots[-1:] if now - s <= MISFIRE_GRACE_SECONDS]
    return slots, total - len(slots)


def fire_due(tx: Tx, limits: Limits) -> list[JobRun]:
    """Fire every slot that has come; the runs made (scheduled, queued or skipped)."""
    rows = tx.all(
        f"SELECT {book.JOB_COLUMNS} FROM kanban_jobs WHERE paused = 0 "
        "AND next_slot IS NOT NULL AND next_slot <= ? AND board IN "
        f"({LIVE_BOARDS}) ORDER BY next_slot LIMIT ?" + tx.dialect.skip_locked,
        (tx.now, FIRE_BATCH),
    )
    made: list[JobRun] = []
    for row in rows:
        job = book.job_from_row(row)
        slots, skipped = _due_slots(job, tx.now)
        if skipped:
            tx.emit_job(
                job.name,
                job.spec.board,
                "skipped_missed",
                slot=job.next_slot,
                missed=skipped,
                catchup=job.spec.catchup,
            )
        for slot in slots:
            # catchup: all runs every missed slot, one after the other, whatever overlap says
            run = _take_slot(tx, job, slot, limits, catching_up=len(slots) > 1)
            if run is not None:
                made.append(run)
        after = job.spec.schedule.next_after(tx.now, job.anchor)
        tx.run(
            "UPDATE kanban_jobs SET next_slot = ?, last_slot = ? WHERE name = ?",
            (after, slots[-1] if slots else job.last_slot, job.name),
        )
    return made


def run_now(tx: Tx, name: str, limits: Limits) -> JobRun:
    """`jobs run NAME`: one run now, outside the schedule (queued behind a run in flight)."""
    job = book.load(tx, name, lock=True)
    slot = round(tx.now, 3)
    run = _take_slot(tx, job, slot, limits, catching_up=False, manual=True)
    if run is None:  # the same millisecond twice: the run made a moment ago
        row = tx.one(
            f"SELECT {book.RUN_COLUMNS} FROM kanban_job_runs WHERE job = ? AND slot = ?",
            (name, slot),
        )
        assert row is not None
        return book.run_from_row(row)
    return book.get_run(tx, run.id)


def start_queued(tx: Tx, limits: Limits) -> list[int]:
    """Materialize queued runs whose job has nothing active and whose board has room,
    oldest slot first; the run ids started."""
    started: list[int] = []
    rows = tx.all(
        f"SELECT {book.RUN_COLUMNS} FROM kanban_job_runs q WHERE q.state = ? "
        f"AND q.board IN ({LIVE_BOARDS}) "
        "AND NOT EXISTS (SELECT 1 FROM kanban_job_runs a WHERE a.job = q.job AND a.state = ?) "
        "ORDER BY q.slot, q.id",
        (QUEUED, ACTIVE),
    )
    seen: set[str] = set()
    for row in rows:
        run = book.run_from_row(row)
        if run.job in seen:
            continue  # one active run per job: its next queued run waits for this one
        seen.add(run.job)
        try:
            # The job's row lock serialises this with another dispatcher's start_queued
            # and fire_due for the same job; what was read above is then read again.
            job = book.load(tx, run.job, lock=True)
        except NotFound:  # removed: remove() cancels queued runs, so only a race gets here
            continue
        fresh = book.get_run(tx, run.id)
        if fresh.state != QUEUED or any(r.state == ACTIVE for r in book.in_flight(tx, run.job)):
            continue  # started meanwhile, by someone else
        if not _has_room(tx, run.board, limits):
            continue
        materialize(tx, fresh, job.spec)
        started.append(run.id)
    return started
