"""What a scrape collects, besides nothing of its own process's registry.

- FilesCollector: the multiprocess files of every gateway and the dispatcher (sweeping
  first: files.py).
- SupervisionCollector: each profile's gateway as `hermes gateway status` sees it
  (service_status.gateway_status, read-only), at scrape time.
- BoardCollector: the board's task and run counts and the oldest ready task's age,
  three GROUP BY queries at scrape time.
- AuthCounters: the dashboard's logins, denials and login failures, counted in the
  dashboard's own process (it is the scraping process, so no files are needed).

Each collector's failure is its own: the scrape still carries the others, and
`hermes_metrics_collector_up{collector=...}` says which one failed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from hermes_container.errors import HermesError
from hermes_container.home import DEFAULT_PROFILE, HermesHome
from hermes_container.metrics import files, names

log = logging.getLogger("hermes.metrics")

SWEEP_WAIT_S = 2.0
# Threads reading gateway statuses (an s6-svstat spawn each, plus some Python): one per
# core; more only fight over the GIL (50 profiles on 2 busy cores: 47 ms with 2 threads,
# 68 with 1, 90-100 with 4 or 8).
STATUS_THREADS = min(8, os.cpu_count() or 2)
REREAD_S = 60.0  # a supervised status is read again after 30-60 s (per profile) at most
MAX_LABEL_SETS = 64  # per dashboard counter: a bound on series whatever the input


class FilesCollector:
    """Merges the multiprocess files of this home's current generation."""

    name = "files"

    def __init__(self, home: Path) -> None:
        self.home = home

    def collect(self) -> Iterable[Any]:
        merge = files.library("multiprocess").MultiProcessCollector.merge
        directory = files.generation_dir(self.home)
        if not directory.is_dir():
            return []
        if not files.owned_dir(directory):
            # Not the owner (say root): read what is there, never sweep or lock.
            return list(merge(files.metric_files(directory)))
        with files.sweep_lock(directory, SWEEP_WAIT_S) as held:
            if not held:
                raise TimeoutError(f"{directory}: the sweep lock stayed busy")
            files.sweep_locked(directory)
            return list(merge(files.metric_files(directory)))


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class SupervisionCollector:
    """Up, ready, restarts, parked and desired-vs-observed of every profile's gateway.

    Each comes from `gateway_status`. For a supervised gateway that means an s6-svstat
    run (~1 ms of spawning each, 50 profiles: 35-45 ms on 2 idle cores, most of the
    scrape), so a supervised profile's status is reused while nothing it is read from
    changed: the slot's `supervise/status` (s6-supervise rewrites it, a new file, at
    every transition: up, down, ready, wanted up or down), its history and park marker,
    and the profile's state file; and never for longer than REREAD_S (spread over
    profiles) whatever the files say, which also bounds how long a dead s6-supervise
    goes unnoticed. An unsupervised profile (no slot) is read every time: its answer
    depends on a pid being alive, which no file records, and costs no spawn.
    """

    name = "supervision"

    def __init__(self, home: HermesHome) -> None:
        self.home = home
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future[list[Any]] | None = None
        self._workers: ThreadPoolExecutor | None = None
        # profile -> (what its files looked like, when read, the status then)
        self._cache: dict[str, tuple[tuple[Any, ...], float, Any]] = {}

    def _stamps(self, scandir: Path | None, profile: str) -> tuple[Any, ...] | None:
        """What a supervised profile's status is read from, as (inode, mtime, size)s;
        None for a profile without a slot (nothing to reuse)."""
        from hermes_container.home import STATE_FILE
        from hermes_container.supervision.history import HISTORY, PARKED
        from hermes_container.supervision.scandir import slot_name

        if scandir is None:
            return None
        slot = scandir / slot_name(profile)
        status = _stamp(slot / "supervise" / "status")
        if status is None:
            return None  # no slot, or one s6 does not supervise yet
        return (
            str(scandir),
            status,
            _stamp(slot / "data" / HISTORY),
            _stamp(slot / "data" / PARKED),
            _stamp(self.home.profile_dir(profile) / STATE_FILE),
        )

    def prefetch(self) -> None:
        """Start reading the statuses in the background: they mostly wait for
        s6-svstat, while the other collectors keep the CPU busy."""
        self._pending = self._executor().submit(self._statuses)

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="metrics")
        return self._pool

    def _statuses(self) -> list[Any]:
        from hermes_container.profiles import list_profiles
        from hermes_container.supervision import live_scandir
        from hermes_container.supervision.service_status import gateway_status

        scandir = live_scandir(self.home)
        now = time.monotonic()
        previous, fresh = self._cache, {}

        def one(profile: str) -> Any:
            stamps = self._stamps(scandir, profile)  # before reading: a change meanwhile
            cached = previous.get(profile)  # shows at the next scrape
            if (
                stamps is not None
                and cached is not None
                and cached[0] == stamps
                and now - cached[1] < REREAD_S * (0.5 + (zlib.crc32(profile.encode()) % 64) / 128)
            ):
                fresh[profile] = cached
                return cached[2]
            try:
                status = gateway_status(self.home, scandir, profile)
            except HermesError:
                return None  # deleted since it was listed
            if stamps is not None:
                fresh[profile] = (stamps, now, status)
            return status

        profiles = list_profiles(self.home)
        if scandir is None or len(profiles) < 2:  # files only: no process to wait for
            found = [one(p) for p in profiles]
        else:
            # Not the pool prefetch() runs on: its workers must stay free for these.
            found = list(self._status_pool().map(one, profiles))
        self._cache = fresh
        return [status for status in found if status is not None]

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        labels = ["profile"]
        up = GaugeMetricFamily(names.GATEWAY_UP, "1 when the gateway process runs", labels=labels)
        ready = GaugeMetricFamily(
            names.GATEWAY_READY, "1 when the gateway signalled readiness", labels=labels
        )
        parked = GaugeMetricFamily(
            names.GATEWAY_PARKED,
            "1 when the supervisor parked the slot (no restart until a start)",
            labels=labels,
        )
        desired = GaugeMetricFamily(
            names.GATEWAY_DESIRED_RUNNING,
            "1 when the desired state is running (the default profile's default)",
            labels=labels,
        )
        mismatch = GaugeMetricFamily(
            names.GATEWAY_MISMATCH,
            "1 when the gateway is down but desired running, or up but desired stopped",
            labels=labels,
        )
        restarts = CounterMetricFamily(
            names.GATEWAY_RESTARTS,
            "Unexpected deaths the supervisor restarted (or parked) since the slot was registered",
            labels=labels,
        )
        pending, self._pending = self._pending, None
        for status in pending.result() if pending is not None else self._statuses():
            p = [status.profile]
            wanted = status.desired_state or (
                "running" if status.profile == DEFAULT_PROFILE else None
            )
            up.add_metric(p, float(status.up))
            ready.add_metric(p, float(status.ready))
            parked.add_metric(p, float(status.parked))
            desired.add_metric(p, float(wanted == "running"))
            off = (wanted == "running" and not status.up) or (wanted == "stopped" and status.up)
            mismatch.add_metric(p, float(off))
            if status.restarts is not None:
                restarts.add_metric(p, float(status.restarts))
        return [up, ready, parked, desired, mismatch, restarts]

    def _status_pool(self) -> ThreadPoolExecutor:
        if self._workers is None:
            self._workers = ThreadPoolExecutor(STATUS_THREADS, thread_name_prefix="metrics-s6")
        return self._workers

    def close(self) -> None:
        for pool in (self._pool, self._workers):
            if pool is not None:
                pool.shutdown(wait=False)


