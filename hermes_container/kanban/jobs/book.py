"""The jobs' records on the board store: add, list, pause, remove, run now, history,
the dead-letter queue and retry. Every function runs inside one store transaction
(`Store.transact`) and writes its job events through `tx.emit_job`, so a change and
its record commit together. Firing slots is in fire.py, following runs in follow.py."""

from __future__ import annotations

import json
import math

from hermes_container.errors import UsageError
from hermes_container.kanban import boards
from hermes_container.kanban.errors import InvalidTransition, NotFound
from hermes_container.kanban.jobs.model import (
    ACTIVE,
    CANCELLED,
    DEAD_LETTERED,
    DELIVERY_DEAD,
    DELIVERY_PENDING,
    IN_FLIGHT,
    QUEUED,
    Job,
    JobEvent,
    JobRun,
)
from hermes_container.kanban.jobs.schedule import AT, EVERY
from hermes_container.kanban.jobs.spec import JobSpec, validate_job_name
from hermes_container.kanban.model import BLOCKED, Task
from hermes_container.kanban.rows import TASK_COLUMNS, tasks_from_rows
from hermes_container.kanban.tasks import unblock
from hermes_container.kanban.tx import Row, Tx, placeholders

JOB_COLUMNS = "spec, paused, created_at, anchor, next_slot, last_slot"
RUN_COLUMNS = (
    "id, job, board, slot, state, manual, created_at, finished_at, first_task, last_task, "
    "error, delivery, delivery_attempts, delivery_next_at, delivery_error"
)
EVENT_COLUMNS = "id, job, run_id, slot, kind, data, at"


