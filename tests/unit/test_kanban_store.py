"""The board store's contract, run against both backends: SQLite in a temp HERMES_HOME
and PostgreSQL on a real server the session starts (tests/postgres_server.py)."""

from __future__ import annotations

import sqlite3
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hermes_container.errors import UsageError
from hermes_container.home import HermesHome
from hermes_container.kanban import schema, sqlite_store
from hermes_container.kanban.errors import (
    InvalidTransition,
    NotFound,
    NotHolder,
    StoreUnavailable,
)
from hermes_container.kanban.model import ClaimLimits, Holder, RetryPolicy
from hermes_container.kanban.store import Store, open_store, sqlite_path

HOLDER = Holder(host="host-a", pid=4242)
NO_JITTER = RetryPolicy(failure_limit=2, backoff_seconds=10, backoff_max_seconds=25, jitter=0)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


StoreFactory = Callable[..., Store]


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_store(
    backend: str, request: pytest.FixtureRequest, hermes_home: HermesHome
) -> Iterator[StoreFactory]:
    """Opens stores on one fresh board database; closes them at the end."""
    env: dict[str, str] = {}
    if backend == "postgresql":
        server = request.getfixturevalue("postgres_server")
        import psycopg

        # A fresh schema per test: cheaper than a database, and just as empty.
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
            conn.execute("CREATE SCHEMA public")
        env["HERMES_KANBAN_DATABASE_URL"] = server.url()
    opened: list[Store] = []

    def make(clock: Callable[[], float] | None = None) -> Store:
        store = open_store(hermes_home, env, clock=clock)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(make_store: StoreFactory, clock: Clock) -> Store:
    return make_store(clock)


def kinds(store: Store, task_id: int) -> list[str]:
    return [event.kind for event in store.events_since(0, task_id=task_id)]


# -- boards ---------------------------------------------------------------------------


def test_default_board_exists_and_boards_follow_the_name_rule(store: Store) -> None:
    assert [board.slug for board in store.list_boards()] == ["default"]
    store.create_board("ops")
    assert [board.slug for board in store.list_boards()] == ["default", "ops"]
    for bad in ("Ops", "", "a/b", "-x", "x" * 64):
        with pytest.raises(UsageError):
            store.create_board(bad)
    with pytest.raises(UsageError, match="already exists"):
        store.create_board("ops")
    with pytest.raises(UsageError, match="default board"):
        store.archive_board("default")
    store.archive_board("ops")
    assert [board.slug for board in store.list_boards()] == ["default"]
    assert [b.slug for b in store.list_boards(include_archived=True)] == ["default", "ops"]
    with pytest.raises(InvalidTransition, match="archived"):
        store.create_task("late", board="ops")
    with pytest.raises(NotFound):
        store.create_task("nowhere", board="nope")


def test_reopening_keeps_the_schema_and_the_default_board(make_store: StoreFactory) -> None:
    first = make_store()
    task = first.create_task("kept")
    second = make_store()
    assert second.get_task(task.id) == task
    assert [board.slug for board in second.list_boards()] == ["default"]


# -- create ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"title": ""},
        {"title": "   "},
        {"title": "two\nlines"},
        {"title": "x" * 501},
        {"title": "t", "assignee": "Not A Profile"},
        {"title": "t", "priority": True},
        {"title": "t", "priority": "1"},
        {"title": "t", "max_retries": -1},
        {"title": "t", "max_runtime": 0},
        {"title": "t", "max_runtime": True},
        {"title": "t", "idempotency_key": ""},
        {"title": "t", "parents": [999]},
    ],
)
def test_create_refuses_bad_input_and_writes_nothing(store: Store, kwargs: dict[str, Any]) -> None:
    kwargs = dict(kwargs)
    title = kwargs.pop("title")
    with pytest.raises(UsageError):
        store.create_task(title, **kwargs)
    assert store.list_tasks() == []
    assert store.events_since(0) == []


def test_create_records_the_task_and_its_events(store: Store, clock: Clock) -> None:
    task = store.create_task(
        "  write the report ",
        body="details",
        assignee="coder",
        priority=5,
        max_retries=3,
        max_runtime=60,
    )
    assert task.title == "write the report"
    assert (task.board, task.body, task.assignee, task.priority) == (
        "default", "details", "coder", 5,
    )  # fmt: skip
    assert task.status == "ready"  # no parents: nothing to wait for
    assert (task.max_retries, task.max_runtime, task.created_at) == (3, 60.0, clock.now)
    assert (task.attempts, task.consecutive_failures, task.current_run) == (0, 0, None)
    events = store.events_since(0)
    assert [e.kind for e in events] == ["created", "assigned"]
    assert events[1].data == {"assignee": "coder", "previous": None, "source": "create"}
    assert store.get_task(task.id) == task
    with pytest.raises(NotFound):
        store.get_task(task.id + 100)


