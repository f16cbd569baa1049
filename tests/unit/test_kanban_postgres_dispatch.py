"""Three dispatchers on one PostgreSQL board: no task runs twice and the caps hold.

Three `hermes kanban daemon` processes, each with a HERMES_HOME of its own (as three
containers would have) holding the same profiles, share one board on a real PostgreSQL
server the session starts (tests/postgres_server.py). 2,000 tasks go through stand-in
gateways in this process: they answer /health as their profile and each chat completion
after a short pause, and count the requests in flight, which a run's request is always
inside of (claim commits before it, complete after it). While the daemons work, a
sampler reads the board's running counts again and again. At the end every task is done
with exactly one run, one `claimed` and one `completed` event, and its gateway saw its
session exactly once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from hermes_container.envfile import read_env
from hermes_container.home import HermesHome
from hermes_container.kanban.store import DATABASE_URL_ENV, Store, open_store
from hermes_container.profiles import create_profile, ensure_default_profile
from tests.conftest import REPO, set_port, wait_for

PROFILES = ("alpha", "bravo", "charlie", "delta")
DISPATCHERS = 3
TASKS = 2000
MAX_IN_PROGRESS = 6  # board-wide
PER_PROFILE = 2  # 4 profiles x 2 = 8 > 6: both caps bind
REQUEST_SECONDS = 0.01  # how long a stand-in gateway takes to answer
# About 20 s on 2 idle cores; the margin is for a machine busy with other work.
DEADLINE_SECONDS = 120.0


class Tally:
    """What the stand-in gateways saw, under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inflight: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.total = 0
        self.peak_total = 0
        self.sessions: Counter[str] = Counter()
        self.problems: list[str] = []

    def enter(self, profile: str, session: str) -> None:
        with self.lock:
            self.sessions[session] += 1
            self.inflight[profile] += 1
            self.total += 1
            self.peak[profile] = max(self.peak[profile], self.inflight[profile])
            self.peak_total = max(self.peak_total, self.total)

    def leave(self, profile: str) -> None:
        with self.lock:
            self.inflight[profile] -= 1
            self.total -= 1


