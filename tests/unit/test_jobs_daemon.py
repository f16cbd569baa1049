"""Scheduled jobs run by the real dispatcher service (issue 17): deliveries to a real
webhook receiver on loopback, and how soon a slot's task starts.

Real gateways (alpha, beta) in front of the fake provider (tests/unit/kanban_support.py),
the real `hermes jobs` CLI, and the dispatcher either as `hermes kanban daemon` in a
subprocess or as its Daemon loop in a thread. The delivery tests give that thread's
board a clock the test can move forward (real time plus an offset), so a delivery's
10 s and 20 s backoffs pass at once, while what sends, signs and records the POSTs is
the real code against a real HTTP server.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from hermes_container.home import HermesHome
from hermes_container.kanban.daemon import Daemon
from hermes_container.kanban.jobs.api import Jobs
from hermes_container.kanban.jobs.delivery import DELIVERY_HEADER, SIGNATURE_HEADER, verify
from hermes_container.kanban.jobs.model import JobEvent, JobRun
from hermes_container.kanban.jobs.output import output_path
from hermes_container.kanban.jobs.schedule import slot_name
from hermes_container.kanban.store import Store, open_store
from tests.conftest import run_hermes, wait_for
from tests.fake_upstream import FakeUpstream
from tests.unit.kanban_support import Site, events_of, fresh_board, running_site, set_kanban
from tests.webhook_receiver import WebhookReceiver

# The first delivery retry waits 10 s, the next 20 s, less up to 10 % jitter
# (kanban/jobs/delivery.py); the tests check the recorded delays against these.
FIRST_DELIVERY_DELAY = 10.0
JITTER = 0.1
# A slot's task must be claimed this soon after the slot time. The daemon sleeps until
# the slot itself (measured: tens of milliseconds); the bound is loose for a loaded CI
# machine, and still an order of magnitude under upstream's 60 s tick.
SLOT_START_SECONDS = 5.0


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with running_site(tmp_path_factory.mktemp("site")) as running:
        yield running


def set_jobs(home: HermesHome, **section: Any) -> None:
    """Write the `jobs:` section of the default profile's config.yaml (read every tick)."""
    path = home.root / "config.yaml"
    data = yaml.safe_load(path.read_text()) or {}
    data["jobs"] = section
    path.write_text(yaml.safe_dump(data))


@pytest.fixture
def home(site: Site, monkeypatch: pytest.MonkeyPatch) -> HermesHome:
    """An empty board, default kanban and jobs settings, no job output from before."""
    home = fresh_board(site, monkeypatch)
    set_jobs(home)
    shutil.rmtree(home.root / "jobs", ignore_errors=True)
    return home


@pytest.fixture
def upstream(site: Site, home: HermesHome) -> FakeUpstream:
    return site.upstream


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


class OffsetClock:
    """The board's time for the daemon under test: real time plus what the test added."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class DaemonThread:
    """The dispatcher's Daemon loop in a thread, on a board store with `clock`; the test
    reads the board through the same store (`store`)."""

    def __init__(self, home: HermesHome, clock: Callable[[], float]) -> None:
        self.store = open_store(home, {}, clock=clock)
        self.daemon = Daemon(home, self.store)
        self.thread = threading.Thread(target=self.daemon.run, kwargs={"install_signals": False})
        self.thread.start()

    def stop(self) -> None:
        self.daemon.stop()
        self.thread.join(15)
        self.store.close()
        assert not self.thread.is_alive(), "the daemon loop did not stop"


@pytest.fixture
def clock() -> OffsetClock:
    return OffsetClock()


@pytest.fixture
def daemon_thread(home: HermesHome, clock: OffsetClock) -> Iterator[DaemonThread]:
    # Ticks at least every 0.2 s, so a clock moved forward is noticed without a write.
    set_kanban(home, dispatch_interval_seconds=0.2)
    running = DaemonThread(home, clock)
    yield running
    running.stop()


@pytest.fixture
def board(home: HermesHome) -> Iterator[Store]:
    """The test's own view of the board, for a daemon in another process."""
    opened = open_store(home, {})
    yield opened
    opened.close()


def hermes_json(*args: str) -> Any:
    proc = run_hermes(*args, "--json")
    assert proc.returncode == 0, f"hermes {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return json.loads(proc.stdout)


def add_job(name: str, *options: str) -> dict[str, Any]:
    """`hermes jobs add NAME ... --json`: the job, with its delivery secret (shown once)."""
    data: dict[str, Any] = hermes_json("jobs", "add", name, *options)
    return data


def job_events(board: Store, name: str) -> list[JobEvent]:
    return Jobs(board).events(job=name, limit=10_000)


def run_events(board: Store, run_id: int) -> list[JobEvent]:
    return [e for e in Jobs(board).events(limit=10_000) if e.run_id == run_id]


