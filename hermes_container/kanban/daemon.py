"""The dispatcher as a long-running service (`hermes kanban daemon`, the s6-rc longrun
`dispatcher`, and a thread-free part of `hermes supervise`).

It sleeps until something can have changed: the board announced a write (wake.py), a
run of its own finished (its outcome is such a write), a retry time or another
holder's claim expiry arrives (`next_due`), its own claims need renewing, or the
dispatch interval passes. Idle, that is one select() per interval and no queries.
SIGTERM/SIGINT stop it after the tick in progress; runs still in flight are left to
their claims (the next dispatcher reclaims them at once: same host, our pid gone).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from types import FrameType

from hermes_container.home import HermesHome
from hermes_container.kanban import holders, wake
from hermes_container.kanban.dispatcher import Dispatcher, TickReport
from hermes_container.kanban.errors import InvalidTransition, NotFound, NotHolder
from hermes_container.kanban.jobs.scheduler import Scheduler
from hermes_container.kanban.model import ClaimLimits
from hermes_container.kanban.store import Store

log = logging.getLogger("hermes.kanban")

# After a failed tick (the database went away), wait this long before the next.
ERROR_PAUSE_SECONDS = 5.0
# On SIGTERM, runs in flight get this long to finish before they are handed back
# (s6 waits longer than this before it sends SIGKILL).
STOP_GRACE_SECONDS = 3.0
CHECKPOINT_EVERY_SECONDS = 10.0
GATEWAY_RECHECK_SECONDS = 2.0


def summary(report: TickReport) -> str:
    parts = [f"board {report.board}:"]
    for name in (
        "reclaimed",
        "timed_out",
        "gave_up",
        "promoted",
        "auto_assigned_default",
        "spawned",
        "skipped_per_profile_capped",
        "skipped_gateway_down",
        "skipped_nonspawnable",
        "skipped_unassigned",
        "skipped_board_capped",
    ):
        value = getattr(report, name)
        if value:
            parts.append(f"{name}={len(value)}")
    parts.append(f"({report.duration_ms:.1f} ms)")
    return " ".join(parts)


class Daemon:
    def __init__(
        self,
        home: HermesHome,
        store: Store,
        *,
        boards: list[str] | None = None,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        self.home, self.store = home, store
        self.dispatcher = dispatcher or Dispatcher(home, store)
        self.scheduler = Scheduler(home, store, lambda: self.dispatcher.settings().jobs)
        self.only_boards = boards
        self.stopping = False
        self._last_checkpoint = time.monotonic()
        self._pipe_r, self._pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def stop(self) -> None:
        """Ask the loop to end after its current tick (safe from a signal handler)."""
        self.stopping = True
        with contextlib.suppress(OSError):
            os.write(self._pipe_w, b"x")

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop()

    def boards(self) -> list[str]:
        if self.only_boards is not None:
            return self.only_boards
        return [b.slug for b in self.store.list_boards()]

    def run_once(self) -> float | None:
        """One tick of every board; the next moment a tick is due for a scheduled
        reason (None: only a change or the interval wakes us)."""
        due: float | None = None
        from hermes_container.metrics.dispatch import observe_tick

        try:
            due = self.scheduler.tick()
        except Exception as exc:  # the board's own tasks go on whatever the jobs do
            log.error("jobs: scheduler pass failed: %s", exc)
        waiting: list[int] = []
        for board in self.boards():
            started = time.monotonic()
            report = self.dispatcher.tick(board)
            observe_tick(time.monotonic() - started, board)
            if report.busy():
                log.info("%s", summary(report))
            if report.skipped_gateway_down:
                waiting += report.skipped_gateway_down
                # Nothing announces a gateway coming back: look again soon, not at the
                # next interval (a probe of a down port costs a refused connect).
                soon = self.store.now() + GATEWAY_RECHECK_SECONDS
                due = soon if due is None else min(due, soon)
            nxt = self.store.next_due(board)
            if nxt is not None:
                due = nxt if due is None else min(due, nxt)
        self._fail_waiting_jobs(waiting)
        for outcome in self.dispatcher.reap():
            log.info("task %s: %s %s", outcome.task_id, outcome.kind, outcome.detail)
        self._carry()
        return due

    def _fail_waiting_jobs(self, waiting: list[int]) -> None:
        """A job step whose gateway stays down past the jobs' grace fails (counted, so it
        retries with backoff and can reach the dead-letter queue); other tasks wait."""
        tasks = self.store.get_tasks(waiting) if waiting else {}
        job_tasks = [t for t in tasks.values() if (t.idempotency_key or "").startswith("job:")]
        overdue = self.scheduler.gateway_down(t.id for t in job_tasks)
        if not overdue:
            return
        grace = self.dispatcher.settings().jobs.gateway_grace_seconds
        policies = self.scheduler.jobs.policies([tasks[t] for t in overdue])
        for task_id in overdue:
            task = tasks[task_id]
            try:
                run = self.store.claim(
                    self.dispatcher.holder,
                    ClaimLimits(claim_ttl_seconds=60.0),
                    board=task.board,
                    task_id=task_id,
                )
                if run is None:
                    continue  # started or changed meanwhile
                self.store.fail(
                    run,
                    f"the gateway of {task.assignee} stayed down for more than {grace:g}s",
                    policies.get(task_id),
                )
                log.warning("task %s: gateway of %s down past the grace", task_id, task.assignee)
            except (InvalidTransition, NotFound, NotHolder) as exc:
                log.debug("task %s: not failed: %s", task_id, exc)

    def _checkpoint_when_idle(self) -> None:
        """With nothing in flight, fold the board's WAL into its file (SQLite), at most
        every CHECKPOINT_EVERY_SECONDS: commits under load then seldom checkpoint."""
        if self.dispatcher.inflight:
            return
        now = time.monotonic()
        if now - self._last_checkpoint < CHECKPOINT_EVERY_SECONDS:
            return
        self._last_checkpoint = now
        try:
            self.store.checkpoint()
        except Exception as exc:  # a busy board: the next idle moment will do
            log.debug("checkpoint skipped: %s", exc)

    def _carry(self) -> None:
        """Copy the board's new events into the event ledger (never stops dispatching)."""
        from hermes_container.events.append import enabled, open_ledger
        from hermes_container.kanban.jobs.output import export_events
        from hermes_container.kanban.ledger_copy import carry

        if not enabled():
            return
        try:
            ledger = open_ledger(self.home.root)
            carry(self.store, ledger)
            export_events(self.home.root, ledger)
        except Exception as exc:  # busy or broken ledger: the cursor waits, nothing lost
            log.warning("event ledger: board events not copied yet: %s", exc)

    def run(self, install_signals: bool = True) -> None:
        if install_signals:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        listener = self.store.listen()
        holders.sweep(self.dispatcher.holders_dir)  # locks of dispatchers killed before
        log.info(
            "dispatcher started (holder %s pid %s)",
            self.dispatcher.holder.host,
            self.dispatcher.holder.pid,
        )
        last_renew = time.monotonic()
        try:
            while not self.stopping:
                settings = self.dispatcher.settings()
                try:
                    due = self.run_once()
                    pause = settings.dispatch_interval_seconds
                except Exception as exc:  # the board is unreachable: keep trying
                    log.error("tick failed: %s", exc)
                    due, pause = None, ERROR_PAUSE_SECONDS
                renew_every = settings.claim_ttl_seconds / 3
                if time.monotonic() - last_renew >= renew_every:
                    self.dispatcher.renew(settings.claim_ttl_seconds)
                    last_renew = time.monotonic()
                timeout = min(pause, renew_every - (time.monotonic() - last_renew))
                if due is not None:
                    timeout = min(timeout, max(0.0, due - self.store.now()) + 0.01)
                self._checkpoint_when_idle()
                if self.dispatcher.inflight:
                    # A run's outcome is announced too, but a lost announcement must not
                    # leave a finished run unreaped for a whole interval.
                    timeout = min(timeout, 1.0)
                if self.stopping:
                    break
                try:
                    wake.wait(listener, max(0.0, timeout), self._pipe_r)
                except ConnectionError as exc:
                    log.error("%s; reconnecting", exc)
                    listener.close()
                    time.sleep(ERROR_PAUSE_SECONDS)
                    listener = self.store.listen()
                self._drain_pipe()
        finally:
            listener.close()
            self._finish_inflight()
            self.scheduler.wait_deliveries(STOP_GRACE_SECONDS)
            self.dispatcher.close()

    def _finish_inflight(self) -> None:
        """Give runs in flight a moment to finish, then hand the rest back to the board
        (ready again, no failure counted) rather than leave them to a claim's expiry."""
        for outcome in self.dispatcher.wait_all(timeout=STOP_GRACE_SECONDS):
            log.info("task %s: %s %s", outcome.task_id, outcome.kind, outcome.detail)
        for task_run in list(self.dispatcher.inflight.values()):
            task_run.abort()
            try:
                self.store.release(task_run.run.id, reason="its dispatcher stopped")
                log.info("task %s: handed back (dispatcher stopping)", task_run.task.id)
            except Exception as exc:  # taken already, or the board is gone: claims expire
                log.warning("task %s: not handed back: %s", task_run.task.id, exc)

    def _drain_pipe(self) -> None:
        try:
            while os.read(self._pipe_r, 64):
                pass
        except OSError:
            pass