class _Handler(BaseHTTPRequestHandler):
    server: StandInGateway

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _json(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._json(200, {"status": "ok", "profile": self.server.profile})
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:
        gateway = self.server
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        session = self.headers.get("x-hermes-session", "")
        if self.headers.get("authorization") != f"Bearer {gateway.api_key}":
            with gateway.tally.lock:
                gateway.tally.problems.append(f"{gateway.profile}: wrong key for {session}")
            self._json(401, {"error": "unauthorized"})
            return
        try:
            text = json.loads(body)["messages"][-1]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            text = ""
        if not text.startswith("Task #"):
            with gateway.tally.lock:
                gateway.tally.problems.append(f"{gateway.profile}: odd prompt {text[:80]!r}")
        gateway.tally.enter(gateway.profile, session)
        try:
            time.sleep(REQUEST_SECONDS)
        finally:
            gateway.tally.leave(gateway.profile)
        self._json(
            200,
            {
                "id": "chatcmpl-standin",
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": f"answer for {session}"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
            },
        )


class StandInGateway(ThreadingHTTPServer):
    """A profile's gateway as the dispatcher sees it, on a loopback port of its own."""

    daemon_threads = True
    request_queue_size = 128  # three dispatchers connect at once; no SYN retries

    def __init__(self, profile: str, api_key: str, tally: Tally) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.profile, self.api_key, self.tally = profile, api_key, tally
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture
def board_url(postgres_server: Any) -> str:
    """A fresh, empty schema on the session's server."""
    import psycopg

    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")
    return str(postgres_server.url())


def make_homes(tmp: Path, tally: Tally) -> tuple[list[HermesHome], list[StandInGateway]]:
    """One home with the profiles wired to stand-in gateways, copied once per dispatcher,
    each with the kanban caps in its default profile's config.yaml."""
    template = HermesHome(tmp / "template")
    ensure_default_profile(template)
    gateways = []
    for name in PROFILES:
        directory = create_profile(template, name)
        key = read_env(directory / ".env")["API_SERVER_KEY"]
        gateway = StandInGateway(name, key, tally)
        set_port(directory, gateway.port)
        gateways.append(gateway)
    config = yaml.safe_load((template.root / "config.yaml").read_text()) or {}
    config["kanban"] = {
        "max_in_progress": MAX_IN_PROGRESS,
        "max_in_progress_per_profile": PER_PROFILE,
        "dispatch_interval_seconds": 5,
    }
    (template.root / "config.yaml").write_text(yaml.safe_dump(config))
    homes = []
    for number in range(DISPATCHERS):
        root = tmp / f"dispatcher-{number}"
        shutil.copytree(template.root, root, symlinks=True)
        homes.append(HermesHome(root))
    return homes, gateways


class Sampler(threading.Thread):
    """Reads the board's running tasks per profile, and its open runs, until stopped."""

    def __init__(self, store: Store, url: str) -> None:
        super().__init__(daemon=True)
        self.store, self.url = store, url
        self.counts: list[dict[str, int]] = []
        self.open_runs: list[int] = []
        self.doubled: list[Any] = []
        self.errors: list[BaseException] = []
        self.halt = threading.Event()

    def run(self) -> None:
        import psycopg

        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                while not self.halt.is_set():
                    self.counts.append(self.store.running_counts())
                    row = conn.execute(
                        "SELECT COUNT(*) FROM kanban_runs WHERE outcome IS NULL"
                    ).fetchone()
                    self.open_runs.append(int(row[0]) if row else -1)
                    self.doubled += conn.execute(
                        "SELECT task_id, COUNT(*) FROM kanban_runs WHERE outcome IS NULL "
                        "GROUP BY task_id HAVING COUNT(*) > 1"
                    ).fetchall()
                    time.sleep(0.002)
        except BaseException as exc:
            self.errors.append(exc)


@pytest.fixture
def daemons() -> Iterator[list[tuple[subprocess.Popen[bytes], Path]]]:
    started: list[tuple[subprocess.Popen[bytes], Path]] = []
    yield started
    for proc, _log in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def start_daemon(home: HermesHome, url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HERMES_HOME": str(home.root), DATABASE_URL_ENV: url}
    env.pop("HERMES_PROFILE", None)
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "hermes_container", "kanban", "daemon"],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_three_dispatchers_share_a_board_without_running_a_task_twice(
    board_url: str,
    tmp_path: Path,
    daemons: list[tuple[subprocess.Popen[bytes], Path]],
) -> None:
    tally = Tally()
    homes, gateways = make_homes(tmp_path, tally)
    env = {DATABASE_URL_ENV: board_url}
    store = open_store(homes[0], env)
    sampler_store = open_store(homes[0], env)
    sampler = Sampler(sampler_store, board_url)
    try:
        ids = [
            store.create_task(f"job {n}", assignee=PROFILES[n % len(PROFILES)], priority=n % 3).id
            for n in range(TASKS)
        ]
        sampler.start()
        for number, home in enumerate(homes):
            log = tmp_path / f"daemon-{number}.log"
            daemons.append((start_daemon(home, board_url, log), log))

        def all_done() -> bool:
            for proc, log in daemons:
                assert proc.poll() is None, f"daemon exited {proc.returncode}: {log.read_text()}"
            return not store.list_tasks(status="ready") and not store.list_tasks(status="running")

        wait_for(all_done, DEADLINE_SECONDS, "every task to be done", interval=0.2)
    finally:
        sampler.halt.set()
        sampler.join(30)
        for proc, _log in daemons:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for gateway in gateways:
            gateway.stop()
    for proc, log in daemons:
        assert proc.wait(30) == 0, log.read_text()
        text = log.read_text()
        assert not any(word in text for word in ("ERROR", "WARNING", "Traceback")), text
        assert "dispatcher started" in text

    # Every task done once, with its gateway's answer as the result.
    tasks = store.list_tasks()
    assert sorted(t.id for t in tasks) == sorted(ids)
    assert {t.status for t in tasks} == {"done"}, Counter(t.status for t in tasks)
    assert all(t.attempts == 1 and t.result == f"answer for kanban-{t.id}" for t in tasks)
    import psycopg

    with psycopg.connect(board_url, autocommit=True) as conn:
        runs = conn.execute(
            "SELECT task_id, COUNT(*), COUNT(*) FILTER (WHERE outcome = 'completed'), "
            "COUNT(*) FILTER (WHERE outcome IS NULL) FROM kanban_runs GROUP BY task_id"
        ).fetchall()
        events = conn.execute(
            "SELECT task_id, kind, COUNT(*) FROM kanban_events "
            "WHERE kind IN ('claimed', 'completed', 'reclaimed', 'failed') GROUP BY task_id, kind"
        ).fetchall()
        pids = Counter(pid for (pid,) in conn.execute("SELECT pid FROM kanban_runs").fetchall())
    assert sorted(r[0] for r in runs) == sorted(ids)
    assert all(r[1:] == (1, 1, 0) for r in runs), [r for r in runs if r[1:] != (1, 1, 0)]
    assert Counter((kind, count) for _task, kind, count in events) == {
        ("claimed", 1): TASKS,
        ("completed", 1): TASKS,
    }
    # All three dispatchers took part.
    assert set(pids) == {proc.pid for proc, _log in daemons}, pids

    # The gateways saw each task's session exactly once, with the right key.
    assert not tally.problems, tally.problems[:5]
    assert tally.sessions == Counter(f"kanban-{i}" for i in ids)

    # The caps held at every sample and at the gateways, and were reached.
    assert not sampler.errors, sampler.errors
    assert not sampler.doubled, sampler.doubled[:5]
    assert len(sampler.counts) > 100
    for counts in sampler.counts:
        assert sum(counts.values()) <= MAX_IN_PROGRESS, counts
        assert max(counts.values(), default=0) <= PER_PROFILE, counts
    assert max(sampler.open_runs) <= MAX_IN_PROGRESS
    assert max(tally.peak.values()) <= PER_PROFILE, tally.peak
    assert tally.peak_total <= MAX_IN_PROGRESS
    assert max(sum(c.values()) for c in sampler.counts) == MAX_IN_PROGRESS
    assert tally.peak_total >= MAX_IN_PROGRESS - 1
    store.close()
    sampler_store.close()