def runs_of(board: Store, name: str) -> list[JobRun]:
    """A job's runs, oldest first."""
    return [run for run, _ in reversed(Jobs(board).runs(name, limit=1000))]


def posts_for(receiver: WebhookReceiver, run_id: int) -> list[Any]:
    return [
        p for p in list(receiver.posts) if p.headers.get(DELIVERY_HEADER.lower()) == str(run_id)
    ]


def delivery_kinds(board: Store, run_id: int) -> list[str]:
    return [e.kind for e in run_events(board, run_id) if e.kind.startswith("deliver")]


# -- the helpers themselves --------------------------------------------------------------


def test_the_fake_provider_fails_the_first_n_chat_requests_then_answers(
    fake_upstream: FakeUpstream,
) -> None:
    fake_upstream.set(fail_first=2, status=503, error="warming up")
    url = fake_upstream.base_url + "/chat/completions"
    body = {"messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(trust_env=False, timeout=5) as client:
        assert client.get(fake_upstream.base_url + "/models").status_code == 200  # not counted
        answers = [client.post(url, json=body) for _ in range(4)]
        assert [a.status_code for a in answers] == [503, 503, 200, 200]
        assert answers[0].json()["error"]["message"] == "warming up"
        assert answers[2].json()["choices"][0]["message"]["content"] == "echo: hi"
        fake_upstream.set(fail_first=1, status=500)  # a new behaviour counts from zero
        assert [client.post(url, json=body).status_code for _ in range(2)] == [500, 200]
        fake_upstream.set(status=500)  # without fail_first: every request fails, as before
        assert [client.post(url, json=body).status_code for _ in range(3)] == [500] * 3


def test_the_webhook_receiver_records_every_post_and_fails_the_first_n(
    receiver: WebhookReceiver,
) -> None:
    receiver.set(fail_first=2)
    with httpx.Client(trust_env=False, timeout=5) as client:
        codes = [
            client.post(receiver.url, content=f"b{i}".encode(), headers={"x-n": str(i)}).status_code
            for i in range(3)
        ]
        receiver.set(fail_first=-1, status=502)
        codes += [client.post(receiver.url, content=b"late").status_code for _ in range(2)]
    assert codes == [500, 500, 204, 502, 502]
    posts = receiver.wait_for_posts(5)
    assert [p.body for p in posts] == [b"b0", b"b1", b"b2", b"late", b"late"]
    assert [p.status for p in posts] == codes
    assert posts[1].headers["x-n"] == "1" and posts[0].path == "/hook"


# -- delivery ------------------------------------------------------------------------------


def test_a_delivery_that_fails_twice_is_retried_with_backoff_and_arrives_signed(
    home: HermesHome,
    upstream: FakeUpstream,
    receiver: WebhookReceiver,
    clock: OffsetClock,
    daemon_thread: DaemonThread,
) -> None:
    board = daemon_thread.store
    set_jobs(home, delivery_max_attempts=5)
    receiver.set(fail_first=2)
    added = add_job(
        "report", "--profile", "alpha", "--prompt", "the daily report", "--every", "1h",
        "--deliver", receiver.url,
    )  # fmt: skip
    secret = added["secret"]
    assert isinstance(secret, str) and len(secret) >= 32
    started = hermes_json("jobs", "run", "report")
    run_id = started["id"]

    first = receiver.wait_for_posts(1, timeout=15)[0]
    assert first.status == 500
    failed = wait_for(
        lambda: [e for e in run_events(board, run_id) if e.kind == "delivery_failed"],
        what="the first delivery_failed event",
    )
    delay = failed[0].data["retry_in"]
    assert (1 - JITTER) * FIRST_DELIVERY_DELAY - 0.01 <= delay <= FIRST_DELIVERY_DELAY
    # The retry waits for its backoff: the loop ticks every 0.2 s, and sends nothing.
    time.sleep(1.0)
    assert len(receiver.posts) == 1

    clock.advance(delay + 0.1)
    second = receiver.wait_for_posts(2)[1]
    assert second.status == 500
    failed = wait_for(
        lambda: [e for e in run_events(board, run_id) if e.kind == "delivery_failed"][1:],
        what="the second delivery_failed event",
    )
    later = failed[0].data["retry_in"]
    assert (1 - JITTER) * 2 * FIRST_DELIVERY_DELAY - 0.01 <= later <= 2 * FIRST_DELIVERY_DELAY
    time.sleep(0.6)
    assert len(receiver.posts) == 2

    clock.advance(later + 0.1)
    third = receiver.wait_for_posts(3)[2]
    assert third.status == 204
    wait_for(lambda: "delivered" in delivery_kinds(board, run_id), what="the delivered event")

    run = Jobs(board).get_run(run_id)
    assert (run.state, run.delivery, run.delivery_attempts) == ("completed", "delivered", 3)
    assert len(receiver.posts) == 3
    # The same signed bytes each time, the run named for the receiver to drop repeats.
    assert first.body == second.body == third.body
    for post in (first, second, third):
        signature = post.headers[SIGNATURE_HEADER.lower()]
        assert verify(secret, post.body, signature)
        assert post.headers[DELIVERY_HEADER.lower()] == str(run_id)
        assert post.headers["content-type"] == "application/json"
    assert not verify(secret, third.body + b" ", signature), "the signature covers the body"
    assert not verify(secret[::-1], third.body, signature), "and depends on the secret"

    body = json.loads(third.body)
    assert set(body) == {"job", "slot", "run_id", "profile", "result", "attempts"}
    (task,) = Jobs(board).run_tasks([run_id])[run_id]
    assert body["job"] == "report" and body["run_id"] == run_id and body["profile"] == "alpha"
    assert body["slot"] == slot_name(run.slot) and body["attempts"] == 1
    assert body["result"] == task.result and body["result"].startswith("echo: ")
    assert "the daily report" in body["result"]
    saved = output_path(home.root, "report", run.slot)
    assert saved.read_text() == body["result"] + "\n"

    kinds = [e.kind for e in run_events(board, run_id)]
    assert kinds == [
        "scheduled", "started", "completed", "delivery_failed", "delivery_failed", "delivered",
    ]  # fmt: skip
    attempts = [e.data["attempt"] for e in run_events(board, run_id) if "deliver" in e.kind]
    assert attempts == [1, 2, 3]
    assert hermes_json("jobs", "dead", "--deliveries") == []


def test_a_delivery_that_keeps_failing_is_dead_lettered_and_never_holds_up_the_next_run(
    home: HermesHome,
    upstream: FakeUpstream,
    receiver: WebhookReceiver,
    clock: OffsetClock,
    daemon_thread: DaemonThread,
) -> None:
    board = daemon_thread.store
    max_attempts = 2
    set_jobs(home, delivery_max_attempts=max_attempts)
    receiver.set(fail_first=-1, status=503)
    every = 3.0
    add_job(
        "digest", "--profile", "beta", "--prompt", "digest it", "--every", f"{every:g}s",
        "--deliver", receiver.url,
    )  # fmt: skip

    # The first slot's run completes, and its delivery fails: a retry waits 10 s.
    first = wait_for(
        lambda: [r for r in runs_of(board, "digest") if r.delivery_attempts >= 1],
        timeout=every + 10,
        what="the first run's failed delivery",
    )[0]
    assert first.state == "completed" and first.delivery == "pending"
    # The next slot fires on time all the same, and its run completes.
    second = wait_for(
        lambda: [r for r in runs_of(board, "digest") if r.slot > first.slot][:1],
        timeout=every + 10,
        what="the next slot's run",
    )[0]
    assert second.slot == pytest.approx(first.slot + every)
    wait_for(
        lambda: Jobs(board).get_run(second.id).delivery_attempts >= 1,
        timeout=10,
        what="the second run completed and its delivery tried",
    )
    hermes_json("jobs", "pause", "digest")  # no more slots: two runs to follow
    assert Jobs(board).get_run(first.id).delivery == "pending", "still waiting to retry"

    # Past the backoff, each delivery has its last attempt, fails, and is dead-lettered.
    clock.advance(2 * FIRST_DELIVERY_DELAY + 1)
    wait_for(
        lambda: all(Jobs(board).get_run(r.id).delivery == "dead" for r in (first, second)),
        what="both deliveries dead-lettered",
    )
    time.sleep(0.6)  # a few more ticks: nothing more is sent
    for run in (first, second):
        assert [p.status for p in posts_for(receiver, run.id)] == [503] * max_attempts
        assert delivery_kinds(board, run.id) == [
            "delivery_failed", "delivery_failed", "delivery_dead_lettered",
        ]  # fmt: skip
        row = Jobs(board).get_run(run.id)
        assert (row.state, row.delivery_attempts, row.delivery_error) == (
            "completed",
            max_attempts,
            "HTTP 503",
        )
    assert len(receiver.posts) == 2 * max_attempts

    dead = hermes_json("jobs", "dead", "--deliveries")
    assert sorted(d["id"] for d in dead) == [first.id, second.id]
    for entry in dead:
        assert entry["reason"] == "delivery_dead_letter" and entry["error"] == "HTTP 503"
        assert entry["delivery_attempts"] == max_attempts
    assert hermes_json("jobs", "dead") == [], "the runs themselves succeeded"

    # The second slot was scheduled while the first delivery was still failing.
    events = job_events(board, "digest")
    order: dict[tuple[int | None, str], int] = {}
    for event in events:
        order.setdefault((event.run_id, event.kind), event.id)  # the first of each kind
    assert order[(first.id, "delivery_failed")] < order[(second.id, "scheduled")]
    assert order[(second.id, "scheduled")] < order[(first.id, "delivery_dead_lettered")]


# -- slot to start, with `hermes kanban daemon` itself -------------------------------------


class DaemonProc:
    """`hermes kanban daemon` in a subprocess, its log in a file."""

    def __init__(self, tmp: Path) -> None:
        self.log = tmp / "daemon.log"
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "hermes_container", "kanban", "daemon"],
                env=dict(os.environ),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for(
            lambda: "dispatcher started" in self.text(), 20, "the daemon's start", interval=0.05
        )

    def text(self) -> str:
        text = self.log.read_text()
        if self.popen.poll() is not None:
            raise AssertionError(f"daemon exited {self.popen.returncode}: {text}")
        return text

    def stop(self) -> int:
        self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(15)