_SQL = {
    "boards": "SELECT slug FROM kanban_boards",
    "tasks": "SELECT board, status, COUNT(*) FROM kanban_tasks GROUP BY board, status",
    "runs": (
        "SELECT t.board, r.outcome, COUNT(*) FROM kanban_runs r "
        "JOIN kanban_tasks t ON t.id = r.task_id "
        "WHERE r.outcome IS NOT NULL GROUP BY t.board, r.outcome"
    ),
    # A ready task has waited since its creation, or since its retry time if it has one.
    "oldest_ready": (
        "SELECT board, MIN(CASE WHEN not_before IS NOT NULL AND not_before > created_at "
        "THEN not_before ELSE created_at END) FROM kanban_tasks "
        "WHERE status = 'ready' GROUP BY board"
    ),
    "jobs": "SELECT board, paused, COUNT(*) FROM kanban_jobs GROUP BY board, paused",
    "job_runs": "SELECT board, state, COUNT(*) FROM kanban_job_runs GROUP BY board, state",
    "job_deliveries": (
        "SELECT board, delivery, COUNT(*) FROM kanban_job_runs "
        "WHERE delivery IS NOT NULL GROUP BY board, delivery"
    ),
}


def _job_families(found: dict[str, Any]) -> list[Any]:
    from prometheus_client.core import GaugeMetricFamily

    jobs = GaugeMetricFamily(
        names.JOBS, "Scheduled jobs by board and whether paused", labels=["board", "paused"]
    )
    for board, paused, n in sorted(found["jobs"]):
        jobs.add_metric([str(board), "true" if paused else "false"], float(n))
    runs = GaugeMetricFamily(
        names.JOB_RUNS,
        "Job runs by state (queued, active, completed, dead_lettered, skipped, cancelled)",
        labels=["board", "state"],
    )
    for board, state, n in sorted(found["job_runs"]):
        runs.add_metric([str(board), str(state)], float(n))
    deliveries = GaugeMetricFamily(
        names.JOB_DELIVERIES,
        "Deliveries of job results by state (pending, delivered, dead)",
        labels=["board", "state"],
    )
    for board, state, n in sorted(found["job_deliveries"]):
        deliveries.add_metric([str(board), str(state)], float(n))
    return [jobs, runs, deliveries]