def test_triage_tasks_wait_for_a_person(store: Store) -> None:
    task = store.create_task("unsorted", triage=True)
    assert task.status == "triage"
    assert store.promote() == []
    assert store.unblock(task.id).status == "todo"
    assert store.promote() == [task.id]


def test_parents_must_exist_on_the_same_board(store: Store) -> None:
    store.create_board("other")
    elsewhere = store.create_task("elsewhere", board="other")
    with pytest.raises(UsageError, match="do not exist on board"):
        store.create_task("child", parents=[elsewhere.id])
    archived = store.create_task("gone")
    store.archive(archived.id)
    with pytest.raises(UsageError, match="archived"):
        store.create_task("child", parents=[archived.id])
    assert [t.title for t in store.list_tasks()] == ["gone"]


def test_a_child_waits_until_every_parent_is_done(store: Store) -> None:
    a = store.create_task("a", assignee="coder")
    b = store.create_task("b", assignee="coder")
    child = store.create_task("child", assignee="coder", parents=[b.id, a.id, a.id])
    assert child.parents == (a.id, b.id)
    assert child.status == "todo"
    for parent in (a, b):
        assert store.promote() == []
        run = store.claim(HOLDER, assignees=["coder"])
        assert run is not None and run.task_id == parent.id
        store.complete(run, "ok")
    assert store.promote() == [child.id]
    assert store.get_task(child.id).status == "ready"
    # All parents done at creation: ready at once.
    assert store.create_task("late child", parents=[a.id]).status == "ready"


def test_idempotency_key_returns_the_existing_task_and_writes_nothing(store: Store) -> None:
    first = store.create_task("job", idempotency_key="job:nightly:2026-12-03")
    before = store.events_since(0)
    again = store.create_task("other title", idempotency_key="job:nightly:2026-12-03")
    assert again == first
    assert store.events_since(0) == before
    assert len(store.list_tasks()) == 1
    store.create_board("b2")
    elsewhere = store.create_task("job", board="b2", idempotency_key="job:nightly:2026-12-03")
    assert elsewhere.id != first.id


def test_list_filters_and_orders_by_priority_then_age(store: Store, clock: Clock) -> None:
    low = store.create_task("low", assignee="a", priority=0)
    clock.now += 1
    high = store.create_task("high", assignee="b", priority=9)
    clock.now += 1
    low2 = store.create_task("low2", assignee="a", priority=0)
    store.block(low2.id, "waiting on a person")
    assert [t.id for t in store.list_tasks()] == [high.id, low.id, low2.id]
    assert [t.id for t in store.list_tasks(assignee="a")] == [low.id, low2.id]
    assert [t.id for t in store.list_tasks(status="blocked")] == [low2.id]
    assert [t.id for t in store.list_tasks(limit=1)] == [high.id]
    with pytest.raises(UsageError):
        store.list_tasks(status="nonsense")


# -- assign, comment, block, archive ------------------------------------------------------


def test_assign_records_its_source(store: Store) -> None:
    task = store.create_task("t")
    assert store.assign(task.id, "coder", source="kanban.default_assignee").assignee == "coder"
    store.assign(task.id, "coder")  # no change, no event
    assert store.assign(task.id, None).assignee is None
    assigned = [e.data for e in store.events_since(0, task_id=task.id) if e.kind == "assigned"]
    assert assigned == [
        {"assignee": "coder", "previous": None, "source": "kanban.default_assignee"},
        {"assignee": None, "previous": "coder", "source": "user"},
    ]
    with pytest.raises(UsageError):
        store.assign(task.id, "Bad Name")


def test_comment_block_unblock_archive(store: Store) -> None:
    task = store.create_task("t", assignee="coder")
    store.comment(task.id, "use the new data", author="alice")
    with pytest.raises(UsageError):
        store.comment(task.id, "  ")
    with pytest.raises(UsageError):
        store.block(task.id, "")
    blocked = store.block(task.id, "needs a decision")
    assert (blocked.status, blocked.last_error) == ("blocked", "needs a decision")
    with pytest.raises(InvalidTransition):
        store.block(task.id, "again")
    assert store.claim(HOLDER) is None
    assert store.unblock(task.id).status == "todo"
    with pytest.raises(InvalidTransition):
        store.unblock(task.id)
    assert store.promote() == [task.id]
    assert store.archive(task.id).status == "archived"
    with pytest.raises(InvalidTransition):
        store.archive(task.id)
    assert kinds(store, task.id) == [
        "created", "assigned", "commented", "blocked", "unblocked", "archived",
    ]  # fmt: skip
    comment = store.events_since(0, task_id=task.id)[2]
    assert comment.data == {"text": "use the new data", "author": "alice"}


