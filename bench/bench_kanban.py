"""Kanban work layer: queue throughput, tick time, end to end, and a shared PostgreSQL board.

Each figure is printed beside a baseline measured in the same run:

1. queue throughput on SQLite: create + claim + complete of N no-op tasks through the
   board's Store API, against Huey's SQLite queue doing enqueue + dequeue + execute
   (which stores the task's result) of the same N tasks, in the same temp dir. Huey is
   measured twice: with its defaults (synchronous=FULL) and at synchronous=NORMAL, the
   durability the board uses; the target is judged against the latter, as the median
   of QUEUE_ROUNDS interleaved rounds. Reported beside it: the same by this process's
   CPU time, and what each side writes per task (write transactions, WAL frames and
   bytes, counted in one more run with the WAL's automatic checkpoint off).
   Target: >= 1.0x Huey.
2. tick time: Dispatcher.tick() on a board of 10,000 ready tasks for 50 profiles, each
   profile already at max_in_progress_per_profile = 1, so a tick examines every task and
   starts none; real and dry-run ticks. Baseline: `store.list_tasks(status="ready")` and
   the bare ready_queue read of the same board. Target: median <= 50 ms. A miss prints
   where the time goes (cProfile).
3. end to end: N tasks on the SQLite board run by a `hermes kanban daemon` through 4 real
   `hermes gateway run` processes to the fake provider (python -m tests.fake_upstream):
   tasks/s and ready->done p50/p99 from the board's events. Baseline: the same N chat
   completions sent straight to the gateways by a client with the same concurrency.
4. PostgreSQL: three `hermes kanban daemon` processes (each with a home of its own, the
   same profiles) on one board of N tasks, through the same gateways: tasks/s. Baseline:
   the same with one daemon. The server is started like tests/postgres_server.py does.

Exit status (bench/run_all.py's convention): 0 every target met, 1 a target missed,
2 the benchmark itself failed. Without PostgreSQL binaries part 4 is reported as not
run, unless HERMES_REQUIRE_POSTGRES=1 makes that an error.

    .venv/bin/python bench/bench_kanban.py [--queue-tasks 2000] [--e2e-tasks 1000]
        [--pg-tasks 2000] [--skip PART ...]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import http.client
import json
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402
from _ports import free_port  # noqa: E402

from hermes_container.envfile import read_env  # noqa: E402
from hermes_container.home import HermesHome  # noqa: E402
from hermes_container.kanban import sqlite_store  # noqa: E402
from hermes_container.kanban.dispatcher import Dispatcher  # noqa: E402
from hermes_container.kanban.model import ClaimLimits, Holder  # noqa: E402
from hermes_container.kanban.settings import DEFAULT_MAX_IN_PROGRESS  # noqa: E402
from hermes_container.kanban.store import (  # noqa: E402
    DATABASE_URL_ENV,
    Store,
    open_store,
    sqlite_path,
)
from hermes_container.profiles import create_profile, ensure_default_profile  # noqa: E402

TARGET_QUEUE_RATIO = 1.0
TARGET_TICK_MS = 50.0
TICK_TASKS = 10_000
TICK_PROFILES = 50
GATEWAYS = ("g1", "g2", "g3", "g4")
E2E_MAX_IN_PROGRESS = 16  # board-wide; the direct baseline uses as many client threads
E2E_PER_PROFILE = 4
START_TIMEOUT = 30.0


class BenchError(Exception):
    """The benchmark could not measure (not a missed target)."""


@dataclass
class Row:
    """One line of the final table."""

    figure: str
    value: str
    baseline: str
    verdict: str  # "met", "MISSED", "reported" or "not run"


ROWS: list[Row] = []


def pct(samples: list[float], q: int) -> float:
    if len(samples) < 2:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


def judged(met: bool) -> str:
    return "met" if met else "MISSED"


# -- 1. queue throughput --------------------------------------------------------------


CLAIM_BATCH = DEFAULT_MAX_IN_PROGRESS  # kanban.max_in_progress unset
QUEUE_ROUNDS = 5


@dataclass
class QueueRun:
    """One side's run: throughput by the wall clock and by this process's CPU time,
    and what it wrote (counted only in the counting pass: write transactions and WAL
    frames, with the WAL's automatic checkpoint off so that every frame stays in it)."""

    rate: float  # tasks/s, wall clock
    cpu_rate: float  # tasks per CPU second (user + system) of this process
    writes: int = 0
    wal_frames: int = 0
    wal_bytes: int = 0


def wal_written(db: Path) -> tuple[int, int]:
    """(frames, bytes) in the WAL of `db`, read from its header: frame = 24 + page size."""
    wal = db.with_name(db.name + "-wal")
    size = wal.stat().st_size if wal.exists() else 0
    if size < 32:
        return 0, 0
    page = int.from_bytes(wal.read_bytes()[8:12], "big")
    return (size - 32) // (24 + page), size - 32


def board_queue(directory: Path, n: int, *, count: bool = False) -> QueueRun:
    """create + claim + complete of n tasks through the Store API."""
    if count:
        # Counting pass only: the store's connection with no automatic checkpoint.
        saved, sqlite_store.WAL_AUTOCHECKPOINT_PAGES = sqlite_store.WAL_AUTOCHECKPOINT_PAGES, 0
    try:
        store = open_store(HermesHome(directory / "home"), {})
    finally:
        if count:
            sqlite_store.WAL_AUTOCHECKPOINT_PAGES = saved
    holder = Holder("bench", os.getpid())
    limits = ClaimLimits(max_in_progress=None, claim_ttl_seconds=3600)
    claims = 0
    try:
        started, cpu_started = time.perf_counter(), time.process_time()
        for i in range(n):
            store.create_task(f"no-op {i}", assignee="bench")
        done = 0
        # As a dispatcher's tick does: look at the queue, claim what the board's default
        # cap (kanban.max_in_progress: 8) lets run in one transaction, complete each.
        while queue := store.ready_queue(limit=CLAIM_BATCH):
            claims += 1
            for run in store.claim_tasks(holder, [task_id for task_id, _ in queue], limits):
                store.complete(run, "ok")
                done += 1
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        frames, written = wal_written(sqlite_path(HermesHome(directory / "home")))
        if done != n or len(store.list_tasks(status="done")) != n:
            raise BenchError(f"board queue: {done} of {n} tasks completed")
    finally:
        store.close()
    # Writes: each create, claim and complete is one transaction.
    return QueueRun(n / elapsed, n / cpu, n + claims + n, frames, written)


def huey_queue(
    directory: Path, n: int, synchronous_normal: bool, *, count: bool = False
) -> QueueRun:
    """enqueue + dequeue + execute (result stored) of n tasks with SqliteHuey."""
    from huey import SqliteHuey

    huey = SqliteHuey("bench", filename=str(directory / "huey.db"))
    if synchronous_normal:
        huey.storage.conn.execute("PRAGMA synchronous = NORMAL")
    writes = 0
    if count:
        huey.storage.conn.execute("PRAGMA wal_autocheckpoint = 0")

        def traced(statement: str) -> None:
            nonlocal writes
            writes += statement.lower().startswith("begin")  # its write transactions

        huey.storage.conn.set_trace_callback(traced)

    @huey.task()
    def noop(i: int) -> str:
        return "ok"

    try:
        started, cpu_started = time.perf_counter(), time.process_time()
        for i in range(n):
            noop(i)
        done = 0
        while (task := huey.dequeue()) is not None:
            huey.execute(task)
            done += 1
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        frames, written = wal_written(directory / "huey.db")
        stored = huey.storage.result_store_size()
        if done != n or stored != n:
            raise BenchError(f"huey: {done} of {n} tasks run, {stored} results stored")
    finally:
        huey.storage.close()
    return QueueRun(n / elapsed, n / cpu, writes, frames, written)


def part_queue(tmp: Path, n: int, rounds: int = QUEUE_ROUNDS) -> bool:
    print(f"\n== 1. queue throughput on SQLite: create + claim + complete, N = {n}")
    runs: dict[str, list[QueueRun]] = {"board": [], "huey-normal": [], "huey-default": []}
    for r in range(rounds):  # interleaved, so all three see the same machine state
        for label, run in (
            ("board", lambda d: board_queue(d, n)),
            ("huey-normal", lambda d: huey_queue(d, n, True)),
            ("huey-default", lambda d: huey_queue(d, n, False)),
        ):
            directory = tmp / f"queue-{r}-{label}"
            directory.mkdir()
            runs[label].append(run(directory))
            shutil.rmtree(directory)
    rate = {label: statistics.median(r.rate for r in rs) for label, rs in runs.items()}
    cpu_rate = {label: statistics.median(r.cpu_rate for r in rs) for label, rs in runs.items()}
    board, normal, default = rate["board"], rate["huey-normal"], rate["huey-default"]
    ratio = board / normal
    met = ratio >= TARGET_QUEUE_RATIO
    for label, name in (
        ("board", "board (Store API)"),
        ("huey-normal", "Huey, synchronous=NORMAL"),
        ("huey-default", "Huey, its defaults (FULL)"),
    ):
        rounds_text = fmt_list([r.rate for r in runs[label]])
        print(
            f"  {name:<28} {rate[label]:8,.0f} tasks/s  (rounds {rounds_text}); "
            f"{cpu_rate[label]:,.0f} per CPU second"
        )
    cpu_ratio = cpu_rate["board"] / cpu_rate["huey-normal"]
    print(
        f"  board / Huey(NORMAL) {ratio:.2f}x, / Huey(defaults) {board / default:.2f}x   "
        f"[target >= {TARGET_QUEUE_RATIO:.1f}x Huey: {judged(met)}]"
    )
    print(f"  by CPU time: board / Huey(NORMAL) {cpu_ratio:.2f}x (reported)")
    # What each writes, counted once more with the WAL kept whole.
    counted = {}
    for label, run in (
        ("board", lambda d: board_queue(d, n, count=True)),
        ("huey-normal", lambda d: huey_queue(d, n, True, count=True)),
    ):
        directory = tmp / f"queue-count-{label}"
        directory.mkdir()
        counted[label] = run(directory)
        shutil.rmtree(directory)
    for label, name in (("board", "board"), ("huey-normal", "Huey (NORMAL)")):
        c = counted[label]
        print(
            f"  {name:<14} per task: {c.writes / n:.2f} write transactions, "
            f"{c.wal_frames / n:.1f} WAL frames, {c.wal_bytes / n / 1024:.1f} KiB of WAL"
        )
    ROWS.append(
        Row(
            f"queue throughput, SQLite, N={n}",
            f"{board:,.0f} tasks/s",
            f"Huey {normal:,.0f}/s (defaults {default:,.0f}/s)",
            f"{ratio:.2f}x; >= 1.0x: {judged(met)}",
        )
    )
    ROWS.append(
        Row(
            "queue, by CPU time",
            f"{cpu_rate['board']:,.0f} tasks/CPU-s",
            f"Huey {cpu_rate['huey-normal']:,.0f}",
            f"{cpu_ratio:.2f}x; reported",
        )
    )
    b, h = counted["board"], counted["huey-normal"]
    ROWS.append(
        Row(
            "queue, WAL per task",
            f"{b.wal_frames / n:.1f} frames, {b.wal_bytes / n / 1024:.1f} KiB",
            f"Huey {h.wal_frames / n:.1f} frames, {h.wal_bytes / n / 1024:.1f} KiB",
            "reported",
        )
    )
    return met


def fmt_list(values: list[float]) -> str:
    return ", ".join(f"{v:,.0f}" for v in values)


# -- 2. tick time ---------------------------------------------------------------------


def set_kanban(home: HermesHome, **settings: Any) -> None:
    """Put `settings` in the `kanban:` section of the default profile's config.yaml."""
    path = home.root / "config.yaml"
    config = yaml.safe_load(path.read_text()) or {}
    config["kanban"] = settings
    path.write_text(yaml.safe_dump(config))


def timed(fn: Callable[[], object], times: int) -> list[float]:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def part_tick(tmp: Path, ticks: int = 9) -> bool:
    print(f"\n== 2. tick time: {TICK_TASKS:,} ready tasks, {TICK_PROFILES} profiles at their cap")
    home = HermesHome(tmp / "tick-home")
    ensure_default_profile(home)
    profiles = [f"p{i:02d}" for i in range(TICK_PROFILES)]
    for name in profiles:
        create_profile(home, name)
    set_kanban(home, max_in_progress=1000, max_in_progress_per_profile=1)
    store = open_store(home, {})
    try:
        # Each profile is at its cap with a task another host runs (its claim is far from
        # expiring, so the tick leaves it alone).
        elsewhere = Holder("elsewhere#bench", 1)
        hold = ClaimLimits(max_in_progress=None, claim_ttl_seconds=86_400)
        for name in profiles:
            task = store.create_task(f"running for {name}", assignee=name)
            if store.claim(elsewhere, hold, task_id=task.id) is None:
                raise BenchError(f"could not put {name} at its cap")
        started = time.perf_counter()
        for i in range(TICK_TASKS):
            store.create_task(f"task {i}", assignee=profiles[i % TICK_PROFILES], priority=i % 3)
        print(f"  board filled in {time.perf_counter() - started:.1f}s")
        dispatcher = Dispatcher(home, store)

        def tick(dry_run: bool) -> None:
            report = dispatcher.tick(dry_run=dry_run)
            if report.spawned or len(report.skipped_per_profile_capped) != TICK_TASKS:
                raise BenchError(
                    f"tick: spawned {len(report.spawned)}, capped "
                    f"{len(report.skipped_per_profile_capped)} of {TICK_TASKS}"
                )
            if report.warnings or report.reclaimed:
                raise BenchError(f"tick: warnings {report.warnings}, reclaimed {report.reclaimed}")

        tick(False)  # warm-up: first settings parse, page cache
        # Round-robin, so the four see the same machine state (other work on the box).
        samples: dict[str, list[float]] = {"tick": [], "dry": [], "list": [], "queue": []}
        for _ in range(ticks):
            samples["tick"] += timed(lambda: tick(False), 1)
            samples["dry"] += timed(lambda: tick(True), 1)
            samples["list"] += timed(lambda: store.list_tasks(status="ready"), 1)
            samples["queue"] += timed(lambda: store.ready_queue(), 1)
        real, dry = samples["tick"], samples["dry"]
        real_ms, dry_ms = statistics.median(real), statistics.median(dry)
        listed_ms, queue_ms = (
            statistics.median(samples["list"]),
            statistics.median(samples["queue"]),
        )
        met = real_ms <= TARGET_TICK_MS
        print(f"  list_tasks(status=ready) (baseline)  median {listed_ms:7.1f} ms")
        print(f"  ready_queue() read                   median {queue_ms:7.1f} ms")
        print(
            f"  tick                                 median {real_ms:7.1f} ms "
            f"(min {min(real):.1f}, max {max(real):.1f})   "
            f"[target <= {TARGET_TICK_MS:.0f} ms: {judged(met)}]"
        )
        over = "over" if dry_ms > TARGET_TICK_MS else "within"
        print(
            f"  tick --dry-run                       median {dry_ms:7.1f} ms "
            f"(min {min(dry):.1f}, max {max(dry):.1f})   (reported; {over} the tick's 50 ms)"
        )
        if not met:
            where_the_time_goes("ticks", lambda: tick(False))
        if dry_ms > TARGET_TICK_MS:
            where_the_time_goes("dry-run ticks", lambda: tick(True))
        ROWS.append(
            Row(
                f"tick, {TICK_TASKS:,} ready / {TICK_PROFILES} profiles",
                f"{real_ms:.1f} ms",
                f"list_tasks {listed_ms:.1f} ms; ready_queue {queue_ms:.1f} ms",
                f"<= 50 ms: {judged(met)}",
            )
        )
        ROWS.append(Row("tick --dry-run, same board", f"{dry_ms:.1f} ms", "", "reported"))
    finally:
        store.close()
    return met


def where_the_time_goes(what: str, fn: Callable[[], object], times: int = 5, top: int = 10) -> None:
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(times):
        fn()
    profile.disable()
    stats = pstats.Stats(profile)
    print(f"  cProfile of {times} {what}, by own time (ms per tick):")
    entries = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])
    for (path, line, name), (_cc, calls, own, cumulative, _callers) in entries[:top]:
        where = f"{Path(path).name}:{line}({name})" if line else name
        print(
            f"    {own * 1000 / times:7.2f} own  {cumulative * 1000 / times:7.2f} cum  "
            f"{calls // times:7d} calls  {where}"
        )


