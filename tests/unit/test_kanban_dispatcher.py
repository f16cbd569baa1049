"""The dispatcher's tick against real gateways (`hermes gateway run` processes, see
tests/unit/conftest.py) and the fake provider: default_assignee, the caps, the skipped
buckets, reclaim, time-outs, promotion, dispatch order, and dry runs that report what
a real tick does.

The board's clock is a fake one (store clock=) so claim TTLs, max_runtime and retry
times pass at once; the gateways and the requests run in real time. The gateways of
one module are shared (Site); a test that moves or kills one starts its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from hermes_container.home import HermesHome
from hermes_container.kanban.dispatcher import (
    DEFAULT_ASSIGNEE_SOURCE,
    TIMEOUT_GRACE_SECONDS,
    Dispatcher,
    this_host,
)
from hermes_container.kanban.model import ClaimLimits, Holder, RetryPolicy
from hermes_container.kanban.store import Store
from tests.conftest import free_port, set_port
from tests.fake_upstream import FakeUpstream
from tests.unit import kanban_support
from tests.unit.conftest import GatewayProfile
from tests.unit.kanban_support import (
    ELSEWHERE,
    Clock,
    CountSampler,
    events_of,
    ids,
    kinds,
    last_event,
    open_test_store,
    set_kanban,
    snapshot,
    tick_and_wait,
)

# The shared fixtures (kanban_support): pytest finds them by name in this module.
clock = kanban_support.clock
dispatcher = kanban_support.dispatcher
home = kanban_support.home
site = kanban_support.site
store = kanban_support.store
upstream = kanban_support.upstream

NO_JITTER = RetryPolicy(failure_limit=5, backoff_seconds=10, backoff_max_seconds=60, jitter=0)


# -- default_assignee -----------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "   "])
def test_without_a_default_assignee_unassigned_tasks_are_skipped(
    home: HermesHome, store: Store, dispatcher: Dispatcher, value: str | None
) -> None:
    set_kanban(home, **({} if value is None else {"default_assignee": value}))
    task = store.create_task("nobody's")
    before = snapshot(store)
    report = dispatcher.tick()
    assert report.skipped_unassigned == [task.id]
    assert report.auto_assigned_default == []
    assert report.default_assignee is None
    assert report.spawned == []
    assert snapshot(store) == before  # nothing written, not even an assignment


def test_default_assignee_takes_unassigned_ready_tasks(
    home: HermesHome,
    store: Store,
    dispatcher: Dispatcher,
    upstream: FakeUpstream,
) -> None:
    set_kanban(home, default_assignee="alpha")
    first = store.create_task("first")
    second = store.create_task("second")
    mine = store.create_task("already alpha's", assignee="alpha")
    waiting = store.create_task("not ready yet", parents=[first.id])

    before = snapshot(store)
    preview = dispatcher.tick(dry_run=True)
    assert snapshot(store) == before  # a dry run writes nothing, not even the assignment
    assert preview.dry_run
    assert preview.default_assignee == "alpha"
    assert preview.auto_assigned_default == [first.id, second.id]
    assert [s["task_id"] for s in preview.spawned] == [first.id, second.id, mine.id]

    report = tick_and_wait(dispatcher)
    assert report.auto_assigned_default == [first.id, second.id]
    assert report.spawned == [
        {"task_id": first.id, "assignee": "alpha"},
        {"task_id": second.id, "assignee": "alpha"},
        {"task_id": mine.id, "assignee": "alpha"},
    ]
    assert sorted(report.completed) == sorted([first.id, second.id, mine.id])
    for task in (first, second):
        row = store.get_task(task.id)
        assert (row.assignee, row.status) == ("alpha", "done")
        assigned = [e for e in events_of(store, task.id) if e.kind == "assigned"]
        assert len(assigned) == 1
        assert assigned[0].data["source"] == DEFAULT_ASSIGNEE_SOURCE == "kanban.default_assignee"
        assert assigned[0].data["assignee"] == "alpha"
        assert assigned[0].data["previous"] is None
    # A task with its own assignee keeps it, and gets no second `assigned` event.
    assert [e.data["source"] for e in events_of(store, mine.id) if e.kind == "assigned"] == [
        "create"
    ]
    # The waiting child is not ready: it was neither assigned nor run.
    assert store.get_task(waiting.id).assignee is None
    # Its parent is done now: the next tick promotes, assigns and runs it.
    report = tick_and_wait(dispatcher)
    assert report.promoted == [waiting.id]
    assert report.auto_assigned_default == [waiting.id]
    assert report.completed == [waiting.id]
    assert len(upstream.requests) == 4


# -- skipped buckets ------------------------------------------------------------------


def test_an_assignee_that_is_not_a_profile_here_is_skipped_nonspawnable(
    home: HermesHome, store: Store, dispatcher: Dispatcher
) -> None:
    task = store.create_task("for another container", assignee="elsewhere")
    before = snapshot(store)
    for dry_run in (True, False):
        report = dispatcher.tick(dry_run=dry_run)
        assert report.skipped_nonspawnable == [task.id]
        assert report.spawned == [] and report.skipped_gateway_down == []
    assert snapshot(store) == before
    # A default assignee that is not a profile here: assigned (the board says whose it
    # is), then skipped the same way.
    set_kanban(home, default_assignee="ghostwriter")
    loose = store.create_task("loose")
    report = dispatcher.tick()
    assert report.auto_assigned_default == [loose.id]
    assert report.skipped_nonspawnable == [task.id, loose.id]
    assert store.get_task(loose.id).status == "ready"


def test_a_gateway_that_is_not_running_is_skipped_and_never_counted(
    hermes_home: HermesHome,
    make_profile: Callable[[str], GatewayProfile],
    fake_upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A home of its own: this test moves a gateway's port and starts one late.
    monkeypatch.delenv("HERMES_KANBAN_DATABASE_URL", raising=False)
    alpha, beta = make_profile("alpha"), make_profile("beta")
    alpha.start()
    clock = Clock()
    store = open_test_store(hermes_home, clock)
    try:
        dispatcher = Dispatcher(hermes_home, store)
        task = store.create_task("waits for beta", assignee="beta")
        before = snapshot(store)
        for _ in range(3):
            report = dispatcher.tick()
            assert report.skipped_gateway_down == [task.id]
            assert report.spawned == [] and report.gave_up == []
            clock.advance(3600)
        assert snapshot(store) == before  # never claimed, never failed
        row = store.get_task(task.id)
        assert (row.status, row.attempts, row.consecutive_failures) == ("ready", 0, 0)

        # A stranger on beta's port (alpha's gateway) does not count as beta's gateway.
        set_port(beta.dir, alpha.port)
        assert dispatcher.tick().skipped_gateway_down == [task.id]
        assert fake_upstream.requests == []

        beta.port = free_port()
        beta.configure()
        beta.start()
        report = tick_and_wait(dispatcher)
        assert report.spawned == [{"task_id": task.id, "assignee": "beta"}]
        assert report.completed == [task.id]
        assert store.get_task(task.id).attempts == 1
    finally:
        store.close()


# -- caps -----------------------------------------------------------------------------


def test_per_profile_cap_counts_earlier_runs_and_defers_the_rest_to_later_ticks(
    home: HermesHome,
    store: Store,
    dispatcher: Dispatcher,
    upstream: FakeUpstream,
) -> None:
    set_kanban(home, max_in_progress_per_profile=2)
    earlier = store.create_task("running since before", assignee="alpha")
    held = store.claim(ELSEWHERE, task_id=earlier.id)  # another dispatcher's, alive
    assert held is not None
    queued = [store.create_task(f"t{i}", assignee="alpha") for i in range(3)]
    upstream.set(delay=0.3)

    with CountSampler(home) as sampler:
        report = tick_and_wait(dispatcher)
        assert report.spawned == [{"task_id": queued[0].id, "assignee": "alpha"}]
        assert report.skipped_per_profile_capped == [
            {"task_id": queued[1].id, "assignee": "alpha", "current": 2},
            {"task_id": queued[2].id, "assignee": "alpha", "current": 2},
        ]
        assert report.completed == [queued[0].id]
        # Deferred tasks are untouched: ready, no attempt, no failure.
        for task in queued[1:]:
            row = store.get_task(task.id)
            assert (row.status, row.attempts, row.consecutive_failures) == ("ready", 0, 0)

        # Room for one again (the earlier run still counts): the next one goes.
        report = tick_and_wait(dispatcher)
        assert [s["task_id"] for s in report.spawned] == [queued[1].id]
        assert report.skipped_per_profile_capped == [
            {"task_id": queued[2].id, "assignee": "alpha", "current": 2}
        ]
        store.complete(held, "done elsewhere")
        report = tick_and_wait(dispatcher)
        assert [s["task_id"] for s in report.spawned] == [queued[2].id]
        assert report.skipped_per_profile_capped == []
    assert sampler.samples > 10
    assert sampler.max_per == {"alpha": 2}
    assert [store.get_task(t.id).status for t in queued] == ["done"] * 3


@pytest.mark.parametrize("value", [0, "2", None])  # every kind: test_kanban_settings.py
def test_a_per_profile_cap_that_is_not_a_positive_integer_is_no_cap(
    home: HermesHome,
    store: Store,
    dispatcher: Dispatcher,
    upstream: FakeUpstream,
    value: Any,
) -> None:
    set_kanban(home, max_in_progress_per_profile=value, max_in_progress=None)
    tasks = [store.create_task(f"t{i}", assignee="alpha") for i in range(5)]
    upstream.set(delay=0.5)
    report = dispatcher.tick()
    # All five run at once: no per-profile cap, no board cap.
    assert store.running_counts() == {"alpha": 5}
    assert [s["task_id"] for s in report.spawned] == ids(tasks)
    assert report.skipped_per_profile_capped == []
    named = [w for w in report.warnings if "max_in_progress_per_profile" in w]
    assert len(named) == 1
    assert len([w for w in report.warnings if "kanban.max_in_progress:" in w]) == 1
    assert len(report.warnings) == 2
    dispatcher.wait_all(timeout=30)
    assert [store.get_task(t.id).status for t in tasks] == ["done"] * 5


def test_board_cap_and_worker_limit_hold_back_the_rest(
    home: HermesHome,
    store: Store,
    upstream: FakeUpstream,
) -> None:
    set_kanban(home, max_in_progress=3)
    earlier = store.create_task("before", assignee="beta")
    assert store.claim(ELSEWHERE, task_id=earlier.id) is not None
    tasks = [store.create_task(f"t{i}", assignee=("alpha", "beta")[i % 2]) for i in range(5)]
    upstream.set(delay=0.3)
    dispatcher = Dispatcher(home, store)
    with CountSampler(home) as sampler:
        report = tick_and_wait(dispatcher)
    assert [s["task_id"] for s in report.spawned] == ids(tasks[:2])
    assert report.skipped_board_capped == ids(tasks[2:])
    assert sampler.max_total == 3
    # This dispatcher's own thread limit holds back the same way.
    set_kanban(home)
    small = Dispatcher(home, store, workers=1)
    report = tick_and_wait(small)
    assert [s["task_id"] for s in report.spawned] == [tasks[2].id]
    assert report.skipped_board_capped == ids(tasks[3:])
    # --max N: at most N this tick.
    report = tick_and_wait(dispatcher, max_spawn=1)
    assert [s["task_id"] for s in report.spawned] == [tasks[3].id]
    assert report.skipped_board_capped == [tasks[4].id]


def test_a_dry_run_reports_the_subset_a_real_tick_dispatches(
    home: HermesHome,
    store: Store,
    dispatcher: Dispatcher,
    upstream: FakeUpstream,
) -> None:
    set_kanban(home, default_assignee="beta", max_in_progress_per_profile=2, max_in_progress=5)
    earlier = store.create_task("beta, from before", assignee="beta")
    assert store.claim(ELSEWHERE, task_id=earlier.id) is not None
    made = [
        store.create_task("a1", assignee="alpha", priority=1),
        store.create_task("a2", assignee="alpha"),
        store.create_task("a3", assignee="alpha"),
        store.create_task("loose 1"),
        store.create_task("loose 2"),
        store.create_task("g", assignee="gamma"),
        store.create_task("x", assignee="stranger"),
        store.create_task("b1", assignee="beta", priority=-1),
        store.create_task("a4", assignee="alpha", priority=-2),
    ]
    upstream.set(delay=0.3)
    before = snapshot(store)
    preview = dispatcher.tick(dry_run=True)
    again = dispatcher.tick(dry_run=True)
    assert snapshot(store) == before
    real = dispatcher.tick()
    buckets = (
        "spawned",
        "auto_assigned_default",
        "skipped_unassigned",
        "skipped_nonspawnable",
        "skipped_gateway_down",
        "skipped_per_profile_capped",
        "skipped_board_capped",
        "reclaimed",
        "timed_out",
        "promoted",
    )
    for name in buckets:
        assert getattr(preview, name) == getattr(real, name) == getattr(again, name), name
    a1, a2, a3, loose1, loose2, g, x, b1, a4 = ids(made)
    assert real.spawned == [
        {"task_id": a1, "assignee": "alpha"},
        {"task_id": a2, "assignee": "alpha"},
        {"task_id": loose1, "assignee": "beta"},
    ]
    assert real.auto_assigned_default == [loose1, loose2]
    assert real.skipped_per_profile_capped == [
        {"task_id": a3, "assignee": "alpha", "current": 2},
        {"task_id": loose2, "assignee": "beta", "current": 2},
        {"task_id": b1, "assignee": "beta", "current": 2},
        {"task_id": a4, "assignee": "alpha", "current": 2},
    ]
    assert real.skipped_gateway_down == [g]
    assert real.skipped_nonspawnable == [x]
    assert store.running_counts() == {"alpha": 2, "beta": 2}
    dispatcher.wait_all(timeout=30)


def test_the_cap_is_read_again_every_tick(
    home: HermesHome,
    store: Store,
    dispatcher: Dispatcher,
    upstream: FakeUpstream,
) -> None:
    tasks = [store.create_task(f"t{i}", assignee="alpha") for i in range(4)]
    set_kanban(home, max_in_progress_per_profile=1)
    assert len(tick_and_wait(dispatcher).spawned) == 1
    set_kanban(home, max_in_progress_per_profile=3)
    assert len(tick_and_wait(dispatcher).spawned) == 3
    assert [store.get_task(t.id).status for t in tasks] == ["done"] * 4


def test_dispatch_goes_by_priority_then_age(
    home: HermesHome,
    store: Store,
    dispatcher: Dispatcher,
    clock: Clock,
) -> None:
    made = {}
    for name, priority in (("low", 0), ("high-old", 5), ("high-new", 5), ("neg", -1), ("top", 9)):
        made[name] = store.create_task(name, assignee="alpha", priority=priority).id
        clock.advance(1)
    order = ["top", "high-old", "high-new", "low", "neg"]
    preview = dispatcher.tick(dry_run=True)
    assert [s["task_id"] for s in preview.spawned] == [made[n] for n in order]
    set_kanban(home, max_in_progress_per_profile=1)
    done = []
    for _ in order:
        report = tick_and_wait(dispatcher)
        done += report.completed
    assert done == [made[n] for n in order]


# -- reclaim, time-outs, promotion ------------------------------------------------------


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_claims_of_a_dead_dispatcher_on_this_host_are_reclaimed_at_once(
    home: HermesHome, store: Store, dispatcher: Dispatcher
) -> None:
    task = store.create_task("orphan", assignee="gamma")  # down: it stays put
    gone = Holder(this_host(), dead_pid())
    run = store.claim(gone, ClaimLimits(claim_ttl_seconds=900), task_id=task.id)
    assert run is not None
    before = snapshot(store)
    assert dispatcher.tick(dry_run=True).reclaimed == [task.id]
    assert snapshot(store) == before

    report = dispatcher.tick()
    assert report.reclaimed == [task.id]
    assert report.skipped_gateway_down == [task.id]  # ready again within the same tick
    row = store.get_task(task.id)
    assert (row.status, row.attempts, row.consecutive_failures) == ("ready", 1, 0)
    assert row.current_run is None
    (closed,) = store.runs_of(task.id)
    assert closed.outcome == "reclaimed"
    reclaimed = [e for e in events_of(store, task.id) if e.kind == "reclaimed"]
    assert len(reclaimed) == 1
    assert f"pid {gone.pid}" in reclaimed[0].data["reason"]
    assert "failed" not in kinds(store, task.id)
    assert dispatcher.tick().reclaimed == []


def test_runs_of_our_own_pid_from_before_a_restart_are_reclaimed(
    store: Store, dispatcher: Dispatcher
) -> None:
    task = store.create_task("from my previous life", assignee="elsewhere")
    assert store.claim(dispatcher.holder, task_id=task.id) is not None
    assert dispatcher.holder == Holder(this_host(), os.getpid())
    report = dispatcher.tick()
    assert report.reclaimed == [task.id]
    reason = last_event(store, task.id, "reclaimed").data["reason"]
    assert "restarted" in reason
    assert store.get_task(task.id).consecutive_failures == 0


def test_claims_of_live_or_remote_dispatchers_are_reclaimed_only_after_the_ttl(
    home: HermesHome, store: Store, dispatcher: Dispatcher, clock: Clock
) -> None:
    set_kanban(home, claim_ttl_seconds=60)
    limits = ClaimLimits(claim_ttl_seconds=60)
    remote = store.create_task("remote", assignee="elsewhere")
    local = store.create_task("local, alive", assignee="elsewhere")
    assert store.claim(ELSEWHERE, limits, task_id=remote.id) is not None
    alive = Holder(this_host(), os.getppid())  # our parent: on this host and running
    assert store.claim(alive, limits, task_id=local.id) is not None
    clock.advance(59)
    report = dispatcher.tick()
    assert report.reclaimed == []
    assert store.running_counts() == {"elsewhere": 2}
    clock.advance(2)
    report = dispatcher.tick()
    assert sorted(report.reclaimed) == sorted([remote.id, local.id])
    for task in (remote, local):
        row = store.get_task(task.id)
        assert (row.status, row.consecutive_failures) == ("ready", 0)
        reason = last_event(store, task.id, "reclaimed").data["reason"]
        assert "expired" in reason


def test_runs_past_max_runtime_are_timed_out_and_counted(
    home: HermesHome, store: Store, dispatcher: Dispatcher, clock: Clock
) -> None:
    set_kanban(home, retry_backoff_seconds=30, failure_limit=2)
    slow = store.create_task("slow", assignee="elsewhere", max_runtime=10)
    last = store.create_task("last chance", assignee="elsewhere", max_runtime=10, max_retries=0)
    free = store.create_task("no limit", assignee="elsewhere")
    for task in (slow, last, free):
        assert store.claim(ELSEWHERE, task_id=task.id) is not None
    clock.advance(10 + TIMEOUT_GRACE_SECONDS - 0.5)
    assert dispatcher.tick().timed_out == []
    clock.advance(1)
    before = snapshot(store)
    preview = dispatcher.tick(dry_run=True)
    assert preview.timed_out == [slow.id, last.id]
    assert snapshot(store) == before

    report = dispatcher.tick()
    assert report.timed_out == [slow.id, last.id]
    assert report.gave_up == [last.id]
    assert report.reclaimed == []
    row = store.get_task(slow.id)
    assert (row.status, row.consecutive_failures) == ("todo", 1)
    assert row.not_before is not None and row.not_before > clock.now
    assert "max_runtime" in (row.last_error or "")
    assert store.runs_of(slow.id)[0].outcome == "timed_out"
    assert kinds(store, slow.id)[-2:] == ["timed_out", "retry_scheduled"]
    gave = store.get_task(last.id)
    assert gave.status == "blocked"
    assert kinds(store, last.id)[-2:] == ["timed_out", "gave_up"]
    assert "max_runtime" in events_of(store, last.id)[-1].data["error"]
    assert store.get_task(free.id).status == "running"


def test_a_dry_run_counts_a_timed_out_run_out_of_the_cap_as_the_real_tick_does(
    home: HermesHome, store: Store, dispatcher: Dispatcher, clock: Clock
) -> None:
    set_kanban(home, max_in_progress_per_profile=1)
    stuck = store.create_task("stuck", assignee="alpha", max_runtime=5)
    assert store.claim(ELSEWHERE, task_id=stuck.id) is not None
    waiting = store.create_task("next", assignee="alpha")
    assert dispatcher.tick(dry_run=True).skipped_per_profile_capped == [
        {"task_id": waiting.id, "assignee": "alpha", "current": 1}
    ]
    clock.advance(5 + TIMEOUT_GRACE_SECONDS + 1)
    preview = dispatcher.tick(dry_run=True)
    real = tick_and_wait(dispatcher)
    assert preview.timed_out == real.timed_out == [stuck.id]
    assert preview.spawned == real.spawned == [{"task_id": waiting.id, "assignee": "alpha"}]
    assert preview.skipped_per_profile_capped == real.skipped_per_profile_capped == []
    assert real.completed == [waiting.id]


def test_todo_tasks_are_promoted_when_parents_are_done_and_not_before_passed(
    store: Store, dispatcher: Dispatcher, clock: Clock
) -> None:
    parent = store.create_task("parent", assignee="elsewhere")
    other = store.create_task("other parent", assignee="elsewhere")
    child = store.create_task("child", assignee="elsewhere", parents=[parent.id, other.id])
    retry = store.create_task("retry later", assignee="elsewhere")
    run = store.claim(ELSEWHERE, task_id=retry.id)
    assert run is not None
    store.fail(run, "flaky", NO_JITTER)  # todo, not before now + 10
    assert dispatcher.tick().promoted == []

    for task in (parent, other):
        held = store.claim(ELSEWHERE, task_id=task.id)
        assert held is not None
        store.complete(held, f"result of {task.title}")
    before = snapshot(store)
    assert dispatcher.tick(dry_run=True).promoted == [child.id]
    assert snapshot(store) == before
    report = dispatcher.tick()
    assert report.promoted == [child.id]
    assert report.skipped_nonspawnable == [child.id]  # ready now: dispatched the same tick
    assert store.get_task(retry.id).status == "todo"

    clock.advance(9.9)
    assert dispatcher.tick().promoted == []
    clock.advance(0.2)
    assert dispatcher.tick(dry_run=True).promoted == [retry.id]
    assert dispatcher.tick().promoted == [retry.id]
    assert store.get_task(retry.id).status == "ready"


def test_a_tick_goes_reclaim_then_timeout_then_promote_then_dispatch(
    home: HermesHome,
    store: Store,
    dispatcher: Dispatcher,
    clock: Clock,
) -> None:
    """Each step of a tick sees what the steps before it did: the released claim no
    longer counts against the cap, and the child promoted this tick is dispatched."""
    set_kanban(home, max_in_progress_per_profile=1, claim_ttl_seconds=60)
    orphan = store.create_task("orphan", assignee="alpha", priority=5)
    assert store.claim(Holder(this_host(), dead_pid()), task_id=orphan.id) is not None
    parent = store.create_task("parent", assignee="alpha")
    child = store.create_task("child", assignee="alpha", parents=[parent.id], priority=9)
    held = store.claim(ELSEWHERE, ClaimLimits(claim_ttl_seconds=60), task_id=parent.id)
    assert held is not None
    store.complete(held, "parent's result")
    report = tick_and_wait(dispatcher)
    assert report.reclaimed == [orphan.id]
    assert report.promoted == [child.id]
    # The reclaimed claim no longer counts against alpha's cap of 1, and the promoted
    # child outranks the released orphan.
    assert report.spawned == [{"task_id": child.id, "assignee": "alpha"}]
    assert report.skipped_per_profile_capped == [
        {"task_id": orphan.id, "assignee": "alpha", "current": 1}
    ]
    assert report.completed == [child.id]


# -- our own runs ----------------------------------------------------------------------


def test_a_run_whose_claim_was_taken_back_is_abandoned(
    store: Store,
    dispatcher: Dispatcher,
    upstream: FakeUpstream,
) -> None:
    task = store.create_task("slow", assignee="alpha")
    upstream.set(delay=20)
    report = dispatcher.tick()
    assert report.spawned == [{"task_id": task.id, "assignee": "alpha"}]
    upstream.wait_for_requests(1)
    current = store.get_task(task.id).current_run
    assert current is not None
    store.release(current, reason="reclaimed by hand")  # `hermes kanban reclaim`
    started = time.monotonic()
    dispatcher.renew(60)  # finds the claim gone: stops waiting for the gateway
    outcomes = dispatcher.wait_all(timeout=10)
    assert time.monotonic() - started < 5
    assert [o.kind for o in outcomes] == ["lost"]
    row = store.get_task(task.id)
    assert (row.status, row.consecutive_failures, row.result) == ("ready", 0, None)
    assert [r.outcome for r in store.runs_of(task.id)] == ["reclaimed"]


def test_a_foreground_wait_renews_its_claims_within_the_ttl(
    home: HermesHome,
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`hermes kanban dispatch` waits for its runs: with a short claim TTL it must renew
    them often enough that no other dispatcher takes them back as expired."""
    monkeypatch.delenv("HERMES_KANBAN_DATABASE_URL", raising=False)
    set_kanban(home, claim_ttl_seconds=5)
    store = open_test_store(home)  # real time: the renewals happen in real time
    try:
        task = store.create_task("takes 2 s", assignee="alpha")
        upstream.set(delay=2.0)
        dispatcher = Dispatcher(home, store)
        dispatcher.tick()
        (run,) = store.open_runs()
        assert run.claim_expires_at == pytest.approx(run.claimed_at + 5, abs=0.01)
        dispatcher.wait_all(timeout=30)
        (closed,) = store.runs_of(task.id)
        # Renewed (every 1.7 s, a third of the TTL) while it ran.
        assert closed.claim_expires_at >= closed.claimed_at + 5 + 1.5
        assert store.get_task(task.id).status == "done"
    finally:
        store.close()


def test_a_tick_reports_to_json_with_the_issue_keys(store: Store, dispatcher: Dispatcher) -> None:
    data = dispatcher.tick().to_json()
    for key in (
        "spawned",
        "auto_assigned_default",
        "skipped_unassigned",
        "skipped_nonspawnable",
        "skipped_gateway_down",
        "skipped_per_profile_capped",
        "reclaimed",
        "promoted",
        "timed_out",
        "gave_up",
    ):
        assert data[key] == [], key