def test_a_running_task_cannot_be_blocked_reassigned_or_archived(store: Store) -> None:
    task = store.create_task("t", assignee="coder")
    assert store.claim(HOLDER) is not None
    actions: list[Callable[[], object]] = [
        lambda: store.block(task.id, "stop"),
        lambda: store.assign(task.id, "other"),
        lambda: store.archive(task.id),
    ]
    for action in actions:
        with pytest.raises(InvalidTransition, match="running"):
            action()
    assert store.get_task(task.id).status == "running"


# -- claim ------------------------------------------------------------------------------


def test_claim_takes_priority_then_age_and_skips_unassigned(store: Store, clock: Clock) -> None:
    store.create_task("unassigned", priority=100)
    old = store.create_task("old", assignee="coder", priority=1)
    clock.now += 1
    store.create_task("new", assignee="coder", priority=1)
    clock.now += 1
    urgent = store.create_task("urgent", assignee="coder", priority=7)
    first = store.claim(HOLDER)
    second = store.claim(HOLDER)
    assert first is not None and second is not None
    assert [first.task_id, second.task_id] == [urgent.id, old.id]
    task = store.get_task(urgent.id)
    assert (task.status, task.attempts, task.current_run, task.started_at) == (
        "running", 1, first.id, clock.now,
    )  # fmt: skip
    assert (first.host, first.pid, first.claimed_at) == ("host-a", 4242, clock.now)
    assert first.claim_expires_at == clock.now + 300
    claimed = store.events_since(0, task_id=urgent.id)[-1]
    assert claimed.kind == "claimed"
    assert claimed.data["run_id"] == first.id and claimed.data["host"] == "host-a"


def test_claim_respects_the_caps_and_the_assignee_filter(store: Store) -> None:
    for name in ("a", "a", "a", "b", "b", "c"):
        store.create_task(f"task for {name}", assignee=name)
    per_profile = ClaimLimits(max_in_progress_per_profile=1)
    claimed = [store.claim(HOLDER, per_profile) for _ in range(4)]
    assert claimed[3] is None
    assignees = sorted(store.get_task(run.task_id).assignee or "" for run in claimed if run)
    assert assignees == ["a", "b", "c"]
    assert store.running_counts() == {"a": 1, "b": 1, "c": 1}
    # Room again for "a" after it finishes; "b" is still full.
    run_a = next(run for run in claimed if run and store.get_task(run.task_id).assignee == "a")
    store.complete(run_a, "done")
    assert store.claim(HOLDER, per_profile, assignees=["b"]) is None
    assert store.claim(HOLDER, ClaimLimits(max_in_progress=2)) is None  # board: 2 running
    assert store.claim(HOLDER, per_profile, assignees=[]) is None
    run = store.claim(HOLDER, ClaimLimits(max_in_progress=3, max_in_progress_per_profile=1))
    assert run is not None and store.get_task(run.task_id).assignee == "a"
    # 0, negative or non-integer caps mean no cap.
    loose = ClaimLimits(max_in_progress=0, max_in_progress_per_profile=-1)
    assert store.claim(HOLDER, loose) is not None
    assert store.claim(HOLDER, loose) is not None
    assert store.claim(HOLDER, loose) is None  # nothing ready left


def test_claim_tasks_claims_the_chosen_ones_in_one_go_under_the_caps(store: Store) -> None:
    ids = [store.create_task(f"t{i}", assignee=name).id for i, name in enumerate("aabbc")]
    unassigned = store.create_task("nobody").id
    blocked = store.create_task("held", assignee="c")
    store.block(blocked.id, "not yet")
    per_profile = ClaimLimits(max_in_progress_per_profile=1)
    wanted = [ids[1], ids[0], unassigned, blocked.id, ids[2], ids[4], ids[3]]
    runs = store.claim_tasks(HOLDER, wanted, per_profile)
    # In the order given; the second "a" and second "b" are over the per-profile cap;
    # the unassigned and the blocked task are not claimable.
    assert [r.task_id for r in runs] == [ids[1], ids[2], ids[4]]
    assert store.running_counts() == {"a": 1, "b": 1, "c": 1}
    for run in runs:
        task = store.get_task(run.task_id)
        assert task.status == "running" and task.current_run == run.id and task.attempts == 1
        assert store.runs_of(run.task_id) == [run]  # the returned run is the stored one
    # Claimed already: nothing twice. The board cap stops the walk.
    assert store.claim_tasks(HOLDER, [ids[1]], ClaimLimits()) == []
    assert store.claim_tasks(HOLDER, [ids[0], ids[3]], ClaimLimits(max_in_progress=4)) == [
        store.runs_of(ids[0])[0]
    ]
    assert store.get_task(ids[3]).status == "ready"
    assert store.claim_tasks(HOLDER, [], ClaimLimits()) == []
    kinds = [e.kind for e in store.events_since(0) if e.kind == "claimed"]
    assert len(kinds) == 4