@pytest.fixture
def daemon_proc(home: HermesHome, tmp_path: Path) -> Iterator[DaemonProc]:
    proc = DaemonProc(tmp_path)
    yield proc
    if proc.popen.poll() is None:
        proc.popen.kill()
        proc.popen.wait(10)


def test_a_slot_task_is_claimed_within_moments_of_its_slot(
    home: HermesHome, upstream: FakeUpstream, daemon_proc: DaemonProc, board: Store
) -> None:
    """The daemon's dispatch interval is the default 60 s: only sleeping until the next
    slot (not a poll) can start these runs on time."""
    every, wanted = 2.0, 3
    add_job("pulse", "--profile", "alpha", "--prompt", "are you there", "--every", f"{every:g}s")

    def completed() -> list[JobRun] | None:
        done = [r for r in runs_of(board, "pulse") if r.state == "completed"]
        return done[:wanted] if len(done) >= wanted else None

    runs = wait_for(completed, timeout=every * wanted + 15, what=f"{wanted} completed runs")
    assert daemon_proc.stop() == 0

    latencies = []
    for earlier, later in itertools.pairwise(runs):
        assert later.slot == pytest.approx(earlier.slot + every), "one run per slot, none lost"
    for run in runs:
        assert run.manual is False and run.first_task is not None
        claimed = [e for e in events_of(board, run.first_task) if e.kind == "claimed"]
        assert len(claimed) == 1, "each slot's task ran once"
        latencies.append(claimed[0].at - run.slot)
        kinds = [e.kind for e in run_events(board, run.id)]
        assert kinds == ["scheduled", "started", "completed"], kinds
        assert output_path(home.root, "pulse", run.slot).is_file()
    assert all(0 <= s < SLOT_START_SECONDS for s in latencies), latencies
    print(f"slot-to-claim: median {statistics.median(latencies) * 1000:.0f} ms, {latencies}")
    assert "Traceback" not in daemon_proc.log.read_text()


