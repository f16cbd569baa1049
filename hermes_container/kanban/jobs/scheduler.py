"""The jobs' part of the dispatcher service, run by its loop (kanban/daemon.py) before
each round of board ticks: follow runs, fire due slots, start queued runs, deliver.

Everything it decides is in the board store; it keeps in memory only the delivery
threads in flight and when each job step's gateway was first seen down."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable

from hermes_container.home import HermesHome
from hermes_container.kanban.jobs import output
from hermes_container.kanban.jobs.api import Jobs
from hermes_container.kanban.jobs.delivery import Delivery, send
from hermes_container.kanban.jobs.fire import Limits
from hermes_container.kanban.jobs.follow import Finished
from hermes_container.kanban.jobs.settings import JobsSettings
from hermes_container.kanban.store import Store
from hermes_container.metrics.dispatch import count_job_event, observe_slot_lag

log = logging.getLogger("hermes.jobs")


def _count(kinds: list[tuple[str, str]]) -> None:
    for (board, kind), count in Counter(kinds).items():
        count_job_event(board, kind, count)


MAX_DELIVERIES_IN_FLIGHT = 4


class Scheduler:
    def __init__(
        self, home: HermesHome, store: Store, settings: Callable[[], JobsSettings]
    ) -> None:
        self.home = home
        self.jobs = Jobs(store)
        store.job_event_observer = _count
        self._settings = settings
        self._sending: dict[int, threading.Thread] = {}
        self._down_since: dict[int, float] = {}  # job task id -> monotonic first seen down

    def tick(self) -> float | None:
        """One pass; the next moment a slot or a delivery retry is due (None: none)."""
        settings = self._settings()
        limits = Limits(settings.max_concurrent)
        self.jobs.follow(self._save)
        for run in self.jobs.fire_due(limits):
            log.info("job %s: slot %s %s (run %s)", run.job, run.slot, run.state, run.id)
            observe_slot_lag(run.created_at - run.slot, run.board)
        self.jobs.start_queued(limits)
        self._deliver(settings)
        return self.jobs.next_due()

    def _save(self, finished: Finished) -> None:
        run, task = finished.run, finished.task
        try:
            output.save_result(self.home.root, run.job, run.slot, task.result or "")
        except OSError as exc:  # a full disk must not stop the run's record
            log.warning("job %s: result of run %s not saved: %s", run.job, run.id, exc)

    # -- delivery -------------------------------------------------------------------

    def _deliver(self, settings: JobsSettings) -> None:
        for run_id, thread in list(self._sending.items()):
            if not thread.is_alive():
                del self._sending[run_id]
        if len(self._sending) >= MAX_DELIVERIES_IN_FLIGHT:
            return
        room = MAX_DELIVERIES_IN_FLIGHT - len(self._sending)
        leased = self.jobs.lease_deliveries(
            room, settings.delivery_timeout_seconds, skip=list(self._sending)
        )
        for item in leased:
            thread = threading.Thread(
                target=self._send, args=(item, settings), name=f"deliver-{item.run_id}", daemon=True
            )
            self._sending[item.run_id] = thread
            thread.start()

    def _send(self, item: Delivery, settings: JobsSettings) -> None:
        error, status = send(item, settings.delivery_timeout_seconds)
        if error:
            log.warning("job %s: delivery of run %s failed: %s", item.job, item.run_id, error)
        try:
            self.jobs.record_delivery(item, error, status, settings)
        except Exception as exc:  # the lease runs out and the delivery is tried again
            log.warning("job %s: delivery of run %s not recorded: %s", item.job, item.run_id, exc)

    def wait_deliveries(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in list(self._sending.values()):
            thread.join(max(0.0, deadline - time.monotonic()))

    # -- gateways that stay down ---------------------------------------------------------

    def gateway_down(self, task_ids: Iterable[int]) -> list[int]:
        """Job tasks whose gateway has now been down past the grace (the daemon fails
        them, a counted failure); the clock starts when a task is first seen waiting."""
        grace = self._settings().gateway_grace_seconds
        now = time.monotonic()
        waiting = set(task_ids)
        for task_id in list(self._down_since):
            if task_id not in waiting:
                del self._down_since[task_id]
        overdue = []
        for task_id in waiting:
            first = self._down_since.setdefault(task_id, now)
            if now - first >= grace:
                overdue.append(task_id)
        return overdue