def test_claim_on_another_board_and_on_an_archived_one(store: Store) -> None:
    store.create_board("ops")
    task = store.create_task("t", board="ops", assignee="coder")
    assert store.claim(HOLDER) is None
    run = store.claim(HOLDER, board="ops")
    assert run is not None and run.task_id == task.id
    store.create_task("t2", board="ops", assignee="coder")
    store.archive_board("ops")
    with pytest.raises(InvalidTransition):
        store.claim(HOLDER, board="ops")


# -- complete -------------------------------------------------------------------------


def test_only_the_current_holder_completes(store: Store, clock: Clock) -> None:
    task = store.create_task("t", assignee="coder")
    run = store.claim(HOLDER)
    assert run is not None
    forged = type(run)(**{**{f: getattr(run, f) for f in run.__slots__}, "token": "0" * 32})
    before = store.events_since(0)
    with pytest.raises(NotHolder, match="wrong run token"):
        store.complete(forged, "stolen")
    assert store.events_since(0) == before
    assert store.get_task(task.id).status == "running"
    clock.now += 2
    done = store.complete(run, "the answer", latency_ms=1234, tokens=56)
    assert (done.status, done.result, done.finished_at, done.current_run) == (
        "done", "the answer", clock.now, None,
    )  # fmt: skip
    [stored] = store.runs_of(task.id)
    assert (stored.outcome, stored.latency_ms, stored.tokens) == ("completed", 1234, 56)
    with pytest.raises(NotHolder, match="no longer holds"):
        store.complete(run, "twice")
    assert store.get_task(task.id).result == "the answer"
    assert kinds(store, task.id)[-1] == "completed"


def test_complete_goes_by_the_stored_run_not_the_callers_copy(store: Store) -> None:
    # complete() tries the task the Run names first; a Run whose task_id is wrong (built
    # by hand) still completes the run's own task, and an unknown run is NotFound.
    first = store.create_task("first", assignee="coder")
    second = store.create_task("second", assignee="coder")
    run = store.claim(HOLDER, task_id=second.id)
    assert run is not None
    before = store.events_since(0)
    with pytest.raises(NotFound):
        store.complete(type(run)(**{**{f: getattr(run, f) for f in run.__slots__}, "id": 999}), "x")
    assert store.events_since(0) == before
    misnamed = type(run)(**{**{f: getattr(run, f) for f in run.__slots__}, "task_id": first.id})
    done = store.complete(misnamed, "answer")
    assert (done.id, done.status, done.result) == (second.id, "done", "answer")
    assert store.get_task(first.id).status == "ready"
    assert [r.outcome for r in store.runs_of(second.id)] == ["completed"]


def test_a_released_holder_cannot_complete(store: Store) -> None:
    task = store.create_task("t", assignee="coder")
    old = store.claim(HOLDER)
    assert old is not None
    released = store.release(old.id, reason="holder pid 4242 is gone")
    assert (released.status, released.consecutive_failures) == ("ready", 0)
    new = store.claim(Holder("host-b", 7))
    assert new is not None and new.task_id == task.id
    with pytest.raises(NotHolder):
        store.complete(old, "late answer")
    with pytest.raises(NotHolder):
        store.release(old.id)
    store.complete(new, "fresh answer")
    task = store.get_task(task.id)
    assert (task.result, task.attempts) == ("fresh answer", 2)
    assert [r.outcome for r in store.runs_of(task.id)] == ["reclaimed", "completed"]
    reclaimed = [e for e in store.events_since(0, task_id=task.id) if e.kind == "reclaimed"]
    assert reclaimed[0].data["host"] == "host-a" and reclaimed[0].data["pid"] == 4242


def test_extend_claim_moves_the_expiry(store: Store, clock: Clock) -> None:
    store.create_task("t", assignee="coder")
    run = store.claim(HOLDER, ClaimLimits(claim_ttl_seconds=30))
    assert run is not None
    clock.now += 20
    assert store.extend_claim(run, 30).claim_expires_at == clock.now + 30
    assert [r.id for r in store.open_runs()] == [run.id]


# -- failures -------------------------------------------------------------------------


def test_failures_back_off_then_give_up(store: Store, clock: Clock) -> None:
    task = store.create_task("flaky", assignee="coder")
    run = store.claim(HOLDER)
    assert run is not None
    failed = store.fail(run, "HTTP 500", NO_JITTER, latency_ms=10)
    assert (failed.status, failed.consecutive_failures, failed.last_error) == (
        "todo", 1, "HTTP 500",
    )  # fmt: skip
    assert failed.not_before == clock.now + 10
    assert store.promote() == []  # backoff not over
    clock.now += 10
    assert store.promote() == [task.id]
    run = store.claim(HOLDER)
    assert run is not None
    gave_up = store.fail(run, "HTTP 502", NO_JITTER)
    assert (gave_up.status, gave_up.consecutive_failures, gave_up.last_error) == (
        "blocked", 2, "HTTP 502",
    )  # fmt: skip
    assert kinds(store, task.id)[-5:] == [
        "failed", "retry_scheduled", "claimed", "failed", "gave_up",
    ]  # fmt: skip
    last = store.events_since(0, task_id=task.id)[-1]
    assert last.data["error"] == "HTTP 502"
    with pytest.raises(NotHolder):
        store.fail(run, "again", NO_JITTER)
    # A person unblocks it: the count starts over.
    assert store.unblock(task.id).consecutive_failures == 0