# -- processes: fake provider, gateways, daemons --------------------------------------


class Processes:
    """Every process the benchmark starts; all stopped at the end, whatever happens."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], env: dict[str, str], log: str) -> subprocess.Popen[bytes]:
        with (self.logs / log).open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, *args],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise BenchError(f"pid {proc.pid} ({proc.args!r}) ignored SIGTERM") from None

    def stop_all(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(Exception):
                if proc.poll() is None:
                    proc.kill()
                proc.wait(10)


def base_env(home: HermesHome) -> dict[str, str]:
    env = {**os.environ, "HERMES_HOME": str(home.root), "HERMES_ALLOW_ROOT_GATEWAY": "1"}
    for name in ("HERMES_PROFILE", DATABASE_URL_ENV, "HERMES_GATEWAY_PORT_BASE"):
        env.pop(name, None)
    return env


def start_upstream(procs: Processes) -> int:
    log = procs.logs / "upstream.port"
    proc = procs.start(["-m", "tests.fake_upstream"], dict(os.environ), log.name)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        text = log.read_text().strip()
        if text.isdigit():
            return int(text)
        if proc.poll() is not None:
            raise BenchError(f"the fake provider exited {proc.returncode}")
        time.sleep(0.05)
    raise BenchError("the fake provider did not print its port")


@dataclass
class Gateway:
    name: str
    port: int
    key: str


def healthy(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        conn.request("GET", "/health")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except (OSError, http.client.HTTPException):
        return False


def start_gateways(procs: Processes, home: HermesHome, upstream_port: int) -> list[Gateway]:
    gateways = []
    for name in GATEWAYS:
        directory = create_profile(home, name)
        port = free_port()
        (directory / "config.yaml").write_text(
            f"model:\n  base_url: http://127.0.0.1:{upstream_port}/v1\n  name: bench-model\n"
            f"gateway:\n  port: {port}\n"
        )
        key = read_env(directory / ".env")["API_SERVER_KEY"]
        gateways.append(Gateway(name, port, key))
        procs.start(
            ["-m", "hermes_container", "-p", name, "gateway", "run"],
            base_env(home),
            f"gateway-{name}.log",
        )
    deadline = time.monotonic() + START_TIMEOUT
    for gateway in gateways:
        while not healthy(gateway.port):
            if time.monotonic() > deadline:
                raise BenchError(f"gateway {gateway.name} did not become healthy")
            time.sleep(0.05)
    return gateways


def start_daemon(
    procs: Processes, home: HermesHome, log: str, url: str | None = None
) -> subprocess.Popen[bytes]:
    env = base_env(home)
    if url:
        env[DATABASE_URL_ENV] = url
    proc = procs.start(["-m", "hermes_container", "kanban", "daemon"], env, log)
    deadline = time.monotonic() + START_TIMEOUT
    while "dispatcher started" not in (procs.logs / log).read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"daemon did not start: {(procs.logs / log).read_text()[-2000:]}")
        time.sleep(0.05)
    return proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def check_daemon_log(procs: Processes, log: str) -> None:
    text = (procs.logs / log).read_text()
    if "ERROR" in text or "Traceback" in text:
        raise BenchError(f"{log} has errors: {text[-3000:]}")


# -- 3. end to end --------------------------------------------------------------------


def direct_baseline(gateways: list[Gateway], n: int, workers: int) -> tuple[float, list[float]]:
    """n chat completions straight to the gateways (round robin) from `workers` threads,
    a connection per request as the dispatcher's runner makes; (requests/s, latencies)."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    next_index = iter(range(n))

    def worker() -> None:
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            gateway = gateways[i % len(gateways)]
            body = json.dumps(
                {
                    "messages": [{"role": "user", "content": f"Task #{i}: e2e task {i}"}],
                    "stream": False,
                }
            ).encode()
            headers = {
                "authorization": f"Bearer {gateway.key}",
                "content-type": "application/json",
                "x-hermes-session": f"direct-{i}",
            }
            started = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=60)
            try:
                conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    errors.append(repr(exc))
                continue
            finally:
                conn.close()
            elapsed = time.perf_counter() - started
            with lock:
                if response.status != 200 or b'"content"' not in data:
                    errors.append(f"HTTP {response.status}: {data[:200]!r}")
                latencies.append(elapsed * 1000)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise BenchError(f"direct baseline: {len(errors)} errors, e.g. {errors[0]}")
    return n / elapsed, latencies