def _opt(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def job_from_row(row: Row) -> Job:
    return Job(
        spec=JobSpec.from_json(json.loads(row[0])),
        paused=bool(row[1]),
        created_at=float(row[2]),
        anchor=float(row[3]),
        next_slot=_opt(row[4]),
        last_slot=_opt(row[5]),
    )


def run_from_row(row: Row) -> JobRun:
    return JobRun(
        id=int(row[0]),
        job=row[1],
        board=row[2],
        slot=float(row[3]),
        state=row[4],
        manual=bool(row[5]),
        created_at=float(row[6]),
        finished_at=_opt(row[7]),
        first_task=None if row[8] is None else int(row[8]),
        last_task=None if row[9] is None else int(row[9]),
        error=row[10],
        delivery=row[11],
        delivery_attempts=int(row[12]),
        delivery_next_at=_opt(row[13]),
        delivery_error=row[14],
    )


def event_from_row(row: Row) -> JobEvent:
    return JobEvent(
        id=int(row[0]),
        job=row[1],
        run_id=None if row[2] is None else int(row[2]),
        slot=_opt(row[3]),
        kind=row[4],
        data=json.loads(row[5]),
        at=float(row[6]),
    )


# -- jobs -----------------------------------------------------------------------------


def load(tx: Tx, name: str, *, lock: bool = False) -> Job:
    row = tx.one(
        f"SELECT {JOB_COLUMNS} FROM kanban_jobs WHERE name = ?"
        + (tx.dialect.row_lock if lock else ""),
        (validate_job_name(name),),
    )
    if row is None:
        raise NotFound(f"no job {name!r}")
    return job_from_row(row)


def secret_of(tx: Tx, name: str) -> str | None:
    row = tx.one("SELECT secret FROM kanban_jobs WHERE name = ?", (name,))
    return None if row is None else row[0]


def list_jobs(tx: Tx, board: str | None = None) -> list[Job]:
    sql = f"SELECT {JOB_COLUMNS} FROM kanban_jobs"
    params: tuple[object, ...] = ()
    if board is not None:
        sql += " WHERE board = ?"
        params = (board,)
    return [job_from_row(row) for row in tx.all(sql + " ORDER BY name", params)]


def first_slot(spec: JobSpec, now: float) -> tuple[float, float | None]:
    """(anchor, first slot) for a job added at `now`. An interval job's first slot is one
    interval after it is added, on a whole second."""
    anchor = float(math.ceil(now))
    if spec.schedule.kind == EVERY:
        return anchor, spec.schedule.next_after(anchor, anchor)
    return anchor, spec.schedule.next_after(now, anchor)


def add(tx: Tx, spec: JobSpec, secret: str | None) -> Job:
    spec.check()
    boards.require(tx, spec.board)
    anchor, slot = first_slot(spec, tx.now)
    if spec.schedule.kind == AT and slot is None:
        raise UsageError("--at is in the past: a one-time job must fire later than now")
    # ON CONFLICT, not a look first: two adders racing on PostgreSQL get this message too.
    if not tx.run(
        "INSERT INTO kanban_jobs (name, board, spec, secret, paused, created_at, anchor, "
        "next_slot) VALUES (?, ?, ?, ?, 0, ?, ?, ?) ON CONFLICT DO NOTHING",
        (spec.name, spec.board, spec.dumps(), secret, tx.now, anchor, slot),
    ):
        raise UsageError(f"job {spec.name!r} already exists")
    tx.emit_job(
        spec.name,
        spec.board,
        "added",
        schedule=spec.schedule.describe(),
        profiles=spec.profiles,
        next_slot=slot,
    )
    return Job(spec, False, tx.now, anchor, slot, None)


def set_paused(tx: Tx, name: str, paused: bool) -> Job:
    job = load(tx, name, lock=True)
    if job.paused == paused:
        return job
    next_slot = job.next_slot
    if not paused and job.next_slot is not None:
        # Slots that came while paused are not caught up: pausing means "not now".
        next_slot = job.spec.schedule.next_after(max(tx.now, job.next_slot - 1e-6), job.anchor)
    tx.run(
        "UPDATE kanban_jobs SET paused = ?, next_slot = ? WHERE name = ?",
        (int(paused), next_slot, job.name),
    )
    tx.emit_job(job.name, job.spec.board, "paused" if paused else "resumed", next_slot=next_slot)
    return load(tx, name)


def remove(tx: Tx, name: str) -> Job:
    """Delete the job; its queued runs are cancelled, runs on the board finish as they
    are, and its history (runs, events) stays."""
    job = load(tx, name, lock=True)
    for run_id, slot in tx.all(
        "SELECT id, slot FROM kanban_job_runs WHERE job = ? AND state = ?", (name, QUEUED)
    ):
        tx.run(
            "UPDATE kanban_job_runs SET state = ?, finished_at = ? WHERE id = ?",
            (CANCELLED, tx.now, run_id),
        )
        tx.emit_job(name, job.spec.board, "cancelled", run_id=run_id, slot=slot, why="removed")
    tx.run("DELETE FROM kanban_jobs WHERE name = ?", (name,))
    tx.emit_job(name, job.spec.board, "removed")
    return job


# -- runs -----------------------------------------------------------------------------


def get_run(tx: Tx, run_id: int, *, lock: bool = False) -> JobRun:
    if isinstance(run_id, bool) or not isinstance(run_id, int) or not 0 < run_id < 2**63:
        raise NotFound(f"no job run {run_id!r}")
    row = tx.one(
        f"SELECT {RUN_COLUMNS} FROM kanban_job_runs WHERE id = ?"
        + (tx.dialect.row_lock if lock else ""),
        (run_id,),
    )
    if row is None:
        raise NotFound(f"no job run {run_id}")
    return run_from_row(row)


def runs_of(tx: Tx, name: str, limit: int = 50, before: int | None = None) -> list[JobRun]:
    """A job's runs, newest first."""
    sql = f"SELECT {RUN_COLUMNS} FROM kanban_job_runs WHERE job = ?"
    params: list[object] = [validate_job_name(name)]
    if before is not None:
        sql += " AND id < ?"
        params.append(before)
    params.append(max(1, min(limit, 10_000)))
    return [run_from_row(row) for row in tx.all(sql + " ORDER BY id DESC LIMIT ?", params)]


def run_tasks(tx: Tx, run_ids: list[int]) -> dict[int, list[Task]]:
    """Each run's tasks, step order."""
    if not run_ids:
        return {}
    rows = tx.all(
        f"SELECT run_id, task_id, step FROM kanban_job_tasks "
        f"WHERE run_id IN ({placeholders(len(run_ids))}) ORDER BY run_id, step",
        run_ids,
    )
    ids = [int(r[1]) for r in rows]
    found: dict[int, Task] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        task_rows = tx.all(
            f"SELECT {TASK_COLUMNS} FROM kanban_tasks WHERE id IN ({placeholders(len(chunk))})",
            chunk,
        )
        found.update({t.id: t for t in tasks_from_rows(tx, task_rows)})
    out: dict[int, list[Task]] = {run_id: [] for run_id in run_ids}
    for run_id, task_id, _step in rows:
        task = found.get(int(task_id))
        if task is not None:
            out[int(run_id)].append(task)
    return out


def dead_letters(tx: Tx, *, deliveries: bool = False, limit: int = 500) -> list[JobRun]:
    if deliveries:
        sql = f"SELECT {RUN_COLUMNS} FROM kanban_job_runs WHERE delivery = ?"
        params: tuple[object, ...] = (DELIVERY_DEAD, limit)
    else:
        sql = f"SELECT {RUN_COLUMNS} FROM kanban_job_runs WHERE state = ?"
        params = (DEAD_LETTERED, limit)
    return [run_from_row(row) for row in tx.all(sql + " ORDER BY id LIMIT ?", params)]


def retry(tx: Tx, run_id: int) -> JobRun:
    """A dead-lettered run back to the board (its blocked step starts over, with a fresh
    failure count), or a dead-lettered delivery queued again."""
    run = get_run(tx, run_id, lock=True)
    if run.state == DEAD_LETTERED:
        tasks = run_tasks(tx, [run.id])[run.id]
        blocked = [t for t in tasks if t.status == BLOCKED]
        if not blocked:
            raise InvalidTransition(f"run {run_id} has no blocked step to retry")
        for task in blocked:
            unblock(tx, task.id)
        tx.run(
            "UPDATE kanban_job_runs SET state = ?, finished_at = NULL, error = NULL WHERE id = ?",
            (ACTIVE, run.id),
        )
        tx.emit_job(
            run.job,
            run.board,
            "retried",
            run_id=run.id,
            slot=run.slot,
            tasks=[t.id for t in blocked],
        )
    elif run.delivery == DELIVERY_DEAD:
        tx.run(
            "UPDATE kanban_job_runs SET delivery = ?, delivery_attempts = 0, "
            "delivery_next_at = ?, delivery_error = NULL WHERE id = ?",
            (DELIVERY_PENDING, tx.now, run.id),
        )
        tx.emit_job(run.job, run.board, "delivery_retried", run_id=run.id, slot=run.slot)
    else:
        raise InvalidTransition(
            f"run {run_id} is {run.state}"
            + (f" (delivery {run.delivery})" if run.delivery else "")
            + ": only a dead-lettered run or delivery can be retried"
        )
    return get_run(tx, run.id)


def in_flight(tx: Tx, name: str) -> list[JobRun]:
    return [
        run_from_row(row)
        for row in tx.all(
            f"SELECT {RUN_COLUMNS} FROM kanban_job_runs WHERE job = ? AND state IN (?, ?) "
            "ORDER BY slot",
            (name, *IN_FLIGHT),
        )
    ]


# -- events ---------------------------------------------------------------------------


def events_since(
    tx: Tx, after_id: int = 0, *, job: str | None = None, limit: int = 1000
) -> list[JobEvent]:
    sql = f"SELECT {EVENT_COLUMNS} FROM kanban_job_events WHERE id > ?"
    params: list[object] = [after_id]
    if job is not None:
        sql += " AND job = ?"
        params.append(job)
    params.append(max(1, min(limit, 10_000)))
    return [event_from_row(row) for row in tx.all(sql + " ORDER BY id LIMIT ?", params)]