def test_backoff_doubles_up_to_its_cap_and_max_retries_wins(store: Store, clock: Clock) -> None:
    task = store.create_task("stubborn", assignee="coder", max_retries=3)
    delays = []
    for _ in range(3):
        clock.now += 1000
        store.promote()
        run = store.claim(HOLDER)
        assert run is not None
        failed = store.fail(run, "boom", NO_JITTER)
        assert failed.status == "todo"
        assert failed.not_before is not None
        delays.append(failed.not_before - clock.now)
    assert delays == [10, 20, 25]
    clock.now += 1000
    store.promote()
    run = store.claim(HOLDER)
    assert run is not None
    assert store.fail(run, "boom", NO_JITTER).status == "blocked"  # 1 + max_retries tries
    assert store.get_task(task.id).attempts == 4


def test_jitter_only_shortens_the_delay(store: Store, clock: Clock) -> None:
    store.create_task("t", assignee="coder", max_retries=5)
    run = store.claim(HOLDER)
    assert run is not None
    policy = RetryPolicy(backoff_seconds=100, backoff_max_seconds=1000, jitter=0.5)
    not_before = store.fail(run, "boom", policy).not_before
    assert not_before is not None and 50 <= not_before - clock.now <= 100


def test_time_out_is_counted_and_rate_limit_is_not(store: Store, clock: Clock) -> None:
    task = store.create_task("slow", assignee="coder", max_runtime=5)
    run = store.claim(HOLDER)
    assert run is not None
    timed_out = store.time_out(run.id, NO_JITTER)
    assert (timed_out.status, timed_out.consecutive_failures) == ("todo", 1)
    assert store.runs_of(task.id)[0].outcome == "timed_out"
    clock.now += 10
    store.promote()
    run = store.claim(HOLDER)
    assert run is not None
    limited = store.rate_limited(run, 30)
    assert (limited.status, limited.consecutive_failures) == ("ready", 1)
    assert limited.not_before == clock.now + 30
    assert store.claim(HOLDER) is None  # not before the provider's Retry-After
    clock.now += 30
    assert store.claim(HOLDER) is not None
    assert kinds(store, task.id)[2:] == [
        "claimed", "timed_out", "retry_scheduled", "claimed", "rate_limited", "claimed",
    ]  # fmt: skip


# -- events ---------------------------------------------------------------------------


