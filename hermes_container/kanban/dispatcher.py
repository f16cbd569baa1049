"""The dispatcher's tick: put the board's ready work on the profiles' gateways.

A tick, in order (each step's results are in its TickReport):
1. reclaim claims whose holder is gone: same host and a dead pid (or our own pid from
   before a restart) at once, any holder once its claim expired; no failure counted;
2. time out runs past their task's max_runtime (counted like a failure);
3. promote todo tasks whose parents are done and whose not_before has passed;
4. dispatch ready tasks by priority, then age: an unassigned one goes to
   kanban.default_assignee (or is skipped); an assignee that is not a profile here, or
   whose gateway does not answer, is skipped; the per-profile and board caps hold back
   the rest; each remaining task is claimed (the store re-checks the caps atomically,
   which is what makes them hold across dispatchers) and run in a thread of its own.

A dry run reports what a real tick would do and writes nothing; it counts its would-be
spawns against the caps, so it reports the same subset. (One difference remains: a
task a real tick reclaims is ready again at once and may be dispatched in that same
tick; the preview lists it as reclaimed only.)
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hermes_container.home import HermesHome
from hermes_container.kanban import holders
from hermes_container.kanban.errors import InvalidTransition, NotFound, NotHolder
from hermes_container.kanban.gateways import Endpoint, GatewayDirectory
from hermes_container.kanban.jobs.api import Jobs
from hermes_container.kanban.model import BLOCKED, DEFAULT_BOARD, Holder, Run, Task
from hermes_container.kanban.runner import Outcome, TaskRun
from hermes_container.kanban.runs import cap
from hermes_container.kanban.settings import KanbanSettings, SettingsFile
from hermes_container.kanban.store import Store

log = logging.getLogger("hermes.kanban")

DEFAULT_ASSIGNEE_SOURCE = "kanban.default_assignee"
# A dispatcher times out its own runs at max_runtime itself; the tick steps in only
# this much later, for runs whose holder stalled or vanished.
TIMEOUT_GRACE_SECONDS = 2.0
# Threads one dispatcher runs at most, whatever the caps say (they may say "none").
DEFAULT_WORKERS = 64


def _namespace_id() -> str:
    """What tells this host's processes from another's when both use one hostname
    (containers on the host network, or several hosts cloned from one image)."""
    parts = []
    for path in ("/proc/sys/kernel/random/boot_id",):
        with contextlib.suppress(OSError):
            parts.append(Path(path).read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(os.readlink("/proc/self/ns/pid"))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:8]


def this_host() -> str:
    """The holder's host: the hostname plus the pid namespace it lives in. A pid is
    only checked for liveness by a dispatcher that sees the same pid namespace."""
    return f"{socket.gethostname()}#{_namespace_id()}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    except OSError:
        return False
    return True


@dataclass
class TickReport:
    board: str
    dry_run: bool
    default_assignee: str | None = None
    spawned: list[dict[str, Any]] = field(default_factory=list)  # {task_id, assignee}
    auto_assigned_default: list[int] = field(default_factory=list)
    skipped_unassigned: list[int] = field(default_factory=list)
    skipped_nonspawnable: list[int] = field(default_factory=list)
    skipped_gateway_down: list[int] = field(default_factory=list)
    # {task_id, assignee, current}
    skipped_per_profile_capped: list[dict[str, Any]] = field(default_factory=list)
    # held back by the board-wide cap or this dispatcher's thread limit
    skipped_board_capped: list[int] = field(default_factory=list)
    # claimed by another dispatcher (or changed) between our look and our claim
    skipped_taken: list[int] = field(default_factory=list)
    reclaimed: list[int] = field(default_factory=list)
    promoted: list[int] = field(default_factory=list)
    timed_out: list[int] = field(default_factory=list)
    gave_up: list[int] = field(default_factory=list)
    # filled in by `dispatch` (foreground) once the spawned runs finished
    completed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    rate_limited: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    duration_ms: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def busy(self) -> bool:
        """Whether anything happened (the daemon logs only ticks that did something)."""
        return bool(
            self.spawned
            or self.auto_assigned_default
            or self.reclaimed
            or self.timed_out
            or self.gave_up
            or self.promoted
        )

    def add_outcome(self, outcome: Outcome) -> None:
        bucket = {
            "completed": self.completed,
            "failed": self.failed,
            "timed_out": self.timed_out,
            "gave_up": self.gave_up,
            "rate_limited": self.rate_limited,
            # released unrun: the gateway stopped between the probe and the request
            "gateway_down": self.skipped_gateway_down,
        }.get(outcome.kind)
        if bucket is not None:
            bucket.append(outcome.task_id)
            bucket.sort()  # runs finish in any order; reports list ids in order


class Dispatcher:
    """Ticks on a board store and keeps the runs it started: in-flight threads, whose
    claims `renew()` extends until their outcome is written."""

    def __init__(
        self,
        home: HermesHome,
        store: Store,
        *,
        holder: Holder | None = None,
        settings: Callable[[], KanbanSettings] | None = None,
        gateways: GatewayDirectory | None = None,
        workers: int = DEFAULT_WORKERS,
    ) -> None:
        self.home, self.store = home, store
        self.holder = holder or Holder(this_host(), os.getpid())
        self._settings = settings or SettingsFile(home).read
        self.gateways = gateways or GatewayDirectory(home)
        self.workers = max(1, workers)
        self.inflight: dict[int, TaskRun] = {}  # run id -> its thread
        self._warned: set[str] = set()
        self.holders_dir = home.root / "kanban" / holders.HOLDERS_DIR
        self._life: holders.LifeLock | None = None  # taken before our first claim

    def close(self) -> None:
        """Give up our life lock (a clean exit; a killed process loses it anyway)."""
        if self._life is not None:
            self._life.release()
            self._life = None

    # -- bookkeeping of our own runs --------------------------------------------------

    def reap(self) -> list[Outcome]:
        """Outcomes of the runs that finished since the last call."""
        done = [r for r in self.inflight.values() if r.done()]
        for task_run in done:
            del self.inflight[task_run.run.id]
        return [r.outcome for r in done if r.outcome is not None]

    def renew(self, ttl: float) -> None:
        """Push our open claims' expiry out; a claim someone took back is abandoned."""
        for task_run in list(self.inflight.values()):
            if task_run.done() or task_run.lost:
                continue
            try:
                task_run.run = self.store.extend_claim(task_run.run, ttl)
            except (NotHolder, NotFound):
                log.warning("task %s: its claim was taken back; abandoning it", task_run.task.id)
                task_run.abort()

    def wait_all(
        self, timeout: float | None = None, renew_every: float | None = None
    ) -> list[Outcome]:
        """Block until every run we started has finished, renewing their claims every
        third of the claim TTL (as the daemon does), so that no other dispatcher takes
        a long run of a foreground `dispatch` back as expired."""
        outcomes: list[Outcome] = []
        deadline = None if timeout is None else time.monotonic() + timeout
        last_renew = time.monotonic()
        while self.inflight:
            for task_run in list(self.inflight.values()):
                task_run.thread.join(0.05)
            outcomes += self.reap()
            ttl = self._settings().claim_ttl_seconds
            if time.monotonic() - last_renew >= (renew_every or ttl / 3):
                self.renew(ttl)
                last_renew = time.monotonic()
            if deadline is not None and time.monotonic() >= deadline:
                break
        return outcomes

    # -- the tick ---------------------------------------------------------------------

    def settings(self) -> KanbanSettings:
        settings = self._settings()
        for warning in settings.warnings:
            if warning not in self._warned:  # once per distinct problem, not per tick
                self._warned.add(warning)
                log.warning("%s", warning)
        return settings

    def tick(
        self,
        board: str = DEFAULT_BOARD,
        *,
        dry_run: bool = False,
        max_spawn: int | None = None,
    ) -> TickReport:
        started = time.perf_counter()
        settings = self.settings()
        report = TickReport(board=board, dry_run=dry_run, warnings=list(settings.warnings))
        report.default_assignee = settings.default_assignee
        self.gateways.refresh()
        running = {t.id: t for t in self.store.list_tasks(board=board, status="running")}
        runs = self.store.open_runs(board)
        now = self.store.now()
        gone = self._reclaim(runs, now, dry_run, report)
        self._time_out(runs, running, gone, now, settings, dry_run, report)
        if dry_run:
            queue = self.store.ready_queue(board, with_promotable=True)
            ready_now = {task_id for task_id, _ in self.store.ready_queue(board)}
            report.promoted = [task_id for task_id, _ in queue if task_id not in ready_now]
        else:
            report.promoted = self.store.promote(board)
            queue = self.store.ready_queue(board)
        counts = self.store.running_counts(board)
        if dry_run:
            # A real tick counts after its releases and time-outs: so does the preview.
            for task_id in {*report.reclaimed, *report.timed_out}:
                task = running.get(task_id)
                if task is not None and task.assignee and counts.get(task.assignee, 0) > 0:
                    counts[task.assignee] -= 1
        self._dispatch(board, queue, counts, settings, dry_run, max_spawn, report)
        report.duration_ms = round((time.perf_counter() - started) * 1000, 3)
        return report

    def _reclaim(self, runs: list[Run], now: float, dry_run: bool, report: TickReport) -> set[int]:
        gone: set[int] = set()
        for run in runs:
            if run.id in self.inflight:
                continue  # ours and alive; renew() keeps it from expiring
            reason = self._why_gone(run, now)
            if reason is None:
                continue
            gone.add(run.id)
            if not dry_run:
                try:
                    self.store.release(run.id, reason=reason)
                except (NotHolder, NotFound):
                    continue  # finished or released meanwhile
            report.reclaimed.append(run.task_id)
        return gone

    def _why_gone(self, run: Run, now: float) -> str | None:
        """Why `run`'s holder no longer holds it, or None while it may."""
        if run.host == self.holder.host and run.pid == self.holder.pid:
            return "its dispatcher restarted"  # our pid, but not a run of ours
        verdict = holders.gone(self.holders_dir, Holder(run.host, run.pid))
        if verdict is True:
            return f"its dispatcher (pid {run.pid} on {run.host}) is gone"
        if verdict is None and run.host == self.holder.host and not pid_alive(run.pid):
            return f"its dispatcher (pid {run.pid}) is gone"
        if run.claim_expires_at <= now:
            return f"its claim by {run.host} expired"
        return None

    def _time_out(
        self,
        runs: list[Run],
        running: dict[int, Task],
        gone: set[int],
        now: float,
        settings: KanbanSettings,
        dry_run: bool,
        report: TickReport,
    ) -> None:
        overdue = [
            (run, task)
            for run in runs
            if run.id not in gone
            and (task := running.get(run.task_id)) is not None
            and task.max_runtime is not None
            and now - run.claimed_at > task.max_runtime + TIMEOUT_GRACE_SECONDS
        ]
        policies = Jobs(self.store).policies([task for _, task in overdue]) if overdue else {}
        for run, task in overdue:
            if dry_run:
                report.timed_out.append(task.id)
                continue
            try:
                after = self.store.time_out(run.id, policies.get(task.id, settings.retry_policy))
            except (NotHolder, NotFound):
                continue
            mine = self.inflight.get(run.id)
            if mine is not None:
                mine.abort()
            report.timed_out.append(task.id)
            if after.status == BLOCKED:
                report.gave_up.append(task.id)

    def _dispatch(
        self,
        board: str,
        queue: Iterable[tuple[int, str | None]],
        counts: dict[str, int],
        settings: KanbanSettings,
        dry_run: bool,
        max_spawn: int | None,
        report: TickReport,
    ) -> None:
        total = sum(counts.values())
        board_cap = cap(settings.max_in_progress)
        profile_cap = cap(settings.max_in_progress_per_profile)
        room_here = self.workers - len(self.inflight)
        spawned = 0
        chosen: dict[int, Endpoint] = {}  # in dispatch order
        for task_id, assigned in queue:
            full = (
                (board_cap is not None and total >= board_cap)
                or spawned >= room_here
                or (max_spawn is not None and spawned >= max_spawn)
            )
            if full:
                report.skipped_board_capped.append(task_id)
                continue
            assignee = assigned
            if assignee is None:
                if settings.default_assignee is None:
                    report.skipped_unassigned.append(task_id)
                    continue
                assignee = settings.default_assignee
                if not dry_run:
                    try:
                        self.store.assign(task_id, assignee, source=DEFAULT_ASSIGNEE_SOURCE)
                    except (InvalidTransition, NotFound):
                        report.skipped_taken.append(task_id)
                        continue
                report.auto_assigned_default.append(task_id)
            if not self.gateways.exists(assignee):
                report.skipped_nonspawnable.append(task_id)
                continue
            current = counts.get(assignee, 0)
            if profile_cap is not None and current >= profile_cap:
                report.skipped_per_profile_capped.append(
                    {"task_id": task_id, "assignee": assignee, "current": current}
                )
                continue
            endpoint = self.gateways.endpoint(assignee)
            if endpoint is None or not self.gateways.is_up(assignee):
                report.skipped_gateway_down.append(task_id)
                continue
            counts[assignee] = current + 1
            total += 1
            spawned += 1
            chosen[task_id] = endpoint
        if dry_run:
            report.spawned = [{"task_id": t, "assignee": e.profile} for t, e in chosen.items()]
        elif chosen:
            self._start(board, chosen, settings, report)

    def _start(
        self,
        board: str,
        chosen: dict[int, Endpoint],
        settings: KanbanSettings,
        report: TickReport,
    ) -> None:
        """Claim the chosen tasks in one transaction (the store re-checks the caps, which
        is what makes them hold across dispatchers), then run each in its thread."""
        if self._life is None:  # others must be able to tell when we are gone
            self._life = holders.LifeLock(self.holders_dir, self.holder)
        runs = self.store.claim_tasks(self.holder, list(chosen), settings.limits, board=board)
        claimed = {run.task_id: run for run in runs}
        tasks = self.store.get_tasks(list(claimed)) if claimed else {}
        policies = Jobs(self.store).policies(list(tasks.values()))
        for task_id, endpoint in chosen.items():
            run = claimed.get(task_id)
            if run is None:
                report.skipped_taken.append(task_id)  # another dispatcher was quicker
                continue
            task_run = TaskRun(
                self.store, run, tasks[task_id], endpoint, settings, policies.get(task_id)
            )
            self.inflight[run.id] = task_run
            task_run.start()
            report.spawned.append({"task_id": task_id, "assignee": endpoint.profile})