@dataclass
class Drain:
    tasks_per_s: float
    ready_to_done: list[float]  # ms, created -> completed
    run: list[float]  # ms, claimed -> completed
    per_holder: dict[int, int]  # runs completed per dispatcher pid


def create_and_drain(store: Store, n: int, assignees: list[str], timeout: float) -> Drain:
    """Create n ready tasks on an empty board while the daemons run, then follow the
    board's events until every task completed; the timings come from those events."""
    ids = [
        store.create_task(f"e2e task {i}", assignee=assignees[i % len(assignees)]).id
        for i in range(n)
    ]
    created: dict[int, float] = {}
    claimed: dict[int, float] = {}
    completed: dict[int, float] = {}
    holders: dict[int, int] = {}
    after = 0
    deadline = time.monotonic() + timeout
    while len(completed) < n:
        page = store.events_since(after, limit=1000)
        for event in page:
            if event.kind == "created":
                created[event.task_id] = event.at
            elif event.kind == "claimed":
                if event.task_id in claimed:
                    raise BenchError(f"task {event.task_id} was claimed twice")
                claimed[event.task_id] = event.at
                pid = int(event.data.get("pid", 0))
                holders[pid] = holders.get(pid, 0) + 1
            elif event.kind == "completed":
                completed[event.task_id] = event.at
            elif event.kind in ("failed", "timed_out", "gave_up", "reclaimed", "rate_limited"):
                raise BenchError(f"task {event.task_id}: {event.kind} {event.data}")
        if page:
            after = page[-1].id
        if len(page) < 1000:
            if time.monotonic() > deadline:
                raise BenchError(f"{len(completed)} of {n} tasks done after {timeout:g}s")
            time.sleep(0.2)
    if sorted(completed) != sorted(ids) or len(created) != n or len(claimed) != n:
        raise BenchError(f"events: {len(created)} created, {len(claimed)} claimed")
    span = max(completed.values()) - min(created.values())
    return Drain(
        n / span,
        [(completed[i] - created[i]) * 1000 for i in ids],
        [(completed[i] - claimed[i]) * 1000 for i in ids],
        holders,
    )


