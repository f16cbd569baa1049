"""Two containers, one PostgreSQL board: the shared-board deployment without Kubernetes.

Two containers of the test image, each with a volume of its own, read the same
declarative profiles file (mounted read-only into both: profiles `alpha` and `bravo` on a
fake provider on the host's loopback, and the board's caps in the default profile's
`kanban:` section) and share one board on a real PostgreSQL server the session starts
(tests/postgres_server.py). Container A gets the board's URL from the environment,
container B from a file (the `_FILE` form). 200 tasks are created in this process with
the store API; both containers' dispatchers run them through their own gateways.

Mid-way the provider is made slow for a moment, so that a run of A's is certainly in
flight, and A is killed with `docker kill` (SIGKILL to everything in it: no clean
hand-back). B cannot see A's holder lock (another volume) nor its pids (another pid
namespace), so it may take A's tasks back only once their claims expire
(`claim_ttl_seconds: 5`); it then finishes them.

What the board must show at the end:
  - every task `done`, with exactly one `completed` run and no open run;
  - a real share for each container (its holder identity, `<hostname>#<hash>`, is in the
    runs table, and both containers completed tasks);
  - every run of A that was open at the kill closed as `reclaimed` by B after its
    claim expired, its task completed by B; A completed nothing after the kill;
  - the caps (2 per profile, 3 on the board) never exceeded across both containers:
    checked on the run intervals replayed in commit order (event ids increase in commit
    order), and on the running counts sampled while the containers worked.

A run's `claimed_at`/`finished_at` are PostgreSQL's now(), the start of the writing
transaction, not of its commit: a claim that waited for the board lock while a
completion committed carries an earlier time than that completion, though it counted
the freed slot after it. Intervals from those times can therefore overlap by a few
milliseconds more than the caps allow without any cap being broken; the test orders
the same runs' starts and ends by commit instead and reports the wall-clock figure.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hermes_container.home import HermesHome
from hermes_container.kanban.store import DATABASE_URL_ENV, Store, open_store
from tests.docker.harness import ARTIFACTS, HERMES_UID, Container, docker, port_answers, wait_for
from tests.fake_upstream import FakeUpstream

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

Start = Callable[..., Container]

PROFILES = ("alpha", "bravo")
TASKS = 200
MAX_IN_PROGRESS = 3  # board-wide
PER_PROFILE = 2  # 2 profiles x 2 = 4 > 3: both caps bind
CLAIM_TTL = 5.0
TASK_SECONDS = 0.4  # the provider's pause before each answer
SLOW_SECONDS = 3.0  # its pause while we wait for a run of A's to kill it in
KILL_AFTER_DONE = 70
MODEL_KEY = "sk-shared-board-test-key"
DATABASE = "shared_board"
# Closing events of a run; `claimed` opens one.
CLOSES = ("completed", "failed", "timed_out", "rate_limited", "reclaimed")
STARTED = re.compile(r"dispatcher started \(holder (\S+) pid (\d+)\)")


@pytest.fixture
def board_url(postgres_server: Any) -> str:
    """An empty database of its own on the session's server."""
    import psycopg

    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DATABASE}")
    return str(postgres_server.url(DATABASE))


def _readable_by_hermes(path: Path, mode: int) -> None:
    """The containers read these files as the hermes user (uid 10000)."""
    if os.geteuid() == 0:
        os.chown(path, HERMES_UID, HERMES_UID)
        path.chmod(mode)
    else:
        path.chmod(mode | 0o044)


def _profiles_dir(tmp: Path, upstream: FakeUpstream) -> Path:
    """The declarative profiles file both containers mount (a directory of its own:
    tmp_path is 0700, which the hermes user could not enter)."""
    directory = tmp / "profiles"
    directory.mkdir()
    directory.chmod(0o755)
    provider = {"base_url": upstream.base_url, "model": "fake-model"}
    declared = {
        "profiles": [
            {
                "name": "default",
                **provider,
                "config": {
                    "kanban.max_in_progress": MAX_IN_PROGRESS,
                    "kanban.max_in_progress_per_profile": PER_PROFILE,
                    "kanban.claim_ttl_seconds": CLAIM_TTL,
                },
            },
            *(
                {
                    "name": name,
                    **provider,
                    "persona": f"You are {name}; you answer board tasks.",
                    "api_key_env": "SHARED_MODEL_KEY",
                    "state": "running",
                }
                for name in PROFILES
            ),
        ]
    }
    path = directory / "profiles.yaml"
    path.write_text(yaml.safe_dump(declared, sort_keys=False))
    path.chmod(0o644)
    return directory


