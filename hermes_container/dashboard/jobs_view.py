"""The scheduled jobs as the dashboard's Jobs page sees them: the list with each job's
run history, one job's detail, the dead-letter queue, the actions, and the schedule
preview of a job not added yet.

Every method is synchronous (the store is) and is called from the threadpool by
jobs_api.py. The store is the Kanban page's (KanbanBoard: opened on first use, opened
again after a failure), since jobs live on the board. Adding a job is checked exactly
as `hermes jobs add` checks it (spec.from_mapping, then this home's profiles), so the
page and the CLI refuse the same input with the same one-line message.

What leaves this module is JSON for a logged-in user, built field by field: a job's
delivery secret is in the answer to the add that made it and nowhere else.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from hermes_container.dashboard.kanban_board import KanbanBoard
from hermes_container.errors import UsageError
from hermes_container.kanban.jobs import book
from hermes_container.kanban.jobs.api import Jobs
from hermes_container.kanban.jobs.model import (
    ACTIVE,
    COMPLETED,
    IN_FLIGHT,
    Job,
    JobEvent,
    JobRun,
)
from hermes_container.kanban.jobs.schedule import EVERY, Schedule, slot_name, zone
from hermes_container.kanban.jobs.spec import JobSpec, from_mapping, schedule_from
from hermes_container.kanban.model import BLOCKED, Task
from hermes_container.kanban.tx import Tx

HISTORY_RUNS = 20  # squares in a job's history strip
DETAIL_RUNS = 20
PREVIEW_SLOTS = 5
LIST_PROMPT_CHARS = 160  # the list shows the start of each prompt; the detail all of it
DEAD_PROMPT_CHARS = 2000
ERROR_CHARS = 300
SCHEDULE_FIELDS = ("cron", "every", "at", "timezone")
WHERE = "job"  # how from_mapping names the input in its messages


def _short(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def local_name(slot: float, timezone: str) -> str:
    """A slot as the job's zone reads it (the zone's abbreviation, e.g. CET or CEST)."""
    return datetime.fromtimestamp(slot, zone(timezone)).strftime("%Y-%m-%d %H:%M:%S %Z")


def slots_json(slots: list[float], timezone: str) -> list[dict[str, Any]]:
    return [{"at": s, "utc": slot_name(s), "local": local_name(s, timezone)} for s in slots]


def next_slots(job: Job, now: float) -> list[float]:
    """A job's next slots: its stored next slot (the one the scheduler fires next, even
    when overdue) and those after it."""
    if job.paused or job.next_slot is None:
        return []
    later = job.spec.schedule.preview(max(now, job.next_slot), job.anchor, PREVIEW_SLOTS - 1)
    return [job.next_slot, *later]


def draft_slots(schedule: Schedule, now: float) -> list[float]:
    """The first slots a job with this schedule would have if it were added now
    (book.first_slot's rule: interval slots count from the next whole second)."""
    anchor = float(math.ceil(now))
    return schedule.preview(anchor if schedule.kind == EVERY else now, anchor, PREVIEW_SLOTS)


def history_json(run: JobRun) -> dict[str, Any]:
    """One square of the history strip."""
    return {
        "id": run.id,
        "state": run.state,
        "slot": run.slot,
        "slot_name": slot_name(run.slot),
        "manual": run.manual,
        "task": run.last_task if run.state == COMPLETED else run.first_task,
        "error": _short(run.error, ERROR_CHARS),
        "delivery": run.delivery,
    }


def run_json(run: JobRun, tasks: list[Task]) -> dict[str, Any]:
    """A run with its tasks (step order), as `hermes jobs runs --json` shows it."""
    data = run.to_json()
    data["tasks"] = [
        {
            "id": t.id,
            "profile": t.assignee,
            "status": t.status,
            "attempts": t.attempts,
            "last_error": _short(t.last_error, ERROR_CHARS),
        }
        for t in tasks
    ]
    data["attempts"] = sum(t.attempts for t in tasks)
    data["latency_seconds"] = None if run.finished_at is None else run.finished_at - run.slot
    return data


def job_row(job: Job, runs: list[JobRun]) -> dict[str, Any]:
    """A job in the list: its schedule, next slot, last outcome and history strip
    (`runs` newest first, as book.runs_of gives them)."""
    data = job.to_json()
    data["steps"] = [
        {"profile": s.profile, "prompt": _short(s.prompt, LIST_PROMPT_CHARS)}
        for s in job.spec.steps
    ]
    data["profiles"] = job.spec.profiles
    finished = next((r for r in runs if r.state not in IN_FLIGHT), None)
    data["last_outcome"] = None if finished is None else finished.state
    data["last_outcome_at"] = None if finished is None else finished.finished_at or finished.slot
    data["in_flight"] = sum(1 for r in runs if r.state in IN_FLIGHT)
    data["history"] = [history_json(r) for r in reversed(runs)]  # oldest first, left to right
    return data


def dead_row(run: JobRun, tasks: list[Task], *, delivery: bool) -> dict[str, Any]:
    """An entry of the dead-letter queue, with what `hermes jobs dead` shows of it."""
    failed = next((t for t in tasks if t.status == BLOCKED), tasks[-1] if tasks else None)
    data = run_json(run, tasks)
    data["kind"] = "delivery" if delivery else "run"
    data["failed_task"] = None if failed is None else failed.id
    data["profile"] = None if failed is None else failed.assignee
    error = run.delivery_error if delivery else (failed.last_error if failed else run.error)
    data["error"] = _short(error or run.error, ERROR_CHARS)
    data["prompt"] = None if failed is None else _short(failed.body, DEAD_PROMPT_CHARS)
    data["failures"] = None if failed is None else failed.consecutive_failures
    return data


def newest_id(has_after: Callable[[int], bool]) -> int:
    """The newest of a sequence of ids, where `has_after(x)` says whether there is one
    after x, in O(log n) indexed look-ups (the events have no reverse scan)."""
    if not has_after(0):
        return 0
    low, high = 0, 1
    while has_after(high):
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        if has_after(middle):
            low = middle
        else:
            high = middle
    return high


def _form_value(key: str, value: Any) -> Any:
    """A field of the add form as from_mapping takes it: text or a number (YAML's
    types), or None for a field left empty."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if key == "steps":
        return value  # from_mapping says what is wrong with it
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise UsageError(f"{key} must be text or a number")
    return value


def spec_from_form(data: Mapping[str, Any]) -> JobSpec:
    """The job the add form describes, checked as `jobs add --file` checks a YAML file."""
    cleaned = {key: _form_value(str(key), value) for key, value in data.items()}
    return from_mapping({k: v for k, v in cleaned.items() if v is not None}, WHERE)


def schedule_from_form(data: Mapping[str, Any]) -> Schedule:
    """A draft schedule (the preview's query: cron, every or at, and timezone)."""
    unknown = sorted(set(data) - set(SCHEDULE_FIELDS))
    if unknown:
        raise UsageError(f"unknown field(s): {', '.join(unknown)[:100]}")
    values = {key: _form_value(key, data.get(key)) for key in SCHEDULE_FIELDS}
    return schedule_from(
        cron=None if values["cron"] is None else str(values["cron"]),
        every=values["every"],
        at=None if values["at"] is None else str(values["at"]),
        timezone=None if values["timezone"] is None else str(values["timezone"]),
    )


class JobsView:
    """The jobs of the dashboard process's board store (KanbanBoard's)."""

    def __init__(self, board: KanbanBoard) -> None:
        self.board = board

    @property
    def jobs(self) -> Jobs:
        return Jobs(self.board.store)

    # -- reads --------------------------------------------------------------------------

    def overview(self) -> dict[str, Any]:
        def read(tx: Tx) -> tuple[list[Job], dict[str, list[JobRun]], int, int]:
            found = book.list_jobs(tx)
            runs = {job.name: book.runs_of(tx, job.name, HISTORY_RUNS) for job in found}
            dead = len(book.dead_letters(tx))
            dead_deliveries = len(book.dead_letters(tx, deliveries=True))
            return found, runs, dead, dead_deliveries

        store = self.board.store
        found, runs, dead, dead_deliveries = store.transact(read, write=False)
        return {
            "now": store.now(),
            "jobs": [job_row(job, runs[job.name]) for job in found],
            "dead": {"runs": dead, "deliveries": dead_deliveries},
            "boards": [b.slug for b in store.list_boards()],
        }

    def detail(self, name: str) -> dict[str, Any]:
        jobs = self.jobs
        job = jobs.get(name)  # NotFound: 404
        runs = jobs.runs(job.name, limit=DETAIL_RUNS)
        now = jobs.store.now()
        data = job.to_json()
        data["profiles"] = job.spec.profiles
        data["next_slots"] = slots_json(next_slots(job, now), job.spec.schedule.timezone)
        data["runs"] = [run_json(run, tasks) for run, tasks in runs]
        data["now"] = now
        return data

    def dead(self) -> dict[str, Any]:
        jobs = self.jobs
        return {
            "runs": [dead_row(r, t, delivery=False) for r, t in jobs.dead()],
            "deliveries": [dead_row(r, t, delivery=True) for r, t in jobs.dead(deliveries=True)],
        }

    def preview(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """The next slots of a draft schedule; nothing is written."""
        schedule = schedule_from_form(data)
        slots = draft_slots(schedule, self.board.store.now())
        if not slots:
            raise UsageError("that time is in the past: a one-time job must fire later than now")
        return {
            "schedule_text": schedule.describe(),
            "timezone": schedule.timezone,
            "slots": slots_json(slots, schedule.timezone),
        }

    def events_since(self, after: int, limit: int) -> list[JobEvent]:
        return self.jobs.events(after, limit=limit)

    def last_event_id(self) -> int:
        jobs = self.jobs
        return newest_id(lambda after: bool(jobs.events(after, limit=1)))

    # -- writes -------------------------------------------------------------------------

    def check_profiles(self, spec: JobSpec) -> None:
        """`hermes jobs add`'s rule: every step runs on a profile of this home."""
        known = set(self.board.profiles())
        missing = [p for p in spec.profiles if p not in known]
        if missing:
            raise UsageError(
                f"unknown profile(s): {', '.join(missing)} (see `hermes profile list`)"
            )

    def add(self, data: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
        """Add the job the form describes: its row, and its delivery secret (None
        without --deliver), which the caller shows once."""
        spec = spec_from_form(data)
        self.check_profiles(spec)
        job, secret = self.jobs.add(spec)
        return job_row(job, []), secret

    def pause(self, name: str) -> dict[str, Any]:
        return self._row(self.jobs.pause(name))

    def resume(self, name: str) -> dict[str, Any]:
        return self._row(self.jobs.resume(name))

    def run_now(self, name: str) -> dict[str, Any]:
        run = self.jobs.run_now(name, self.board.settings.read().jobs)
        return history_json(run)

    def retry(self, run_id: int) -> dict[str, Any]:
        """A dead-lettered run (its blocked step starts over) or delivery, again."""
        run = self.jobs.retry(run_id)  # NotFound 404, InvalidTransition 409
        data = history_json(run)
        data["job"] = run.job
        data["retried"] = "run" if run.state == ACTIVE else "delivery"
        return data

    def _row(self, job: Job) -> dict[str, Any]:
        runs = self.board.store.transact(
            lambda tx: book.runs_of(tx, job.name, HISTORY_RUNS), write=False
        )
        return job_row(job, runs)