def part_e2e(procs: Processes, home: HermesHome, gateways: list[Gateway], n: int) -> None:
    print(f"\n== 3. end to end: {n} tasks, 1 daemon, {len(gateways)} gateways, fake provider")
    workers = E2E_MAX_IN_PROGRESS
    direct_baseline(gateways, 40, workers)  # first requests: imports, connections
    rate, latencies = direct_baseline(gateways, n, workers)
    print(
        f"  direct to the gateways (baseline), {workers} client threads: {rate:7.1f} req/s, "
        f"p50 {pct(latencies, 50):.1f} ms, p99 {pct(latencies, 99):.1f} ms"
    )
    store = open_store(home, {})
    try:
        daemon = start_daemon(procs, home, "daemon-e2e.log")
        cpu_before = cpu_seconds(daemon.pid)
        drain = create_and_drain(store, n, [g.name for g in gateways], timeout=240)
        cpu_ms = (cpu_seconds(daemon.pid) - cpu_before) * 1000 / n
        code = procs.stop(daemon)
        if code != 0:
            raise BenchError(f"the daemon exited {code}")
        check_daemon_log(procs, "daemon-e2e.log")
    finally:
        store.close()
    share = drain.tasks_per_s / rate
    print(
        f"  kanban daemon, caps {E2E_MAX_IN_PROGRESS} / {E2E_PER_PROFILE} per profile: "
        f"{drain.tasks_per_s:7.1f} tasks/s ({share:.2f}x direct); "
        f"daemon CPU {cpu_ms:.2f} ms per task"
    )
    print(
        f"  ready->done p50 {pct(drain.ready_to_done, 50):.0f} ms, "
        f"p99 {pct(drain.ready_to_done, 99):.0f} ms (all {n} created at once, so this "
        f"includes the wait in the queue); claimed->completed p50 {pct(drain.run, 50):.1f} ms, "
        f"p99 {pct(drain.run, 99):.1f} ms   (reported)"
    )
    ROWS.append(
        Row(
            f"end to end, {n} tasks, 4 gateways",
            f"{drain.tasks_per_s:.1f} tasks/s; run p50 {pct(drain.run, 50):.0f} "
            f"p99 {pct(drain.run, 99):.0f} ms",
            f"direct {rate:.1f} req/s; p50 {pct(latencies, 50):.0f} "
            f"p99 {pct(latencies, 99):.0f} ms",
            "reported",
        )
    )
    ROWS.append(
        Row(
            "  ready->done (queue wait included)",
            f"p50 {pct(drain.ready_to_done, 50):.0f} p99 {pct(drain.ready_to_done, 99):.0f} ms",
            "",
            "reported",
        )
    )