# -- a step whose gateway stays down -------------------------------------------------------


def test_a_step_whose_gateway_stays_down_past_the_grace_fails_and_retries(
    home: HermesHome, clock: OffsetClock
) -> None:
    """gamma is a profile whose gateway does not run: its job task waits, as board tasks
    do, until jobs.gateway_grace_seconds pass; then the attempt fails (counted), is
    retried after the job's backoff, and after max_retries the run is dead-lettered.
    A board task for gamma that is not a job's keeps waiting."""
    set_jobs(home, gateway_grace_seconds=1)
    set_kanban(home, dispatch_interval_seconds=0.2)
    board = open_store(home, {})
    try:
        plain = board.create_task("not a job", assignee="gamma")
        add_job("down", "--profile", "gamma", "--prompt", "hello", "--every", "1h",
                "--max-retries", "1", "--retry-delay", "1s")  # fmt: skip
        run = Jobs(board).run_now("down")
        running = DaemonThread(home, clock)
        try:

            def dead() -> JobRun | None:
                found = Jobs(board).get_run(run.id)
                return found if found.state == "dead_lettered" else None

            final = wait_for(dead, 30, "the run to be dead-lettered")
        finally:
            running.stop()
        kinds = [e.kind for e in run_events(board, run.id)]
        assert kinds.count("failed") == 2 and "retry_scheduled" in kinds
        assert kinds[-1] == "dead_lettered"
        assert final.error is not None and "gamma stayed down for more than 1s" in final.error
        # Each failure came after the grace: the first claim at least 1 s after the run.
        failed = [e for e in run_events(board, run.id) if e.kind == "failed"]
        assert failed[0].at - run.created_at >= 1.0
        assert board.get_task(plain.id).status == "ready"  # never failed for waiting
        assert board.get_task(plain.id).attempts == 0
    finally:
        board.close()