def _holder(c: Container) -> str | None:
    """The container's dispatcher's holder identity, from its log."""
    log = c.volume / "logs" / "dispatcher" / "current"
    found = STARTED.findall(log.read_text()) if log.exists() else []
    return found[-1][0] if found else None


def _ready(c: Container) -> str | None:
    """The holder identity once the dispatcher runs and every declared gateway answers."""
    holder = _holder(c)
    if holder is None:
        return None
    ports = [c.port_of(name) for name in PROFILES]
    return holder if all(port_answers(port) for port in ports) else None


class Sampler(threading.Thread):
    """Reads the board's running tasks per profile, and the tasks with more than one
    open run, on a connection of its own until stopped."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.counts: list[dict[str, int]] = []
        self.doubled: list[Any] = []
        self.errors: list[BaseException] = []
        self.halt = threading.Event()

    def run(self) -> None:
        import psycopg

        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                while not self.halt.is_set():
                    rows = conn.execute(
                        "SELECT assignee, COUNT(*) FROM kanban_tasks WHERE status = 'running' "
                        "GROUP BY assignee"
                    ).fetchall()
                    self.counts.append({str(a): int(n) for a, n in rows})
                    self.doubled += conn.execute(
                        "SELECT task_id, COUNT(*) FROM kanban_runs WHERE outcome IS NULL "
                        "GROUP BY task_id HAVING COUNT(*) > 1"
                    ).fetchall()
                    self.halt.wait(0.01)
        except BaseException as exc:
            self.errors.append(exc)


def _peaks(changes: list[tuple[Any, int, str]]) -> tuple[dict[str, int], int]:
    """Replay (order key, +1/-1, assignee) in order: the most runs open at once per
    assignee, and in total. Ends sort before starts at one key."""
    open_now: Counter[str] = Counter()
    peaks: Counter[str] = Counter()
    total = peak_total = 0
    for _key, step, assignee in sorted(changes, key=lambda c: (c[0], c[1])):
        open_now[assignee] += step
        total += step
        peaks[assignee] = max(peaks[assignee], open_now[assignee])
        peak_total = max(peak_total, total)
    return dict(peaks), peak_total


def _server_now(url: str) -> float:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8").fetchone()
    assert row is not None
    return float(row[0])


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


def test_two_containers_share_one_board_and_take_over_a_killed_ones_tasks(
    board_url: str,  # first: without PostgreSQL the test skips before the image is built
    start_container: Start,
    upstream: FakeUpstream,
    tmp_path: Path,
) -> None:
    import psycopg

    upstream.set(delay=TASK_SECONDS)
    profiles = _profiles_dir(tmp_path, upstream)
    url_file = tmp_path / "board-url"
    url_file.write_text(board_url + "\n")
    _readable_by_hermes(url_file, 0o600)
    common = {
        "HERMES_PROFILES_FILE": "/etc/hermes/profiles/profiles.yaml",
        "SHARED_MODEL_KEY": MODEL_KEY,
        "HERMES_GATEWAY_ENV_DENY": DATABASE_URL_ENV,
    }
    mount = ("-v", f"{profiles}:/etc/hermes/profiles:ro")
    a = start_container(
        env={**common, DATABASE_URL_ENV: board_url},
        run_args=(*mount, "--hostname", "shared-a"),
    )
    b = start_container(
        env={**common, f"{DATABASE_URL_ENV}_FILE": "/run/secrets/board-url"},
        run_args=(*mount, "-v", f"{url_file}:/run/secrets/board-url:ro", "--hostname", "shared-b"),
    )
    holder_a = wait_for(lambda: _ready(a), 120, "container A's dispatcher and gateways")
    holder_b = wait_for(lambda: _ready(b), 120, "container B's dispatcher and gateways")
    assert holder_a.startswith("shared-a#") and holder_b.startswith("shared-b#")
    # The declared caps reached both dispatchers' settings (the default profile's config).
    for c in (a, b):
        stats = json.loads(c.hermes("kanban", "stats", "--json").stdout)
        assert stats["max_in_progress"] == MAX_IN_PROGRESS, stats
        assert stats["max_in_progress_per_profile"] == PER_PROFILE, stats

    env = {DATABASE_URL_ENV: board_url}
    store: Store = open_store(HermesHome(tmp_path / "unused-home"), env)
    sampler = Sampler(board_url)
    sampler.start()
    started = time.monotonic()
    try:
        ids = [
            store.create_task(
                f"shared task {n}", body=f"answer {n}", assignee=PROFILES[n % len(PROFILES)]
            ).id
            for n in range(TASKS)
        ]

        def done_count() -> int:
            return len(store.list_tasks(status="done"))

        wait_for(lambda: done_count() >= KILL_AFTER_DONE, 120, f"{KILL_AFTER_DONE} tasks done")
        with psycopg.connect(board_url, autocommit=True) as conn:
            # Slow answers from now on: a run of A's claimed after this is still in flight
            # when the kill lands, whatever the timing of `docker kill`.
            upstream.set(delay=SLOW_SECONDS)
            switched = _server_now(board_url)

            def a_in_flight() -> list[Any]:
                return conn.execute(
                    "SELECT r.id FROM kanban_runs r JOIN kanban_tasks t ON t.current_run = r.id "
                    "WHERE t.status = 'running' AND r.host = %s AND r.claimed_at > %s",
                    (holder_a, switched),
                ).fetchall()

            wait_for(a_in_flight, 60, "a run of container A in flight")
            docker("kill", a.name)
            killed_at = _server_now(board_url)
            upstream.set(delay=TASK_SECONDS)
            orphans = conn.execute(
                "SELECT r.id, r.task_id FROM kanban_runs r "
                "JOIN kanban_tasks t ON t.current_run = r.id "
                "WHERE t.status = 'running' AND r.host = %s",
                (holder_a,),
            ).fetchall()
        assert not a.running()
        assert orphans, "container A held no claimed task when it was killed"
        done_at_kill = done_count()
        assert done_at_kill < TASKS - 20, "the kill came too late to be mid-way"

        def all_done() -> bool:
            assert b.running(), f"container B exited:\n{b.logs()[-3000:]}"
            return done_count() == TASKS

        wait_for(all_done, 150, "every task done", interval=0.5)
        elapsed = time.monotonic() - started
    finally:
        sampler.halt.set()
        sampler.join(30)

    with psycopg.connect(board_url, autocommit=True) as conn:
        tasks = {
            int(i): (status, assignee, result)
            for i, status, assignee, result in conn.execute(
                "SELECT id, status, assignee, result FROM kanban_tasks"
            ).fetchall()
        }
        runs = conn.execute(
            "SELECT id, task_id, host, claimed_at, claim_expires_at, finished_at, outcome, error "
            "FROM kanban_runs ORDER BY id"
        ).fetchall()
        events = conn.execute(
            "SELECT id, task_id, kind, data FROM kanban_events "
            f"WHERE kind IN ('claimed', {', '.join(repr(k) for k in CLOSES)}) ORDER BY id"
        ).fetchall()
    store.close()

    # Every task done once, with the provider's answer.
    assert sorted(tasks) == sorted(ids)
    assert Counter(status for status, _a, _r in tasks.values()) == {"done": TASKS}
    for task_id, (_status, _assignee, result) in tasks.items():
        assert result is not None and result.startswith(f"echo: Task #{task_id}: "), result
    by_task: dict[int, list[Any]] = {}
    for run in runs:
        by_task.setdefault(int(run[1]), []).append(run)
    completed = {t: [r for r in rs if r[6] == "completed"] for t, rs in by_task.items()}
    assert all(len(c) == 1 for c in completed.values()), {
        t: len(c) for t, c in completed.items() if len(c) != 1
    }
    assert [r for r in runs if r[6] is None] == []
    assert Counter(r[6] for r in runs) == {"completed": TASKS, "reclaimed": len(orphans)}, Counter(
        (r[2], r[6]) for r in runs
    )

    # Each container did a real share; no third holder appeared.
    shares = Counter(rs[0][2] for rs in completed.values())
    assert set(shares) == {holder_a, holder_b}, shares
    assert shares[holder_a] > 0 and shares[holder_b] > 0, shares

    # A's runs open at the kill: reclaimed once expired, then completed by B.
    orphan_tasks = {int(task_id) for _run, task_id in orphans}
    for run_id, task_id in orphans:
        (old,) = [r for r in by_task[int(task_id)] if r[0] == run_id]
        assert old[6] == "reclaimed" and old[2] == holder_a, old
        assert old[5] >= old[4], f"run {run_id} was reclaimed before its claim expired: {old}"
        assert "expired" in (old[7] or ""), old
        assert completed[int(task_id)][0][2] == holder_b, by_task[int(task_id)]
    reclaimed_events = [e for e in events if e[2] == "reclaimed"]
    assert sorted(int(e[1]) for e in reclaimed_events) == sorted(orphan_tasks)
    assert {json.loads(e[3])["host"] for e in reclaimed_events} == {holder_a}
    late = [r for r in runs if r[2] == holder_a and r[6] == "completed" and r[5] > killed_at]
    assert late == [], late

    # The caps held across both containers, replayed in commit order ...
    assignee_of = {t: assignee for t, (_s, assignee, _r) in tasks.items()}
    changes = [
        (int(e[0]), 1 if e[2] == "claimed" else -1, str(assignee_of[int(e[1])])) for e in events
    ]
    assert sum(step for _k, step, _a in changes) == 0
    peaks, peak_total = _peaks(changes)
    assert all(peaks[p] <= PER_PROFILE for p in PROFILES), peaks
    assert peak_total <= MAX_IN_PROGRESS, peak_total
    # ... and were reached, so they were what held the work back.
    assert peak_total == MAX_IN_PROGRESS and max(peaks.values()) == PER_PROFILE, peaks
    # ... and at every sample taken while the containers worked.
    assert not sampler.errors, sampler.errors
    assert not sampler.doubled, sampler.doubled[:5]
    assert len(sampler.counts) > 100, len(sampler.counts)
    for counts in sampler.counts:
        assert sum(counts.values()) <= MAX_IN_PROGRESS, counts
        assert max(counts.values(), default=0) <= PER_PROFILE, counts
    # The same runs by their (transaction-start) times, for the record.
    timed = [(float(r[3]), 1, str(assignee_of[int(r[1])])) for r in runs] + [
        (float(r[5]), -1, str(assignee_of[int(r[1])])) for r in runs
    ]
    timed_peaks, timed_total = _peaks(timed)

    # The provider saw every task, with the declared key, from both containers' gateways.
    chats = [r for r in upstream.requests if r.path.endswith("/chat/completions")]
    asked = Counter(
        int(m.group(1))
        for r in chats
        if (m := re.match(r"Task #(\d+):", r.body["messages"][-1]["content"]))
    )
    assert set(asked) == set(ids)
    assert all(asked[t] == 1 for t in ids if t not in orphan_tasks)
    assert all(1 <= asked[t] <= 2 for t in orphan_tasks)
    assert {r.headers.get("authorization") for r in chats} == {f"Bearer {MODEL_KEY}"}
    assert board_url not in b.logs() and board_url not in a.logs()

    summary = (
        f"shared board: {TASKS} tasks in {elapsed:.1f}s; completed by A {shares[holder_a]}, "
        f"by B {shares[holder_b]}; A killed after {done_at_kill} done holding "
        f"{len(orphans)} run(s), reclaimed by B after the {CLAIM_TTL:g}s TTL; "
        f"peaks in commit order {peaks} total {peak_total}; by transaction times "
        f"{timed_peaks} total {timed_total}; {len(sampler.counts)} samples, max "
        f"{max(sum(c.values()) for c in sampler.counts)}"
    )
    ARTIFACTS.mkdir(exist_ok=True)
    with (ARTIFACTS / "docker-tier.log").open("a") as fh:
        fh.write(summary + "\n")