# -- 4. PostgreSQL --------------------------------------------------------------------


def dispatcher_home(tmp: Path, source: HermesHome, name: str) -> HermesHome:
    """A home of its own for one dispatcher (as in another container): the default
    profile with the kanban caps, and the gateway profiles' config and key."""
    home = HermesHome(tmp / name)
    ensure_default_profile(home)
    set_kanban(
        home,
        max_in_progress=E2E_MAX_IN_PROGRESS,
        max_in_progress_per_profile=E2E_PER_PROFILE,
    )
    for profile in GATEWAYS:
        target = home.profile_dir(profile)
        target.mkdir(parents=True, mode=0o700)
        for file in ("config.yaml", ".env"):
            shutil.copy2(source.profile_dir(profile) / file, target / file)
    return home


def part_postgres(
    procs: Processes, tmp: Path, home: HermesHome, gateways: list[Gateway], n: int
) -> str:
    """'ok', or why it did not run."""
    print(f"\n== 4. PostgreSQL: {n} tasks on one board, 1 then 3 daemons, same gateways")
    from tests.postgres_server import PostgresServer, find_bin_dir

    bin_dir = find_bin_dir()
    if bin_dir is None:
        reason = "no PostgreSQL binaries (Debian package postgresql)"
        if os.environ.get("HERMES_REQUIRE_POSTGRES") == "1":
            raise BenchError(reason + "; HERMES_REQUIRE_POSTGRES=1")
        print(f"  not run: {reason}")
        ROWS.append(Row("PostgreSQL, 3 dispatchers", "not run", reason, "not run"))
        return reason
    import psycopg

    server = PostgresServer(bin_dir)
    server.start()
    try:
        url = server.url()
        rates: dict[int, Drain] = {}
        for count in (1, 3):
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
                conn.execute("CREATE SCHEMA public")
            store = open_store(home, {DATABASE_URL_ENV: url})
            try:
                homes = [dispatcher_home(tmp, home, f"pg{count}-{i}") for i in range(count)]
                logs = [f"daemon-pg{count}-{i}.log" for i in range(count)]
                daemons = [
                    start_daemon(procs, h, log, url) for h, log in zip(homes, logs, strict=True)
                ]
                cpu_before = sum(cpu_seconds(d.pid) for d in daemons)
                drain = create_and_drain(store, n, list(GATEWAYS), timeout=240)
                cpu_ms = (sum(cpu_seconds(d.pid) for d in daemons) - cpu_before) * 1000 / n
                for daemon, log in zip(daemons, logs, strict=True):
                    if procs.stop(daemon) != 0:
                        raise BenchError(f"{log}: exit {daemon.returncode}")
                    check_daemon_log(procs, log)
            finally:
                store.close()
            rates[count] = drain
            print(
                f"  {count} daemon(s): {drain.tasks_per_s:7.1f} tasks/s; run p50 "
                f"{pct(drain.run, 50):.1f} ms, p99 {pct(drain.run, 99):.1f} ms; "
                f"daemons' CPU {cpu_ms:.2f} ms per task; "
                f"tasks per daemon {sorted(drain.per_holder.values())}"
            )
        one, three = rates[1].tasks_per_s, rates[3].tasks_per_s
        print(f"  3 daemons / 1 daemon: {three / one:.2f}x   (reported)")
        ROWS.append(
            Row(
                f"PostgreSQL, 3 dispatchers, {n} tasks",
                f"{three:.1f} tasks/s ({three / one:.2f}x)",
                f"1 dispatcher {one:.1f} tasks/s",
                "reported",
            )
        )
    finally:
        server.stop()
    return "ok"


