"""Running a task: one chat completion through the assignee's real gateway to the fake
provider, and its outcome on the board.

200 -> done with the answer; 429 -> ready again after Retry-After (or the cooldown),
not counted; 5xx, timeouts, a gateway killed mid-request -> counted, retried after an
exponential backoff, then blocked with a `gave_up` event naming the last error.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator

import pytest

from hermes_container.home import HermesHome
from hermes_container.kanban.dispatcher import Dispatcher
from hermes_container.kanban.gateways import GatewayDirectory
from hermes_container.kanban.prompt import MAX_PIECE_CHARS, task_text
from hermes_container.kanban.runner import retry_after_seconds, session_id
from hermes_container.kanban.store import Store
from tests.conftest import wait_for
from tests.fake_upstream import FakeUpstream
from tests.unit import kanban_support
from tests.unit.conftest import GatewayProfile
from tests.unit.kanban_support import (
    ELSEWHERE,
    Clock,
    events_of,
    kinds,
    last_event,
    open_test_store,
    set_kanban,
    tick_and_wait,
)

# The shared fixtures (kanban_support): pytest finds them by name in this module.
clock = kanban_support.clock
dispatcher = kanban_support.dispatcher
home = kanban_support.home
site = kanban_support.site
store = kanban_support.store
upstream = kanban_support.upstream


@contextlib.contextmanager
def own_board(home: HermesHome) -> Iterator[tuple[Store, Dispatcher, Clock]]:
    """Store, dispatcher and clock on a home of the test's own (its own gateways)."""
    clock = Clock()
    store = open_test_store(home, clock)
    dispatcher = Dispatcher(home, store)
    try:
        yield store, dispatcher, clock
    finally:
        dispatcher.wait_all(timeout=30)
        store.close()


def exchanges(profile: GatewayProfile) -> list[tuple[str, int, str | None]]:
    """(session_id, status, response_text) of each exchange in the gateway's session store."""
    db = profile.dir / "sessions.db"
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT session_id, status, response_text FROM exchanges ORDER BY id"
        ).fetchall()
    return [(r[0], int(r[1]), r[2]) for r in rows]


# -- success --------------------------------------------------------------------------