def test_events_since_is_monotonic_and_filters_by_board(store: Store) -> None:
    store.create_board("ops")
    a = store.create_task("a")
    b = store.create_task("b", board="ops")
    store.comment(a.id, "note")
    events = store.events_since(0)
    ids = [event.id for event in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert [e.task_id for e in store.events_since(0, board="ops")] == [b.id]
    assert store.events_since(ids[-1]) == []
    assert [e.kind for e in store.events_since(ids[0])] == ["created", "commented"]
    assert len(store.events_since(0, limit=1)) == 1


def test_the_store_clock_is_real_time_by_default(make_store: StoreFactory) -> None:
    # On PostgreSQL, the server's: one clock for every host sharing the board.
    store = make_store()
    before = time.time()
    task = store.create_task("t")
    assert before - 2 <= task.created_at <= time.time() + 2
    assert abs(store.now() - time.time()) < 2


# -- backend specifics ----------------------------------------------------------------


def test_sqlite_file_is_private_and_in_wal_mode(hermes_home: HermesHome) -> None:
    store = open_store(hermes_home, {})
    try:
        path = sqlite_path(hermes_home)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        store.close()


def test_sqlite_busy_is_retried_not_reported(
    hermes_home: HermesHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A short busy_timeout makes SQLite give up while another writer holds the lock, so
    # the store's own retry loop is what gets the write through.
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_MS", 20)
    store = open_store(hermes_home, {})
    blocker = sqlite3.connect(
        sqlite_path(hermes_home), isolation_level=None, check_same_thread=False
    )
    try:
        blocker.execute("BEGIN IMMEDIATE")
        threading.Timer(0.4, lambda: blocker.execute("COMMIT")).start()
        started = time.monotonic()
        task = store.create_task("written once the lock is free")
        assert time.monotonic() - started >= 0.3
        assert [t.id for t in store.list_tasks()] == [task.id]
    finally:
        time.sleep(0.5)
        blocker.close()
        store.close()


def test_sqlite_claim_tasks_looks_its_candidates_up_by_id(hermes_home: HermesHome) -> None:
    # Without statistics SQLite once chose kanban_tasks_order (board, status) over the
    # rowid lookups of `id IN (...)` once it held 8 or more ids, and walked the whole
    # ready queue on every claim.
    store = open_store(hermes_home, {})
    conn = store._conn  # type: ignore[attr-defined]
    try:
        ids = [store.create_task(f"t{i}", assignee="coder").id for i in range(40)]
        statements: list[str] = []
        conn.set_trace_callback(statements.append)
        assert len(store.claim_tasks(HOLDER, ids[:16], ClaimLimits())) == 16
        conn.set_trace_callback(None)
        [lookup] = [sql for sql in statements if "WHERE id IN" in sql]
        plan = " ".join(str(row[3]) for row in conn.execute("EXPLAIN QUERY PLAN " + lookup))
        assert "PRIMARY KEY" in plan and "kanban_tasks_order" not in plan, plan
    finally:
        store.close()


# The task table as schema version 1 made it (hermes_container/kanban/schema.py then).
_V1_TASKS = """
CREATE TABLE kanban_tasks (
    id INTEGER PRIMARY KEY,
    board TEXT NOT NULL REFERENCES kanban_boards (slug),
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    assignee TEXT,
    status TEXT NOT NULL CHECK (status IN ('triage', 'todo', 'ready', 'running', 'blocked',
        'done', 'archived')),
    priority INTEGER NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    max_retries INTEGER,
    max_runtime REAL,
    not_before REAL,
    result TEXT,
    last_error TEXT,
    idempotency_key TEXT,
    current_run INTEGER
)"""


def _make_v1_board(hermes_home: HermesHome) -> tuple[list[Any], list[Any], list[Any]]:
    """A board file as schema 1 left it, with work in every state; its tasks, runs
    and events as the store reads them."""
    store = open_store(hermes_home, {})
    parent = store.create_task("parent", assignee="a", idempotency_key="job:x:1")
    store.create_task("child", assignee="a", parents=[parent.id], max_runtime=9)
    store.create_task("idle", triage=True)
    run = store.claim(HOLDER)
    assert run is not None
    store.complete(run, "done it", latency_ms=3)
    store.promote()
    assert store.claim(HOLDER) is not None  # the child stays running
    state = (store.list_tasks(), store.runs_of(parent.id), store.events_since(0))
    store.close()
    conn = sqlite3.connect(sqlite_path(hermes_home), isolation_level=None)
    try:
        # SQLite's way to change a table (foreign keys are off on a new connection):
        # renaming the old table first would point the other tables' references at it.
        conn.execute("BEGIN")
        conn.execute(_V1_TASKS.replace("kanban_tasks", "kanban_tasks_v1"))
        conn.execute("INSERT INTO kanban_tasks_v1 SELECT * FROM kanban_tasks")
        conn.execute("DROP TABLE kanban_tasks")
        conn.execute("ALTER TABLE kanban_tasks_v1 RENAME TO kanban_tasks")
        conn.execute(
            "CREATE UNIQUE INDEX kanban_tasks_idempotency ON kanban_tasks "
            "(board, idempotency_key) WHERE idempotency_key IS NOT NULL"
        )
        conn.execute(
            "CREATE INDEX kanban_tasks_order ON kanban_tasks "
            "(board, status, priority DESC, created_at, id)"
        )
        conn.execute("UPDATE kanban_schema SET version = 1")
        conn.execute("COMMIT")
    finally:
        conn.close()
    return state


def _tasks_sql(hermes_home: HermesHome) -> str:
    with sqlite3.connect(sqlite_path(hermes_home)) as conn:
        row = conn.execute("SELECT sql FROM sqlite_schema WHERE name = 'kanban_tasks'").fetchone()
        return str(row[0])


def test_a_schema_1_sqlite_board_is_migrated(hermes_home: HermesHome) -> None:
    tasks, runs, events = _make_v1_board(hermes_home)
    assert "status IN (" in _tasks_sql(hermes_home)
    store = open_store(hermes_home, {})
    conn = store._conn  # type: ignore[attr-defined]
    try:
        assert "status IN (" not in _tasks_sql(hermes_home)
        assert store.transact(lambda tx: tx.one("SELECT MAX(version) FROM kanban_schema")) == (2,)
        assert (store.list_tasks(), store.runs_of(tasks[0].id)) == (tasks, runs)
        assert store.events_since(0) == events
        assert conn.execute("PRAGMA foreign_keys").fetchone() == (1,)
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(kanban_tasks)")}
        assert {"kanban_tasks_order", "kanban_tasks_idempotency"} <= indexes
        # Still a working board: keys, parents and the running claim survived.
        parent = next(t for t in tasks if t.title == "parent")
        assert store.create_task("again", idempotency_key="job:x:1") == parent
        [run] = store.open_runs()
        child = store.complete(run, "ok")
        assert (child.title, child.parents, child.status) == ("child", (parent.id,), "done")
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(
                "INSERT INTO kanban_events (task_id, board, kind, data, at) "
                "VALUES (999, 'default', 'x', '{}', 0)"
            )
    finally:
        store.close()
    # Opened again: nothing left to migrate.
    open_store(hermes_home, {}).close()
    assert "status IN (" not in _tasks_sql(hermes_home)


def test_a_migration_that_would_break_a_reference_changes_nothing(
    hermes_home: HermesHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    _make_v1_board(hermes_home)
    before = _tasks_sql(hermes_home)
    real = schema.migrate

    def losing_a_task(run: Callable[[str], object], dialect: Any, found: int) -> None:
        real(run, dialect, found)
        run("DELETE FROM kanban_tasks WHERE title = 'parent'")  # its runs, events, child

    monkeypatch.setattr(schema, "migrate", losing_a_task)
    with pytest.raises(StoreUnavailable, match=r"would break [1-9][0-9]* references"):
        open_store(hermes_home, {})
    assert _tasks_sql(hermes_home) == before
    with sqlite3.connect(sqlite_path(hermes_home)) as conn:
        assert conn.execute("SELECT MAX(version) FROM kanban_schema").fetchone() == (1,)
        assert conn.execute("SELECT COUNT(*) FROM kanban_tasks").fetchone() == (3,)


def test_a_migration_leaves_older_broken_references_as_they_were(
    hermes_home: HermesHome,
) -> None:
    # A reference broken by hand before the upgrade is not the migration's doing: it
    # goes ahead, and the row stays as it was.
    _make_v1_board(hermes_home)
    with sqlite3.connect(sqlite_path(hermes_home)) as conn:  # foreign keys off by default
        conn.execute(
            "INSERT INTO kanban_events (task_id, board, kind, data, at) "
            "VALUES (999, 'default', 'commented', '{}', 0)"
        )
    store = open_store(hermes_home, {})
    try:
        assert store.transact(lambda tx: tx.one("SELECT MAX(version) FROM kanban_schema")) == (2,)
        [orphan] = store.events_since(0, task_id=999)
        assert orphan.kind == "commented"
    finally:
        store.close()


def test_newer_schema_is_refused(make_store: StoreFactory) -> None:
    store = make_store()
    store._do(lambda tx: tx.run("UPDATE kanban_schema SET version = 99"))  # type: ignore[attr-defined]
    with pytest.raises(StoreUnavailable, match="schema version 99"):
        make_store()


def test_postgres_errors_never_show_the_password(hermes_home: HermesHome) -> None:
    pytest.importorskip("psycopg")
    from hermes_container.kanban.postgres_store import describe

    url = "postgresql://alice:s3cr3t-pw@127.0.0.1:1/board"
    assert describe(url) == "postgresql://alice@127.0.0.1:1/board"
    assert "s3cr3t" not in describe("host=db user=alice password=s3cr3t-pw dbname=b")
    with pytest.raises(StoreUnavailable) as caught:
        open_store(hermes_home, {"HERMES_KANBAN_DATABASE_URL": url})
    assert "s3cr3t" not in str(caught.value)
    assert "127.0.0.1:1/board" in str(caught.value)
    # psycopg's own exception is not chained in, so no traceback can show its conninfo.
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_open_store_picks_the_backend_from_the_environment(hermes_home: HermesHome) -> None:
    store = open_store(hermes_home, {"HERMES_KANBAN_DATABASE_URL": "  "})
    try:
        assert type(store).__name__ == "SqliteStore"
        assert sqlite_path(hermes_home).exists()
    finally:
        store.close()


# -- concurrency ----------------------------------------------------------------------


def test_concurrent_claims_never_double_claim_or_exceed_caps(
    backend: str, make_store: StoreFactory
) -> None:
    workers = 4 if backend == "sqlite" else 3
    limits = ClaimLimits(max_in_progress=5, max_in_progress_per_profile=2)
    setup = make_store()
    profiles = ["p1", "p2", "p3"]
    task_ids = {
        setup.create_task(f"task {i}", assignee=profiles[i % 3], priority=i % 4).id
        for i in range(150)
    }
    stores = [make_store() for _ in range(workers)]
    sampler = make_store()
    claimed: list[int] = []
    claimed_lock = threading.Lock()
    errors: list[BaseException] = []
    peaks: list[dict[str, int]] = []
    stop = threading.Event()

    def work(store: Store, number: int) -> None:
        # Like a dispatcher: keep claiming while others run, so demand (3-4 workers x 3)
        # is well over the caps and every claim races the others' claims.
        holder = Holder("host", 1000 + number)
        held: list[Any] = []
        try:
            while not stop.is_set():
                run = store.claim(holder, limits) if len(held) < 3 else None
                if run is not None:
                    with claimed_lock:
                        claimed.append(run.task_id)
                    held.append(run)
                    continue
                if held:
                    time.sleep(0.001)
                    store.complete(held.pop(0), f"done by {number}")
                    continue
                with claimed_lock:
                    if len(claimed) == len(task_ids):
                        return
                time.sleep(0.001)
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    def sample() -> None:
        try:
            while not stop.is_set():
                peaks.append(sampler.running_counts())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s, n)) for n, s in enumerate(stores)]
    watcher = threading.Thread(target=sample)
    watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    stop.set()
    watcher.join(timeout=30)
    assert not errors, errors
    assert Counter(claimed) == Counter(task_ids)  # every task claimed exactly once
    assert len(peaks) > 5
    for counts in peaks:
        assert sum(counts.values()) <= 5, counts
        assert max(counts.values(), default=0) <= 2, counts
    assert max(sum(c.values()) for c in peaks) >= 3  # the caps were reached
    tasks = setup.list_tasks()
    assert {t.status for t in tasks} == {"done"}
    assert all(t.attempts == 1 for t in tasks)


