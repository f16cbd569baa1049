"""Jobs on a real board store, SQLite and PostgreSQL, with a clock the test moves.

Slots become runs exactly once (repeated passes, a clock stepped back, a scheduler
that read a stale next slot, two schedulers on one PostgreSQL board), catch-up after a
downtime, overlap, the board-wide job cap, pause/resume, rm and run-now; then a job's
task driven through the store API as the dispatcher drives it: backoff, 429s, the
dead-letter queue, `jobs dead` and `jobs retry`, and pipelines.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from hermes_container.kanban.errors import InvalidTransition, NotFound
from hermes_container.kanban.jobs.fire import MISFIRE_GRACE_SECONDS, Limits, task_key
from hermes_container.kanban.jobs.model import (
    ACTIVE,
    CANCELLED,
    COMPLETED,
    DEAD_LETTERED,
    QUEUED,
    SKIPPED,
)
from hermes_container.kanban.jobs.schedule import slot_name
from hermes_container.kanban.jobs.scheduler import Scheduler
from hermes_container.kanban.model import BLOCKED, DONE, READY, TODO, Holder
from hermes_container.kanban.prompt import messages_for, task_text
from hermes_container.kanban.settings import SettingsFile
from tests.conftest import run_hermes
from tests.unit import jobs_support
from tests.unit.jobs_support import (
    EPOCH,
    HOLDER,
    Board,
    add_job,
)

# The shared fixtures (jobs_support): pytest finds them by name in this module.
backend = jobs_support.backend
board = jobs_support.board
clock = jobs_support.clock

MINUTE = 60.0


def job_keys(board: Board) -> Counter[str]:
    """Tasks per idempotency key of every job task on the board."""
    rows = board.sql(
        "SELECT idempotency_key, COUNT(*) FROM kanban_tasks "
        "WHERE idempotency_key LIKE ? GROUP BY idempotency_key",
        ("job:%",),
    )
    return Counter({str(key): int(n) for key, n in rows})


def states(board: Board, name: str) -> list[str]:
    return [run.state for run in board.runs(name)]


# -- firing -------------------------------------------------------------------------


def test_each_slot_fires_once_across_repeated_passes_and_a_clock_stepped_back(
    board: Board,
) -> None:
    add_job(board.jobs, "tick", every="60s", catchup="all")
    assert board.fire() == []  # nothing is due at the moment it is added
    board.clock.set(EPOCH + MINUTE)
    first = board.fire()
    assert [(r.slot, r.state) for r in first] == [(EPOCH + MINUTE, ACTIVE)]
    for _ in range(4):
        assert board.fire() == []
    board.complete(board.task(first[0]).id)
    board.follow()

    # The clock steps back an hour (NTP, a VM restored), then forward again.
    board.clock.set(EPOCH - 3600)
    assert board.fire() == []
    board.clock.set(EPOCH + MINUTE)
    assert board.fire() == []
    board.clock.set(EPOCH + 2 * MINUTE - 0.001)
    assert board.fire() == []
    board.clock.set(EPOCH + 2 * MINUTE)
    second = board.fire()
    assert [r.slot for r in second] == [EPOCH + 2 * MINUTE]

    # A scheduler that read an old next_slot (it looked before the others moved it):
    # it tries both slots again and makes nothing.
    board.store.transact(
        lambda tx: tx.run("UPDATE kanban_jobs SET next_slot = ? WHERE name = 'tick'", (EPOCH + 60,))
    )
    assert board.fire() == []
    assert [r.slot for r in board.runs("tick")] == [EPOCH + MINUTE, EPOCH + 2 * MINUTE]
    assert job_keys(board) == Counter(
        {"job:tick:2027-01-07T00:01:00Z": 1, "job:tick:2027-01-07T00:02:00Z": 1}
    )
    assert board.kinds("tick").count("scheduled") == 2
    assert board.jobs.get("tick").next_slot == EPOCH + 3 * MINUTE
    assert board.jobs.get("tick").last_slot == EPOCH + 2 * MINUTE


@pytest.mark.parametrize("catchup", ["none", "latest", "all"])
def test_catchup_decides_what_a_downtime_fires(board: Board, catchup: str) -> None:
    every = 5 * MINUTE
    add_job(board.jobs, "backlog", every="5m", catchup=catchup, overlap="queue")
    # Down for 250 slots; the scheduler comes back half an interval after the last one
    # (past the misfire grace: that slot was missed too).
    board.clock.set(EPOCH + 250 * every + every / 2)
    made = board.fire()
    missed = [e for e in board.events("backlog") if e.kind == "skipped_missed"]
    if catchup == "none":
        assert made == []
        assert [e.data["missed"] for e in missed] == [250]
    elif catchup == "latest":
        assert [(r.slot, r.state) for r in made] == [(EPOCH + 250 * every, ACTIVE)]
        assert [e.data["missed"] for e in missed] == [249]
    else:
        # The last 100 slots, oldest first: one runs, the others wait their turn.
        assert [r.slot for r in made] == [EPOCH + k * every for k in range(151, 251)]
        assert [r.state for r in made] == [ACTIVE] + [QUEUED] * 99
        assert [e.data["missed"] for e in missed] == [150]
        assert len(job_keys(board)) == 1  # queued runs have no task yet
    assert len(board.runs("backlog")) == len(made)
    # Whatever was caught up, the schedule goes on from now.
    job = board.jobs.get("backlog")
    assert job.next_slot == EPOCH + 251 * every
    assert board.fire() == []


def test_catchup_none_still_fires_a_slot_seen_on_time(board: Board) -> None:
    add_job(board.jobs, "ontime", every="60s", catchup="none")
    board.clock.set(EPOCH + MINUTE + MISFIRE_GRACE_SECONDS - 1)  # a slow tick, not downtime
    assert [r.slot for r in board.fire()] == [EPOCH + MINUTE]
    assert "skipped_missed" not in board.kinds("ontime")


def test_overlap_skip_records_a_skipped_run_and_makes_no_task(board: Board) -> None:
    add_job(board.jobs, "slow", every="60s")  # overlap: skip is the default
    board.clock.set(EPOCH + MINUTE)
    (first,) = board.fire()
    board.clock.set(EPOCH + 2 * MINUTE)
    (second,) = board.fire()
    assert second.state == SKIPPED and second.slot == EPOCH + 2 * MINUTE
    skipped = [e for e in board.events("slow") if e.kind == "skipped_overlap"]
    assert [(e.run_id, e.slot, e.data["in_flight"]) for e in skipped] == [
        (second.id, EPOCH + 2 * MINUTE, [first.id])
    ]
    assert board.tasks(second) == [] and len(job_keys(board)) == 1
    # Once the run in flight is done, the next slot runs.
    board.complete(board.task(first).id)
    board.follow()
    board.clock.set(EPOCH + 3 * MINUTE)
    (third,) = board.fire()
    assert third.state == ACTIVE
    assert states(board, "slow") == [COMPLETED, SKIPPED, ACTIVE]


def test_overlap_queue_starts_the_queued_run_when_the_previous_finishes(board: Board) -> None:
    add_job(board.jobs, "queued", every="60s", overlap="queue")
    board.clock.set(EPOCH + MINUTE)
    (first,) = board.fire()
    board.clock.set(EPOCH + 2 * MINUTE)
    (second,) = board.fire()
    assert second.state == QUEUED and board.tasks(second) == []
    queued = [e for e in board.events("queued") if e.kind == "queued"]
    assert [(e.run_id, e.data["behind"]) for e in queued] == [(second.id, [first.id])]
    limits = Limits()
    assert board.jobs.start_queued(limits) == []  # the first is still active
    board.complete(board.task(first).id)
    # Done on the board, but the run follows its task only through `follow`.
    assert board.jobs.start_queued(limits) == []
    board.clock.advance(5)
    board.follow()
    assert board.jobs.get_run(first.id).state == COMPLETED
    assert board.jobs.start_queued(limits) == [second.id]
    started = board.jobs.get_run(second.id)
    assert started.state == ACTIVE
    task = board.task(started)
    assert task.status == READY
    assert task.idempotency_key == task_key("queued", EPOCH + 2 * MINUTE, 1)
    scheduled = [e for e in board.events("queued") if e.kind == "scheduled"]
    assert scheduled[-1].run_id == second.id and scheduled[-1].data["waited"] == 5.0
    assert board.jobs.start_queued(limits) == []


def test_max_concurrent_bounds_the_active_runs_of_a_board(board: Board) -> None:
    board.store.create_board("ops")
    for name in ("a", "b", "c"):
        add_job(board.jobs, name, every="60s")
    add_job(board.jobs, "elsewhere", every="60s", board="ops")
    board.clock.set(EPOCH + MINUTE)
    made = {run.job: run for run in board.fire(max_concurrent=2)}
    assert [made[n].state for n in ("a", "b", "c")] == [ACTIVE, ACTIVE, QUEUED]
    assert made["elsewhere"].state == ACTIVE  # the cap is per board

    def active() -> int:
        rows = board.sql(
            "SELECT COUNT(*) FROM kanban_job_runs WHERE state = 'active' AND board = 'default'"
        )
        return int(rows[0][0])

    assert board.jobs.start_queued(Limits(2)) == [] and active() == 2
    board.complete(board.task(made["a"]).id)
    board.follow()
    assert board.jobs.start_queued(Limits(2)) == [made["c"].id]
    assert active() == 2
    # The next slot: c and elsewhere are still in flight (skipped); of a and b, whose
    # runs are done, only one fits beside c under the cap, the other waits.
    board.complete(board.task(made["b"]).id)
    board.follow()
    board.clock.set(EPOCH + 2 * MINUTE)
    later = {run.job: run.state for run in board.fire(max_concurrent=2)}
    assert (later["c"], later["elsewhere"]) == (SKIPPED, SKIPPED)
    assert sorted([later["a"], later["b"]]) == [ACTIVE, QUEUED]
    assert active() == 2
    # Without a cap everything fits.
    assert board.jobs.start_queued(Limits(None)) != [] and active() == 3


def test_pause_stops_slots_and_resume_does_not_catch_them_up(board: Board) -> None:
    add_job(board.jobs, "napper", every="60s", catchup="all")
    board.clock.set(EPOCH + MINUTE)
    (first,) = board.fire()
    board.complete(board.task(first).id)
    board.follow()
    paused = board.jobs.pause("napper")
    assert paused.paused and paused.to_json()["next_slot"] is None
    assert board.jobs.pause("napper") == paused  # again: no change, no event
    board.clock.set(EPOCH + 11 * MINUTE + 30)
    assert board.fire() == []
    resumed = board.jobs.resume("napper")
    assert not resumed.paused and resumed.next_slot == EPOCH + 12 * MINUTE
    assert board.fire() == []  # the ten slots that came while paused stay missed
    board.clock.set(EPOCH + 12 * MINUTE)
    assert [r.slot for r in board.fire()] == [EPOCH + 12 * MINUTE]
    kinds = board.kinds("napper")
    assert kinds.count("paused") == kinds.count("resumed") == 1
    assert "skipped_missed" not in kinds
    assert [r.slot for r in board.runs("napper")] == [EPOCH + MINUTE, EPOCH + 12 * MINUTE]


def test_rm_cancels_queued_runs_lets_the_active_one_finish_and_keeps_history(
    board: Board,
) -> None:
    add_job(board.jobs, "doomed", every="60s", overlap="queue")
    for minute in (1, 2, 3):
        board.clock.set(EPOCH + minute * MINUTE)
        board.fire()
    first, second, third = board.runs("doomed")
    assert [first.state, second.state, third.state] == [ACTIVE, QUEUED, QUEUED]
    board.jobs.remove("doomed")
    with pytest.raises(NotFound):
        board.jobs.get("doomed")
    assert states(board, "doomed") == [ACTIVE, CANCELLED, CANCELLED]
    cancelled = [e for e in board.events("doomed") if e.kind == "cancelled"]
    assert sorted(e.run_id or 0 for e in cancelled) == [second.id, third.id]
    assert {e.data["why"] for e in cancelled} == {"removed"}
    assert board.kinds("doomed")[-1] == "removed"
    board.clock.set(EPOCH + 10 * MINUTE)
    assert board.fire() == []
    # The run already on the board finishes as it is; nothing queued starts after it.
    board.complete(board.task(first).id, "last words")
    board.follow()
    assert board.jobs.start_queued(Limits()) == []
    assert states(board, "doomed") == [COMPLETED, CANCELLED, CANCELLED]
    assert board.jobs.get_run(first.id).delivery is None
    assert len(board.events("doomed")) > 5  # the history stays


def test_run_now_fires_once_outside_the_schedule(board: Board) -> None:
    add_job(board.jobs, "adhoc", every="1h")
    board.clock.set(EPOCH + 125.0004)
    run = board.jobs.run_now("adhoc")
    assert run.manual and run.state == ACTIVE and run.slot == EPOCH + 125.0
    assert board.task(run).idempotency_key == "job:adhoc:2027-01-07T00:02:05Z"
    assert board.jobs.get("adhoc").next_slot == EPOCH + 3600  # the schedule is untouched
    # Run again while it is in flight: it waits, it is not skipped (someone asked).
    board.clock.advance(0.5)
    again = board.jobs.run_now("adhoc")
    assert again.state == QUEUED and again.manual
    assert again.slot == EPOCH + 125.5
    scheduled = [e for e in board.events("adhoc") if e.kind == "scheduled"]
    assert [e.data["manual"] for e in scheduled] == [True]
    board.jobs.pause("adhoc")
    board.complete(board.task(run).id)
    board.follow()
    assert board.jobs.start_queued(Limits()) == [again.id]  # a paused job still runs by hand
    with pytest.raises(NotFound):
        board.jobs.run_now("nosuch")


def test_a_daily_0230_fires_once_on_each_dst_night_through_the_scheduler(board: Board) -> None:
    berlin = ZoneInfo("Europe/Berlin")

    def walk(name: str, start: datetime, hours: int) -> list[str]:
        board.clock.set(start.timestamp())
        add_job(board.jobs, name, cron="30 2 * * *", timezone="Europe/Berlin")
        for _ in range(hours * 6):  # a tick every ten minutes through the night
            board.clock.advance(600)
            for run in board.fire():
                board.complete(board.task(run).id)
            board.follow()
        board.jobs.remove(name)
        return [datetime.fromtimestamp(r.slot, berlin).isoformat() for r in board.runs(name)]

    # Clocks go back at 03:00 CEST on 2027-10-31: 02:30 happens twice, fires once.
    assert walk("autumn", datetime(2027, 10, 30, 12, tzinfo=berlin), 48) == [
        "2027-10-31T02:30:00+02:00",
        "2027-11-01T02:30:00+01:00",
    ]
    # Clocks go forward at 02:00 CET on 2027-03-28: no 02:30, it fires at 03:00.
    assert walk("spring", datetime(2027, 3, 27, 12, tzinfo=berlin), 48) == [
        "2027-03-28T03:00:00+02:00",
        "2027-03-29T02:30:00+02:00",
    ]


# -- failures, backoff, the dead-letter queue ----------------------------------------------


def test_failures_back_off_then_dead_letter_after_exactly_max_retries(board: Board) -> None:
    prompt = "count the widgets in the warehouse"
    add_job(
        board.jobs, "flaky", prompt=prompt, every="1h",
        max_retries=4, retry_delay="10s", retry_max_delay="45s",
    )  # fmt: skip
    board.clock.set(EPOCH + 3600)
    (run,) = board.fire()
    task_id = board.task(run).id
    for failure in range(1, 6):
        if failure == 3:
            # The provider says 429 between two failures: wait, no attempt used up.
            limited = board.store.rate_limited(board.claim(task_id), 7.0)
            assert limited.status == READY and limited.consecutive_failures == 2
            board.clock.advance(7)
        task = board.fail(task_id, f"upstream 502 (try {failure})")
        assert task.consecutive_failures == failure
        if task.not_before is not None:
            board.clock.set(task.not_before)
    assert task.status == BLOCKED
    board.follow()

    events = board.events("flaky")
    retries = [e for e in events if e.kind == "retry_scheduled"]
    assert [e.data["attempt"] for e in retries] == [1, 2, 3, 4]
    for event, full in zip(retries, [10.0, 20.0, 40.0, 45.0], strict=True):
        # retry_delay x 2^(n-1), capped at retry_max_delay, shortened by <= 10% jitter
        assert full * 0.9 <= event.data["delay"] <= full, (event.data, full)
        assert event.data["not_before"] == pytest.approx(event.at + event.data["delay"])
    assert [e.data["retry_after"] for e in events if e.kind == "rate_limited"] == [7.0]
    assert [e.data["attempt"] for e in events if e.kind == "started"] == [1, 2, 3, 4, 5, 6]
    assert len([e for e in events if e.kind == "failed"]) == 5  # 1 + max_retries
    (dead,) = [e for e in events if e.kind == "dead_lettered"]
    assert dead.run_id == run.id and dead.slot == EPOCH + 3600
    assert dead.data["attempts"] == 5
    assert dead.data["error"] == "upstream 502 (try 5)"
    assert dead.data["prompt"] == prompt
    (gave_up,) = [e for e in board.store.events_since(0, task_id=task_id) if e.kind == "gave_up"]
    assert gave_up.data["reason"] == "dead_letter" and gave_up.data["failures"] == 5

    stored = board.jobs.get_run(run.id)
    assert stored.state == DEAD_LETTERED and stored.error == "upstream 502 (try 5)"
    assert [r.id for r, _ in board.jobs.dead()] == [run.id]

    # `jobs dead` lists it with the error, the attempts and the prompt that failed.
    listed = json.loads(cli_ok(board, "dead", "--json"))
    assert len(listed) == 1
    row = listed[0]
    assert (row["id"], row["job"], row["state"]) == (run.id, "flaky", DEAD_LETTERED)
    assert (row["reason"], row["error"], row["failures"]) == (
        "dead_letter",
        "upstream 502 (try 5)",
        5,
    )
    assert row["prompt"] == prompt and row["profile"] == "alpha"
    assert row["failed_task"] == task_id and row["attempts"] == 6  # claims, with the 429

    # The job's next slot still fires (overlap: skip does not count a dead letter).
    board.clock.set(EPOCH + 2 * 3600)
    (next_run,) = board.fire()
    assert next_run.state == ACTIVE

    # `jobs retry RUN_ID` sends it back; a fresh failure count; this time it completes.
    retried = json.loads(cli_ok(board, "retry", str(run.id), "--json"))
    assert retried["id"] == run.id and retried["state"] == ACTIVE
    task = board.store.get_task(task_id)
    assert task.status == TODO and task.consecutive_failures == 0
    board.complete(task_id, "1,204 widgets")
    board.follow()
    assert board.jobs.get_run(run.id).state == COMPLETED
    assert board.jobs.dead() == []
    assert board.kinds("flaky").count("retried") == 1  # `unblocked` is not a second one
    assert [f.run.id for f in board.finished] == [run.id]
    assert board.finished[0].task.result == "1,204 widgets"
    with pytest.raises(InvalidTransition):
        board.jobs.retry(run.id)


def cli_ok(board: Board, *args: str) -> str:
    result = run_hermes("jobs", *args, env=board.env)
    assert result.returncode == 0, (args, result.stderr)
    return result.stdout


def test_rate_limits_never_use_up_an_attempt(board: Board) -> None:
    add_job(board.jobs, "strict", max_retries=0)
    board.clock.set(EPOCH + MINUTE)
    (run,) = board.fire()
    task_id = board.task(run).id
    for _ in range(3):
        task = board.store.rate_limited(board.claim(task_id), 30.0)
        assert task.status == READY and task.consecutive_failures == 0
        assert board.store.claim(HOLDER, task_id=task_id) is None  # not before Retry-After
        board.clock.advance(30)
    board.complete(task_id)
    board.follow()
    assert board.jobs.get_run(run.id).state == COMPLETED
    kinds = board.kinds("strict")
    assert kinds.count("rate_limited") == 3
    assert "failed" not in kinds and "dead_lettered" not in kinds


def test_a_failure_with_no_retries_left_dead_letters_at_once(board: Board) -> None:
    add_job(board.jobs, "once", max_retries=0)
    board.clock.set(EPOCH + MINUTE)
    (run,) = board.fire()
    assert board.fail(board.task(run).id, "boom").status == BLOCKED
    board.follow()
    assert board.jobs.get_run(run.id).state == DEAD_LETTERED
    assert "retry_scheduled" not in board.kinds("once")


# -- pipelines -------------------------------------------------------------------------


def test_a_pipeline_step_starts_after_the_previous_and_gets_its_result(board: Board) -> None:
    add_job(
        board.jobs, "pipe", every="1h",
        steps=[("alpha", "collect the numbers"), ("beta", "summarise them")],
    )  # fmt: skip
    board.clock.set(EPOCH + 3600)
    (run,) = board.fire()
    step1, step2 = board.tasks(run)
    assert step2.parents == (step1.id,)
    assert (step1.assignee, step2.assignee) == ("alpha", "beta")
    assert (step1.status, step2.status) == (READY, TODO)
    assert step1.idempotency_key == "job:pipe:2027-01-07T01:00:00Z"
    assert step2.idempotency_key == "job:pipe:2027-01-07T01:00:00Z:2"
    assert step2.title == "job pipe 2027-01-07T01:00:00Z step 2/2"
    board.store.promote("default")
    assert board.store.claim(HOLDER, task_id=step2.id) is None  # waits for step 1

    board.complete(step1.id, "R1: 42 widgets, 7 gadgets")
    board.follow()
    assert board.jobs.get_run(run.id).state == ACTIVE
    assert board.kinds("pipe")[-1] == "step_completed"
    board.store.promote("default")
    step2 = board.store.get_task(step2.id)
    assert step2.status == READY
    # What the dispatcher sends step 2's profile: its prompt and step 1's result.
    content = messages_for(board.store, step2)[0]["content"]
    assert "summarise them" in content and "R1: 42 widgets, 7 gadgets" in content
    assert content == task_text(step2, [board.store.get_task(step1.id)], [])

    board.complete(step2.id, "about fifty things")
    board.follow()
    assert board.jobs.get_run(run.id).state == COMPLETED
    assert [(f.run.id, f.task.id, f.task.result) for f in board.finished] == [
        (run.id, step2.id, "about fifty things")
    ]
    steps = [(e.kind, e.data.get("step")) for e in board.events("pipe")]
    assert steps[1:] == [
        ("scheduled", None),
        ("started", 1),
        ("step_completed", 1),
        ("started", 2),
        ("completed", 2),
    ]


def test_a_dead_lettered_step_stops_the_chain_visibly(board: Board) -> None:
    add_job(
        board.jobs, "chain", every="1h", max_retries=0,
        steps=[("alpha", "fetch"), ("beta", "report")],
    )  # fmt: skip
    board.clock.set(EPOCH + 3600)
    (run,) = board.fire()
    step1, step2 = board.tasks(run)
    board.fail(step1.id, "fetch failed: 404")
    board.follow()
    board.clock.advance(3000)
    board.store.promote("default")
    assert board.store.get_task(step2.id).status == TODO  # never starts
    assert board.jobs.get_run(run.id).state == DEAD_LETTERED
    (dead,) = [e for e in board.events("chain") if e.kind == "dead_lettered"]
    assert (dead.data["step"], dead.data["task_id"], dead.data["profile"]) == (1, step1.id, "alpha")
    (listed,) = board.jobs.dead()
    assert [t.status for t in listed[1]] == [BLOCKED, TODO]
    # Retried, the chain goes on from the step that failed.
    board.jobs.retry(run.id)
    board.complete(step1.id, "page")
    board.store.promote("default")
    board.complete(step2.id, "report")
    board.follow()
    assert board.jobs.get_run(run.id).state == COMPLETED
    assert [t.status for t in board.tasks(run)] == [DONE, DONE]


# -- the board's job settings, through the scheduler ------------------------------------------


def test_the_scheduler_applies_jobs_max_concurrent_from_config_yaml(board: Board) -> None:
    (board.home.root / "config.yaml").parent.mkdir(parents=True, exist_ok=True)
    (board.home.root / "config.yaml").write_text("jobs:\n  max_concurrent: 1\n")
    settings = SettingsFile(board.home)
    scheduler = Scheduler(board.home, board.store, lambda: settings.read().jobs)
    for name in ("one", "two"):
        add_job(board.jobs, name)
    board.clock.set(EPOCH + MINUTE)
    assert scheduler.tick() == EPOCH + 2 * MINUTE  # the next slot
    assert sorted(states(board, "one") + states(board, "two")) == [ACTIVE, QUEUED]
    (active,) = [r for n in ("one", "two") for r in board.runs(n) if r.state == ACTIVE]
    board.complete(board.task(active).id)
    scheduler.tick()  # follows the completion, then starts the queued run
    assert sorted(states(board, "one") + states(board, "two")) == [ACTIVE, COMPLETED]


# -- two schedulers, one PostgreSQL board ---------------------------------------------------


@pytest.mark.parametrize("backend", ["postgresql"])
def test_two_schedulers_on_one_postgresql_board_fire_and_follow_exactly_once(
    board: Board,
) -> None:
    jobs = [f"j{i}" for i in range(10)]
    for index, name in enumerate(jobs):
        add_job(
            board.jobs, name, every="10s", catchup="all",
            overlap="queue" if index % 2 else "skip",
        )  # fmt: skip
    rounds, step = 60, 5.0
    problems: list[BaseException] = []
    fired: Counter[int] = Counter()  # runs each scheduler's fire_due reported
    followed: Counter[int] = Counter()  # job events each one's follow reported
    gate = threading.Barrier(3)

    def scheduler(number: int) -> None:
        from hermes_container.kanban.jobs.api import Jobs

        store = board.open()
        mine = Jobs(store)
        holder = Holder(f"scheduler-{number}", 1000 + number)
        try:
            for _ in range(rounds):
                gate.wait(30)
                for _ in range(3):  # each pass several times, racing the other
                    followed[number] += mine.follow()
                    fired[number] += len(mine.fire_due(Limits(4)))
                    mine.start_queued(Limits(4))
                    for _ in range(4):
                        run = store.claim(holder)
                        if run is None:
                            break
                        store.complete(run, f"done by {number}")
                gate.wait(30)
        except BaseException as exc:  # reported by the main thread
            problems.append(exc)
            gate.abort()

    threads = [threading.Thread(target=scheduler, args=(n,)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(rounds):
            board.clock.advance(step)
            gate.wait(30)  # both pass at this moment
            gate.wait(30)  # both done
    except threading.BrokenBarrierError:
        pass
    for thread in threads:
        thread.join(60)
    assert not problems, problems
    tail = 0
    while made := board.jobs.follow():  # the last completions
        tail += made

    final = board.clock.now
    for name in jobs:
        job = board.jobs.get(name)
        expected = []
        slot = job.anchor + 10
        while slot <= final:
            expected.append(slot)
            slot += 10
        runs = board.runs(name)
        assert [r.slot for r in runs] == expected, name  # one run per slot, none missing
    keys = job_keys(board)
    assert keys and set(keys.values()) == {1}  # one task per key job:<name>:<slot>
    materialized = board.sql(
        "SELECT r.job, r.slot, t.idempotency_key FROM kanban_job_runs r "
        "JOIN kanban_job_tasks jt ON jt.run_id = r.id JOIN kanban_tasks t ON t.id = jt.task_id"
    )
    assert {key for _, _, key in materialized} == set(keys)
    for name, slot, key in materialized:
        assert key == f"job:{name}:{slot_name(float(slot))}"
    # Each board event of a job task was translated once, by one of the two.
    translated = Counter(
        json.loads(data)["board_event"]
        for (data,) in board.sql("SELECT data FROM kanban_job_events")
        if "board_event" in json.loads(data)
    )
    assert translated and set(translated.values()) == {1}
    board_events = board.sql(
        "SELECT e.id FROM kanban_events e JOIN kanban_job_tasks t ON t.task_id = e.task_id "
        "WHERE e.kind IN ('claimed', 'completed')"
    )
    assert set(translated) == {int(row[0]) for row in board_events}
    # What the two reported adds up to what is stored: neither counted a slot or an
    # event the other had handled.
    assert fired[1] + fired[2] == sum(len(board.runs(n)) for n in jobs)
    assert followed[1] + followed[2] + tail == len(translated)
    kinds = Counter(e.kind for e in board.events())
    assert kinds["scheduled"] == len(materialized)
    assert kinds["completed"] == sum(1 for n in jobs for s in states(board, n) if s == COMPLETED)