def test_a_task_runs_through_its_assignees_gateway_and_is_done_with_the_answer(
    hermes_home: HermesHome,
    make_profile: Callable[[str], GatewayProfile],
    fake_upstream: FakeUpstream,
) -> None:
    with own_board(hermes_home) as (store, dispatcher, _clock):
        alpha, beta = make_profile("alpha"), make_profile("beta")
        (alpha.dir / "SOUL.md").write_text("You are alpha.\n")
        (beta.dir / "SOUL.md").write_text("You are beta, the reviewer.\n")
        alpha.start()
        beta.start()
        parent = store.create_task("write the draft", assignee="alpha")
        other = store.create_task("collect sources", assignee="alpha")
        task = store.create_task(
            "review the draft",
            body="Check the tone.\nBe brief.",
            assignee="beta",
            parents=[parent.id, other.id],
        )
        store.comment(task.id, "mind the second paragraph", author="ana")
        store.comment(task.id, "and the title")

        fake_upstream.set(reply="THE DRAFT TEXT")
        report = tick_and_wait(dispatcher)
        assert sorted(report.completed) == sorted([parent.id, other.id])
        fake_upstream.set(
            reply="Looks good.",
            usage={"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42},
        )
        report = tick_and_wait(dispatcher)
        assert report.spawned == [{"task_id": task.id, "assignee": "beta"}]
        assert report.completed == [task.id]

        # The provider got beta's persona first, then one user message built from the board.
        request = fake_upstream.requests[-1]
        messages = request.body["messages"]
        assert messages[0] == {"role": "system", "content": "You are beta, the reviewer."}
        (user,) = messages[1:]
        assert user["role"] == "user"
        text = user["content"]
        expected_order = [
            f"Task #{task.id}: review the draft",
            "Check the tone.\nBe brief.",
            f"#{parent.id} write the draft",
            "THE DRAFT TEXT",
            f"#{other.id} collect sources",
            "- ana: mind the second paragraph",
            "- someone: and the title",
        ]
        positions = [text.index(piece) for piece in expected_order]
        assert positions == sorted(positions)
        assert request.body["stream"] is False
        parents = [store.get_task(parent.id), store.get_task(other.id)]
        comments = [("ana", "mind the second paragraph"), (None, "and the title")]
        assert text == task_text(store.get_task(task.id), parents, comments)

        row = store.get_task(task.id)
        assert (row.status, row.result, row.attempts, row.consecutive_failures) == (
            "done",
            "Looks good.",
            1,
            0,
        )
        assert row.finished_at is not None and row.current_run is None
        (run,) = store.runs_of(task.id)
        assert (run.outcome, run.tokens, run.error) == ("completed", 42, None)
        assert run.latency_ms is not None and run.latency_ms >= 0
        assert kinds(store, task.id)[-2:] == ["claimed", "completed"]
        assert last_event(store, task.id, "completed").data["tokens"] == 42

        # Recorded in beta's own session store under kanban-<id>; alpha's has its two.
        assert session_id(task.id) == f"kanban-{task.id}"
        wait_for(lambda: exchanges(beta), what="beta's exchange row")
        assert exchanges(beta) == [(f"kanban-{task.id}", 200, "Looks good.")]
        wait_for(lambda: len(exchanges(alpha)) == 2, what="alpha's exchange rows")
        assert sorted(e[0] for e in exchanges(alpha)) == sorted(
            [f"kanban-{parent.id}", f"kanban-{other.id}"]
        )


def test_long_pieces_are_cut_so_one_huge_result_cannot_break_the_request(
    store: Store, dispatcher: Dispatcher, upstream: FakeUpstream
) -> None:
    parent = store.create_task("big", assignee="alpha")
    run = store.claim(ELSEWHERE, task_id=parent.id)
    assert run is not None
    store.complete(run, "x" * (MAX_PIECE_CHARS * 3))
    child = store.create_task("small", assignee="alpha", parents=[parent.id])
    report = tick_and_wait(dispatcher)
    assert report.completed == [child.id]
    text = upstream.requests[-1].body["messages"][-1]["content"]
    assert f"[... {MAX_PIECE_CHARS * 2} characters cut]" in text
    assert len(text) < MAX_PIECE_CHARS + 1000


def test_usage_without_tokens_leaves_them_unknown(
    store: Store, dispatcher: Dispatcher, upstream: FakeUpstream
) -> None:
    upstream.set(reply="fine", usage=None)
    task = store.create_task("no usage", assignee="alpha")
    assert tick_and_wait(dispatcher).completed == [task.id]
    (run,) = store.runs_of(task.id)
    assert (run.outcome, run.tokens) == ("completed", None)


# -- 429 ------------------------------------------------------------------------------


def test_429_makes_the_task_ready_again_after_retry_after_without_counting(
    home: HermesHome,
    store: Store,
    dispatcher: Dispatcher,
    clock: Clock,
    upstream: FakeUpstream,
) -> None:
    task = store.create_task("busy provider", assignee="alpha")
    upstream.set(status=429, error="slow down", headers={"retry-after": "7"})
    report = tick_and_wait(dispatcher)
    assert report.rate_limited == [task.id]
    assert report.failed == [] and report.gave_up == []
    row = store.get_task(task.id)
    assert (row.status, row.attempts, row.consecutive_failures) == ("ready", 1, 0)
    assert row.not_before == pytest.approx(clock.now + 7, abs=0.01)
    assert row.last_error is None
    assert store.runs_of(task.id)[-1].outcome == "rate_limited"
    assert last_event(store, task.id, "rate_limited").data["retry_after"] == 7
    assert "failed" not in kinds(store, task.id)

    # Not before the provider said so ...
    clock.advance(6.9)
    report = tick_and_wait(dispatcher)
    assert report.spawned == []
    assert len(upstream.requests) == 1
    # ... then again, as a fresh attempt that no failure weighs on.
    clock.advance(0.2)
    upstream.set(reply="ok now")
    report = tick_and_wait(dispatcher)
    assert report.completed == [task.id]
    row = store.get_task(task.id)
    assert (row.status, row.result, row.attempts, row.consecutive_failures) == (
        "done",
        "ok now",
        2,
        0,
    )


def test_429_without_retry_after_waits_the_cooldown(
    home: HermesHome,
    store: Store,
    dispatcher: Dispatcher,
    clock: Clock,
    upstream: FakeUpstream,
) -> None:
    set_kanban(home, rate_limit_cooldown_seconds=42, failure_limit=1)
    task = store.create_task("busy provider", assignee="alpha")
    upstream.set(status=429)
    for attempt in (1, 2, 3):  # never counted: failure_limit 1 would block at once
        report = tick_and_wait(dispatcher)
        assert report.rate_limited == [task.id]
        row = store.get_task(task.id)
        assert (row.status, row.attempts, row.consecutive_failures) == ("ready", attempt, 0)
        assert row.not_before == pytest.approx(clock.now + 42, abs=0.01)
        clock.advance(42)


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    now = 1_700_000_000.0
    assert retry_after_seconds("7", now) == 7.0
    assert retry_after_seconds(" 2.5 ", now) == 2.5
    assert retry_after_seconds("-3", now) == 0.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert retry_after_seconds(date, now) == pytest.approx(30.0)
    assert retry_after_seconds(email.utils.formatdate(now - 30, usegmt=True), now) == 0.0
    for unusable in (None, "", "soon", "inf", "nan"):
        assert retry_after_seconds(unusable, now) is None


# -- counted failures -------------------------------------------------------------------


def test_errors_are_retried_after_an_exponential_backoff_then_given_up(
    home: HermesHome,
    store: Store,
    dispatcher: Dispatcher,
    clock: Clock,
    upstream: FakeUpstream,
) -> None:
    set_kanban(home, failure_limit=4, retry_backoff_seconds=10, retry_backoff_max_seconds=25)
    task = store.create_task("always breaks", assignee="alpha")
    upstream.set(status=500, error="provider on fire")
    # base x 2^(n-1), capped at 25, shortened by at most 10 % jitter.
    for failures, (low, high) in enumerate(((9, 10), (18, 20), (22.5, 25)), start=1):
        report = tick_and_wait(dispatcher)
        assert report.failed == [task.id], report
        row = store.get_task(task.id)
        assert (row.status, row.attempts, row.consecutive_failures) == ("todo", failures, failures)
        assert row.not_before is not None
        assert low - 0.001 <= row.not_before - clock.now <= high + 0.001
        assert "HTTP 502" in (row.last_error or "")
        assert "provider on fire" in (row.last_error or "")
        scheduled = last_event(store, task.id, "retry_scheduled")
        assert scheduled.data["failures"] == failures
        assert tick_and_wait(dispatcher).spawned == []  # not before its time
        clock.advance(row.not_before - clock.now + 0.01)
    report = tick_and_wait(dispatcher)
    assert report.promoted == [task.id]
    assert report.gave_up == [task.id]
    row = store.get_task(task.id)
    assert (row.status, row.attempts, row.consecutive_failures) == ("blocked", 4, 4)
    gave_up = last_event(store, task.id, "gave_up")
    assert "provider on fire" in gave_up.data["error"]
    assert gave_up.data["limit"] == 4
    assert [r.outcome for r in store.runs_of(task.id)] == ["failed"] * 4
    # Blocked means blocked: later ticks leave it alone.
    clock.advance(10_000)
    assert tick_and_wait(dispatcher).spawned == []
    assert len(upstream.requests) == 4


@pytest.mark.parametrize(("max_retries", "attempts"), [(0, 1), (1, 2)])
def test_a_tasks_max_retries_overrides_the_failure_limit(
    home: HermesHome,
    store: Store,
    dispatcher: Dispatcher,
    clock: Clock,
    upstream: FakeUpstream,
    max_retries: int,
    attempts: int,
) -> None:
    set_kanban(home, failure_limit=5, retry_backoff_seconds=1)
    task = store.create_task("strict", assignee="alpha", max_retries=max_retries)
    upstream.set(status=503)
    for _ in range(attempts):
        report = tick_and_wait(dispatcher)
        clock.advance(5)
    assert report.gave_up == [task.id]
    row = store.get_task(task.id)
    assert (row.status, row.attempts) == ("blocked", attempts)
    assert len(upstream.requests) == attempts


def test_a_reply_without_an_answer_is_a_counted_failure(
    store: Store, dispatcher: Dispatcher, upstream: FakeUpstream
) -> None:
    upstream.set(reply="   ")
    task = store.create_task("mute provider", assignee="alpha")
    report = tick_and_wait(dispatcher)
    assert report.failed == [task.id]
    row = store.get_task(task.id)
    assert (row.status, row.consecutive_failures, row.result) == ("todo", 1, None)
    assert "no answer" in (row.last_error or "")


def test_no_reply_within_the_request_timeout_is_a_counted_failure(
    home: HermesHome,
    store: Store,
    dispatcher: Dispatcher,
    upstream: FakeUpstream,
) -> None:
    set_kanban(home, request_timeout_seconds=0.5)
    upstream.set(delay=4)
    task = store.create_task("hangs", assignee="alpha")
    started = time.monotonic()
    report = tick_and_wait(dispatcher)
    assert time.monotonic() - started < 3
    assert report.failed == [task.id]
    row = store.get_task(task.id)
    assert (row.status, row.consecutive_failures) == ("todo", 1)
    assert row.last_error == "no reply from the gateway within 0.5s"
    assert store.runs_of(task.id)[0].outcome == "failed"


def test_a_run_past_its_max_runtime_is_timed_out_by_its_runner(
    home: HermesHome,
    store: Store,
    dispatcher: Dispatcher,
    clock: Clock,
    upstream: FakeUpstream,
) -> None:
    """Measured on this host's clock from the claim, whatever the board's clock says
    (here a fake one, frozen: the run still ends after its 0.6 s)."""
    upstream.set(delay=4)
    task = store.create_task("too slow", assignee="alpha", max_runtime=0.6, max_retries=1)
    started = time.monotonic()
    report = tick_and_wait(dispatcher)
    took = time.monotonic() - started
    assert 0.5 <= took < 3
    assert report.timed_out == [task.id]
    row = store.get_task(task.id)
    assert (row.status, row.consecutive_failures) == ("todo", 1)
    assert kinds(store, task.id)[-2:] == ["timed_out", "retry_scheduled"]
    assert store.runs_of(task.id)[0].outcome == "timed_out"
    clock.advance(3600)
    report = tick_and_wait(dispatcher)
    assert report.gave_up == [task.id]
    assert store.get_task(task.id).status == "blocked"
    assert "max_runtime" in last_event(store, task.id, "gave_up").data["error"]


def test_a_gateway_killed_mid_request_is_a_counted_failure_and_then_down(
    hermes_home: HermesHome,
    make_profile: Callable[[str], GatewayProfile],
    fake_upstream: FakeUpstream,
) -> None:
    with own_board(hermes_home) as (store, dispatcher, clock):
        alpha = make_profile("alpha")
        gateway = alpha.start()
        fake_upstream.set(delay=20)
        task = store.create_task("interrupted", assignee="alpha")
        report = dispatcher.tick()
        assert report.spawned == [{"task_id": task.id, "assignee": "alpha"}]
        fake_upstream.wait_for_requests(1)
        gateway.popen.send_signal(signal.SIGKILL)
        gateway.popen.wait(10)
        outcomes = dispatcher.wait_all(timeout=10)
        assert [o.kind for o in outcomes] == ["failed"]
        row = store.get_task(task.id)
        assert (row.status, row.attempts, row.consecutive_failures) == ("todo", 1, 1)
        assert "alpha" in (row.last_error or "") and "mid-request" in (row.last_error or "")
        failed = last_event(store, task.id, "failed")
        assert failed.data["error"] == row.last_error

        # Its retry comes due while the gateway is still down: skipped, not counted again.
        clock.advance(3600)
        report = tick_and_wait(dispatcher)
        assert report.promoted == [task.id]
        assert report.skipped_gateway_down == [task.id]
        row = store.get_task(task.id)
        assert (row.status, row.attempts, row.consecutive_failures) == ("ready", 1, 1)
        # Back up: it runs and succeeds, and the failure count starts over.
        fake_upstream.set(reply="finally")
        alpha.start()
        assert tick_and_wait(dispatcher).completed == [task.id]
        row = store.get_task(task.id)
        assert (row.status, row.result, row.consecutive_failures) == ("done", "finally", 0)
        assert [e.kind for e in events_of(store, task.id)].count("claimed") == 2


class StaleProbe(GatewayDirectory):
    """Every gateway answered its health probe a moment ago (and may have stopped since)."""

    def is_up(self, profile: str) -> bool:
        return self.endpoint(profile) is not None


def test_a_gateway_gone_between_probe_and_request_is_not_a_failure(
    home: HermesHome, store: Store, upstream: FakeUpstream
) -> None:
    """gamma's gateway is not running: its port refuses the connection, so the request
    never reached a gateway. The task goes back to ready, uncounted, like a task the
    tick skipped as skipped_gateway_down."""
    task = store.create_task("for gamma", assignee="gamma")
    report = tick_and_wait(Dispatcher(home, store, gateways=StaleProbe(home)))
    assert report.spawned == [{"task_id": task.id, "assignee": "gamma"}]
    assert report.skipped_gateway_down == [task.id]
    assert report.failed == [] and report.gave_up == []
    row = store.get_task(task.id)
    assert (row.status, row.consecutive_failures, row.last_error) == ("ready", 0, None)
    assert [r.outcome for r in store.runs_of(task.id)] == ["reclaimed"]
    assert "gamma" in last_event(store, task.id, "reclaimed").data["reason"]
    assert "failed" not in kinds(store, task.id)
    # The next tick's real probe sees the gateway down and leaves the task alone.
    report = tick_and_wait(Dispatcher(home, store))
    assert report.skipped_gateway_down == [task.id] and report.spawned == []
    assert upstream.requests == []


def test_the_gateway_is_called_with_the_profiles_own_key(
    hermes_home: HermesHome,
    make_profile: Callable[[str], GatewayProfile],
    fake_upstream: FakeUpstream,
) -> None:
    """A gateway answers only its own profile's key: a key that changed on disk after
    the gateway started (so the dispatcher sends the new one) is refused, counted."""
    with own_board(hermes_home) as (store, dispatcher, _clock):
        alpha = make_profile("alpha")
        alpha.start()
        env = alpha.dir / ".env"
        env.write_text(
            "\n".join(
                "API_SERVER_KEY=not-the-running-key" if line.startswith("API_SERVER_KEY=") else line
                for line in env.read_text().splitlines()
            )
            + "\n"
        )
        task = store.create_task("wrong key", assignee="alpha")
        report = tick_and_wait(dispatcher)
        assert report.failed == [task.id]
        assert "HTTP 401" in (store.get_task(task.id).last_error or "")
        assert fake_upstream.requests == []  # refused at the gateway, never relayed
        json.dumps(report.to_json())  # and the report stays JSON