def test_threads_sharing_one_store_each_get_whole_transactions(store: Store) -> None:
    # A dispatcher's runner threads share its store; the SQLite store keeps one
    # transaction object per kind (sqlite_store._Transaction) and its lock serialises them.
    errors: list[BaseException] = []

    def work(number: int) -> None:
        try:
            holder = Holder("host", 2000 + number)
            for i in range(25):
                task = store.create_task(f"t{number}-{i}", assignee=f"p{number}")
                run = store.claim(holder, assignees=[f"p{number}"], task_id=task.id)
                assert run is not None and run.task_id == task.id
                assert store.complete(run, f"r{number}-{i}").result == f"r{number}-{i}"
                if i % 5 == 0:
                    with pytest.raises(NotHolder):  # a failed transaction in between
                        store.complete(run, "again")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    tasks = store.list_tasks()
    assert len(tasks) == 100 and {t.status for t in tasks} == {"done"}
    assert Counter(e.kind for e in store.events_since(0)) == {
        "created": 100,
        "assigned": 100,
        "claimed": 100,
        "completed": 100,
    }
    # Tasks and runs compare and hash by value (model.hot_value), as frozen ones do.
    assert {tasks[0], store.get_task(tasks[0].id)} == {tasks[0]}


def test_what_create_and_complete_return_is_what_is_stored(store: Store) -> None:
    parent = store.create_task("parent", assignee="a", max_runtime=30, max_retries=2)
    assert parent == store.get_task(parent.id)
    child = store.create_task(
        "child", body="b", assignee="a", priority=3, parents=[parent.id], idempotency_key="k"
    )
    assert child == store.get_task(child.id)
    run = store.claim(HOLDER)
    assert run is not None
    done = store.complete(run, "the answer", latency_ms=5, tokens=7)
    assert done == store.get_task(parent.id)
    assert (done.status, done.result, done.current_run) == ("done", "the answer", None)
    store.promote()
    run = store.claim(HOLDER)
    assert run is not None and run.task_id == child.id
    done = store.complete(run, "second")  # a task with parents: they come back too
    assert done == store.get_task(child.id)
    assert done.parents == (parent.id,)
    [closed] = store.runs_of(child.id)
    assert (closed.outcome, closed.finished_at) == ("completed", done.finished_at)


