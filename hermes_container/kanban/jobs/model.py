"""The jobs' stored values: a job, one run per fired slot, and the jobs' own events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hermes_container.kanban.jobs.spec import JobSpec

# A run's states. `queued`: its slot came while the job (or the board's job cap) was busy,
# its tasks are made when there is room; `active`: its tasks are on the board;
# `skipped`: its slot came while the job's previous run was in flight (overlap: skip).
QUEUED = "queued"
ACTIVE = "active"
COMPLETED = "completed"
DEAD_LETTERED = "dead_lettered"
SKIPPED = "skipped"
CANCELLED = "cancelled"  # its job was removed before it ran, or its task was archived
RUN_STATES = (QUEUED, ACTIVE, COMPLETED, DEAD_LETTERED, SKIPPED, CANCELLED)
IN_FLIGHT = (QUEUED, ACTIVE)

# Delivery states of a completed run whose job has --deliver.
DELIVERY_PENDING = "pending"
DELIVERY_DONE = "delivered"
DELIVERY_DEAD = "dead"

EVENT_KINDS: dict[str, str] = {
    "added": "a job was added",
    "removed": "a job was removed",
    "paused": "a job was paused: its slots do not fire",
    "resumed": "a paused job was resumed",
    "scheduled": "a slot fired: its run's tasks are on the board",
    "queued": "a slot fired while the job or the board's job cap was busy: it waits",
    "skipped_overlap": "a slot came while the previous run was in flight (overlap: skip)",
    "skipped_missed": "slots missed while nothing ran were skipped (catchup)",
    "started": "a step's attempt was claimed by a dispatcher",
    "step_completed": "a pipeline step finished; the next one starts",
    "completed": "a run finished: its last step's result is saved",
    "failed": "an attempt failed (error, timeout)",
    "rate_limited": "the provider said 429: the attempt waits, no attempt used up",
    "reclaimed": "an attempt's dispatcher went away: the step goes back, no attempt used up",
    "retry_scheduled": "a failed attempt will be retried after a backoff",
    "dead_lettered": "a run used up its retries: it waits in the dead-letter queue",
    "retried": "a dead-lettered run was sent back to the board",
    "cancelled": "a run will not finish (its job was removed or its task archived)",
    "delivered": "a run's result was POSTed to the job's URL",
    "delivery_failed": "a delivery attempt failed; it is retried after a backoff",
    "delivery_dead_lettered": "a delivery used up its attempts",
    "delivery_retried": "a dead-lettered delivery was queued again",
}


@dataclass(frozen=True, slots=True)
class Job:
    spec: JobSpec
    paused: bool
    created_at: float
    anchor: float  # interval slots count from here
    next_slot: float | None  # the first slot not handled yet; None: no more (a done --at)
    last_slot: float | None

    @property
    def name(self) -> str:
        return self.spec.name

    def to_json(self) -> dict[str, Any]:
        return {
            **self.spec.to_json(),
            "schedule_text": self.spec.schedule.describe(),
            "paused": self.paused,
            "created_at": self.created_at,
            "next_slot": None if self.paused else self.next_slot,
            "last_slot": self.last_slot,
        }


@dataclass(frozen=True, slots=True)
class JobRun:
    id: int
    job: str
    board: str
    slot: float
    state: str
    manual: bool  # `jobs run NAME`, not a schedule's slot
    created_at: float
    finished_at: float | None
    first_task: int | None
    last_task: int | None
    error: str | None
    delivery: str | None  # None: nothing to deliver
    delivery_attempts: int
    delivery_next_at: float | None
    delivery_error: str | None

    def to_json(self) -> dict[str, Any]:
        from hermes_container.kanban.jobs.schedule import slot_name

        return {
            "id": self.id,
            "job": self.job,
            "board": self.board,
            "slot": self.slot,
            "slot_name": slot_name(self.slot),
            "state": self.state,
            "manual": self.manual,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "first_task": self.first_task,
            "last_task": self.last_task,
            "error": self.error,
            "delivery": self.delivery,
            "delivery_attempts": self.delivery_attempts,
            "delivery_next_at": self.delivery_next_at,
            "delivery_error": self.delivery_error,
        }


@dataclass(frozen=True, slots=True)
class JobEvent:
    id: int  # monotonic in commit order, like the board's events
    job: str
    run_id: int | None
    slot: float | None
    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "job": self.job,
            "run_id": self.run_id,
            "slot": self.slot,
            "kind": self.kind,
            "data": self.data,
            "at": self.at,
        }