# -- main -----------------------------------------------------------------------------


def summary() -> None:
    print("\n== summary")
    widths = [max(len(getattr(r, f)) for r in ROWS) for f in ("figure", "value", "baseline")]
    head = ("figure", "value", "baseline (same run)", "verdict")
    print("  ".join(h.ljust(w) for h, w in zip(head, [*widths, 0], strict=True)).rstrip())
    for row in ROWS:
        cells = (row.figure, row.value, row.baseline)
        print(
            "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + "  " + row.verdict
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queue-tasks", type=int, default=2000)
    parser.add_argument("--e2e-tasks", type=int, default=1000)
    parser.add_argument("--pg-tasks", type=int, default=2000)
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=("queue", "tick", "e2e", "postgres")
    )
    parser.add_argument("--keep-logs", type=Path, help="copy the processes' logs here")
    args = parser.parse_args()
    # run_all stops a benchmark with SIGTERM: unwind, so the finally blocks stop what
    # this one started and remove its temp dir.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    met = True
    with tempfile.TemporaryDirectory(prefix="bench-kanban-") as name:
        tmp = Path(name)
        procs = Processes(tmp)
        try:
            if "queue" not in args.skip:
                met = part_queue(tmp, args.queue_tasks) and met
            if "tick" not in args.skip:
                met = part_tick(tmp) and met
            if "e2e" not in args.skip or "postgres" not in args.skip:
                home = HermesHome(tmp / "e2e-home")
                ensure_default_profile(home)
                set_kanban(
                    home,
                    max_in_progress=E2E_MAX_IN_PROGRESS,
                    max_in_progress_per_profile=E2E_PER_PROFILE,
                )
                upstream = start_upstream(procs)
                gateways = start_gateways(procs, home, upstream)
                if "e2e" not in args.skip:
                    part_e2e(procs, home, gateways, args.e2e_tasks)
                if "postgres" not in args.skip:
                    part_postgres(procs, tmp, home, gateways, args.pg_tasks)
        except BenchError as exc:
            print(f"\nbench_kanban: {exc}", file=sys.stderr)
            summary()
            return 2
        finally:
            procs.stop_all()
            if args.keep_logs:
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                for log in tmp.glob("*.log"):
                    shutil.copy2(log, args.keep_logs / log.name)
    summary()
    print("all targets met" if met else "SOME TARGETS MISSED")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
