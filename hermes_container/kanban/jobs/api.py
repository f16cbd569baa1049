"""`Jobs`: the jobs' operations on a board store, one transaction each. The CLI, the
dashboard and the dispatcher's scheduler all go through here."""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from functools import partial

from hermes_container.kanban.jobs import book, delivery, fire, follow
from hermes_container.kanban.jobs.fire import LIVE_BOARDS, Limits
from hermes_container.kanban.jobs.model import Job, JobEvent, JobRun
from hermes_container.kanban.jobs.settings import JobsSettings
from hermes_container.kanban.jobs.spec import JobSpec
from hermes_container.kanban.model import RetryPolicy, Task
from hermes_container.kanban.store import Store
from hermes_container.kanban.tx import Tx, placeholders

JOB_KEY_PREFIX = "job:"


class Jobs:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- definitions ------------------------------------------------------------------

    def add(self, spec: JobSpec) -> tuple[Job, str | None]:
        """Add a job; its delivery secret (shown once, never again) when it delivers."""
        secret = secrets.token_urlsafe(32) if spec.deliver else None
        job = self.store.transact(lambda tx: book.add(tx, spec, secret))
        return job, secret

    def get(self, name: str) -> Job:
        return self.store.transact(lambda tx: book.load(tx, name), write=False)

    def all(self, board: str | None = None) -> list[Job]:
        return self.store.transact(lambda tx: book.list_jobs(tx, board), write=False)

    def pause(self, name: str) -> Job:
        return self.store.transact(lambda tx: book.set_paused(tx, name, True))

    def resume(self, name: str) -> Job:
        return self.store.transact(lambda tx: book.set_paused(tx, name, False))

    def remove(self, name: str) -> Job:
        return self.store.transact(lambda tx: book.remove(tx, name))

    # -- runs -------------------------------------------------------------------------

    def run_now(self, name: str, settings: JobsSettings | None = None) -> JobRun:
        limits = Limits((settings or JobsSettings()).max_concurrent)
        return self.store.transact(lambda tx: fire.run_now(tx, name, limits))

    def get_run(self, run_id: int) -> JobRun:
        return self.store.transact(lambda tx: book.get_run(tx, run_id), write=False)

    def runs(
        self, name: str, limit: int = 50, before: int | None = None
    ) -> list[tuple[JobRun, list[Task]]]:
        """A job's runs, newest first, each with its tasks (step order)."""

        def read(tx: Tx) -> list[tuple[JobRun, list[Task]]]:
            found = book.runs_of(tx, name, limit, before)
            tasks = book.run_tasks(tx, [r.id for r in found])
            return [(run, tasks[run.id]) for run in found]

        return self.store.transact(read, write=False)

    def run_tasks(self, run_ids: Sequence[int]) -> dict[int, list[Task]]:
        return self.store.transact(lambda tx: book.run_tasks(tx, list(run_ids)), write=False)

    def dead(self, *, deliveries: bool = False) -> list[tuple[JobRun, list[Task]]]:
        def read(tx: Tx) -> list[tuple[JobRun, list[Task]]]:
            found = book.dead_letters(tx, deliveries=deliveries)
            tasks = book.run_tasks(tx, [r.id for r in found])
            return [(run, tasks[run.id]) for run in found]

        return self.store.transact(read, write=False)

    def retry(self, run_id: int) -> JobRun:
        return self.store.transact(lambda tx: book.retry(tx, run_id))

    def events(
        self, after_id: int = 0, *, job: str | None = None, limit: int = 1000
    ) -> list[JobEvent]:
        return self.store.transact(
            partial(book.events_since, after_id=after_id, job=job, limit=limit), write=False
        )

    # -- the scheduler's steps ---------------------------------------------------------

    def fire_due(self, limits: Limits) -> list[JobRun]:
        return self.store.transact(lambda tx: fire.fire_due(tx, limits))

    def start_queued(self, limits: Limits) -> list[int]:
        return self.store.transact(lambda tx: fire.start_queued(tx, limits))

    def follow(self, on_finished: follow.OnFinished | None = None) -> int:
        """Translate new board events of job tasks (a read first: idle ticks write nothing)."""
        if not self.store.transact(follow.pending, write=False):
            return 0
        return self.store.transact(lambda tx: follow.follow(tx, on_finished))

    def lease_deliveries(
        self, limit: int, timeout: float, skip: Sequence[int] = ()
    ) -> list[delivery.Delivery]:
        return self.store.transact(lambda tx: delivery.lease_due(tx, limit, timeout, skip))

    def record_delivery(
        self, item: delivery.Delivery, error: str | None, status: int | None, settings: JobsSettings
    ) -> None:
        rng = self.store.rng
        self.store.transact(lambda tx: delivery.record(tx, item, error, status, rng, settings))

    def next_due(self) -> float | None:
        """The next moment the scheduler has work: a slot or a delivery's retry."""

        def read(tx: Tx) -> float | None:
            row = tx.one(
                "SELECT (SELECT MIN(next_slot) FROM kanban_jobs WHERE paused = 0 "
                f"AND board IN ({LIVE_BOARDS})), "
                "(SELECT MIN(delivery_next_at) FROM kanban_job_runs WHERE delivery = 'pending')"
            )
            values = [float(v) for v in (row or ()) if v is not None]
            return min(values) if values else None

        return self.store.transact(read, write=False)

    def policies(self, tasks: Sequence[Task]) -> dict[int, RetryPolicy]:
        """The retry policy of each job task among `tasks` (its job's delays)."""
        ids = [
            t.id
            for t in tasks
            if t.idempotency_key and t.idempotency_key.startswith(JOB_KEY_PREFIX)
        ]
        if not ids:
            return {}

        def read(tx: Tx) -> dict[int, RetryPolicy]:
            rows = tx.all(
                "SELECT t.task_id, j.spec FROM kanban_job_tasks t "
                "JOIN kanban_job_runs r ON r.id = t.run_id "
                "JOIN kanban_jobs j ON j.name = r.job "
                f"WHERE t.task_id IN ({placeholders(len(ids))})",
                ids,
            )
            out = {}
            for task_id, spec_text in rows:
                spec = json.loads(spec_text)
                out[int(task_id)] = RetryPolicy(
                    backoff_seconds=float(spec["retry_delay"]),
                    backoff_max_seconds=float(spec["retry_max_delay"]),
                )
            return out

        return self.store.transact(read, write=False)