def test_event_data_keeps_any_text_and_value(store: Store) -> None:
    # Event data is JSON written by the store's own encoder (tx._compact_encoder).
    title = 'quotes " and \\ back, tab\t, é, 漢字, 🙂'
    task = store.create_task(title, assignee="a", priority=-3)
    store.comment(task.id, "line one\nline two \u2028 and \x00", author="ops")
    created, _assigned, commented = store.events_since(0, task_id=task.id)
    assert created.data == {
        "title": title,
        "status": "ready",
        "assignee": "a",
        "priority": -3,
        "parents": [],
    }
    assert commented.data == {"text": "line one\nline two \u2028 and \x00", "author": "ops"}


def test_the_status_check_holds(store: Store) -> None:
    # Schema 2 spells the CHECK as comparisons, not an IN list (schema._STATUS_CHECK):
    # it must refuse what the IN list refused.
    task = store.create_task("t")
    with pytest.raises(Exception, match=r"(?i)check"):
        store.transact(
            lambda tx: tx.run("UPDATE kanban_tasks SET status = ? WHERE id = ?", ("bogus", task.id))
        )
    assert store.get_task(task.id).status == "ready"


def test_schema_1_is_migrated_on_open(make_store: StoreFactory) -> None:
    store = make_store()
    task = store.create_task("before", assignee="a", idempotency_key="k")
    store.transact(lambda tx: tx.run("UPDATE kanban_schema SET version = 1"))
    store.close()
    again = make_store()
    assert again.transact(lambda tx: tx.one("SELECT MAX(version) FROM kanban_schema")) == (2,)
    assert again.get_task(task.id) == task
    assert again.create_task("other", idempotency_key="k") == task