class BoardCollector:
    """Tasks by status, finished runs by outcome and the oldest ready task's age, per
    board. The store is opened at the first scrape that finds a board (a SQLite board
    that does not exist yet is not created by a scrape), and again after a failure."""

    name = "board"

    def __init__(self, home: HermesHome, env: Mapping[str, str] | None = None) -> None:
        self.home = home
        self.env = env
        self._store: Any = None
        self._lock = threading.Lock()

    def _open(self) -> Any:
        from hermes_container.kanban.store import database_url, open_store, sqlite_path

        if self._store is None:
            environ = os.environ if self.env is None else self.env
            if not database_url(environ) and not sqlite_path(self.home).exists():
                return None
            self._store = open_store(self.home, environ)
        return self._store

    def _query(self) -> dict[str, Any] | None:
        store = self._open()
        if store is None:
            return None

        def read(tx: Any) -> dict[str, Any]:
            found = {name: tx.all(sql) for name, sql in _SQL.items()}
            found["now"] = tx.now
            return found

        try:
            # One read transaction: the Store protocol has no aggregate queries.
            result: dict[str, Any] = store.transact(read, write=False)
        except Exception:
            self.close()  # reopened at the next scrape
            raise
        return result

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from hermes_container.kanban.model import STATUSES

        with self._lock:
            found = self._query()
        if found is None:
            return []
        boards, task_rows, run_rows = found["boards"], found["tasks"], found["runs"]
        ready_rows, now = found["oldest_ready"], found["now"]
        tasks = GaugeMetricFamily(
            names.BOARD_TASKS, "Tasks on the board by status", labels=["board", "status"]
        )
        counts = {(str(b), str(s)): int(n) for b, s, n in task_rows}
        slugs = sorted({str(row[0]) for row in boards} | {b for b, _ in counts})
        for slug in slugs:
            for status in STATUSES:
                tasks.add_metric([slug, status], float(counts.get((slug, status), 0)))
        runs = CounterMetricFamily(
            names.BOARD_RUNS, "Finished runs by outcome", labels=["board", "outcome"]
        )
        for board, outcome, n in sorted(run_rows):
            runs.add_metric([str(board), str(outcome)], float(n))
        oldest = GaugeMetricFamily(
            names.BOARD_OLDEST_READY,
            "Seconds the oldest ready task has waited (since its creation or retry time); "
            "0 with none ready",
            labels=["board"],
        )
        since = {str(b): float(t) for b, t in ready_rows if t is not None}
        for slug in slugs:
            oldest.add_metric([slug], max(0.0, now - since[slug]) if slug in since else 0.0)
        return [tasks, runs, oldest, *_job_families(found)]

    def close(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            try:
                store.close()
            except Exception as exc:
                log.debug("metrics: closing the board store: %s", exc)


class AuthCounters:
    """The dashboard's login outcomes, fed by AuditLog.observer (auth/audit.py)."""

    name = "dashboard"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, dict[tuple[str, ...], int]] = {
            names.LOGINS: {},
            names.LOGIN_DENIALS: {},
            names.LOGIN_FAILURES: {},
        }

    def _add(self, family: str, labels: tuple[str, ...]) -> None:
        with self._lock:
            counts = self._counts[family]
            if labels not in counts and len(counts) >= MAX_LABEL_SETS:
                labels = tuple("other" for _ in labels)
            counts[labels] = counts.get(labels, 0) + 1

    def record(self, event: str, fields: Mapping[str, Any]) -> None:
        provider = str(fields.get("provider") or "unknown")
        if event == "login_success":
            self._add(names.LOGINS, (provider,))
        elif event == "login_denied":
            self._add(names.LOGIN_DENIALS, (provider,))
        elif event == "login_failure":
            self._add(names.LOGIN_FAILURES, (provider, str(fields.get("reason") or "unknown")))

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily

        specs: list[tuple[str, str, list[str]]] = [
            (names.LOGINS, "Successful dashboard logins", ["provider"]),
            (
                names.LOGIN_DENIALS,
                "Logins refused by the allowlist (the provider vouched for the identity)",
                ["provider"],
            ),
            (
                names.LOGIN_FAILURES,
                "Logins that failed before an identity was known, by reason",
                ["provider", "reason"],
            ),
        ]
        with self._lock:
            snapshot = {family: dict(counts) for family, counts in self._counts.items()}
        families = []
        for family, doc, labels in specs:
            metric = CounterMetricFamily(family, doc, labels=labels)
            for values, count in sorted(snapshot[family].items()):
                metric.add_metric(list(values), float(count))
            families.append(metric)
        return families


Collector = FilesCollector | SupervisionCollector | BoardCollector | AuthCounters
Observer = Callable[[str, Mapping[str, Any]], None]
