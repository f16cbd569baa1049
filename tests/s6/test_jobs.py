"""Scheduled jobs under real s6 (issue 17): the jobs scheduler inside the supervised
dispatcher (`hermes kanban daemon`, a slot of `hermes supervise`), real gateways, the
fake provider (tests/fake_upstream.py) and the board in SQLite under the tree's home.

Everything is read back the way an operator reads it: `hermes jobs runs|events|dead
--json` and `hermes kanban` (as the home's owner), the result files under
$HERMES_HOME/jobs/output/, and the board's own rows (tests/s6/test_kanban_dispatcher.py's
snapshot, run as the owner).

What must hold: a provider that fails the first N requests costs the run N failures and
N retries, each after a longer backoff, then it completes; one that always fails sends
the run to the dead-letter queue after exactly max_retries retries and the next slot
fires all the same; kill -9 of the dispatcher at random moments, while slots' tasks wait
for a gateway that is down and while they run, loses no slot and runs none twice.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hermes_container.kanban.jobs.schedule import slot_name
from tests.fake_upstream import FakeUpstream
from tests.s6.conftest import Tree, host_mode_tree, wait_for
from tests.s6.test_kanban_dispatcher import (
    chat_requests,
    daemon_pid,
    daemons,
    prepare,
    snapshot,
    stop,
    supervise,
)

pytestmark = pytest.mark.timeout(300)

JITTER = 0.1  # a retry's delay is shortened by up to this fraction (kanban/runs.py)
# How late a retry may start after its backoff: the daemon sleeps until the retry is
# due (a few ms measured), far under the 5 s dispatch interval set here.
RETRY_LATENESS = 2.5


@pytest.fixture
def host() -> Iterator[Tree]:
    with host_mode_tree() as tree:
        yield tree


def start(
    host: Tree, upstream: FakeUpstream, kanban: dict[str, Any], jobs: dict[str, Any]
) -> subprocess.Popen[str]:
    """`hermes supervise` with the default profile on the fake provider and the given
    `kanban:` and `jobs:` sections; returns once the gateway and the dispatcher run."""
    prepare(host, upstream, kanban)
    config = host.home.root / "config.yaml"
    data = yaml.safe_load(config.read_text())
    data["jobs"] = jobs
    config.write_text(yaml.safe_dump(data))  # rewritten in place: still the owner's
    supervisor = supervise(host)
    host.wait_ready("default")
    wait_for(lambda: daemon_pid(host.scandir / "dispatcher"), what="the dispatcher")
    return supervisor


def jobs_json(host: Tree, *args: str) -> Any:
    return json.loads(host.ok("jobs", *args, "--json"))


def runs_of(host: Tree, name: str) -> list[dict[str, Any]]:
    """The job's runs, oldest first, each with its tasks and attempts."""
    runs: list[dict[str, Any]] = jobs_json(host, "runs", name, "--limit", "1000")
    return runs[::-1]


def events_of(host: Tree, name: str) -> list[dict[str, Any]]:
    """`hermes jobs events --json --job NAME`: the ledger's view, one object a line."""
    out = host.ok("jobs", "events", "--job", name, "--json")
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def events_with(host: Tree, name: str, run_id: int | None, kind: str) -> list[dict[str, Any]]:
    """The job's events once the ledger holds `kind` (of run `run_id`, if given): the
    daemon copies job events into the ledger after each tick, a moment after the write."""

    def copied() -> list[dict[str, Any]] | None:
        events = events_of(host, name)
        mine = events if run_id is None else of_run(events, run_id)
        return events if named(mine, kind) else None

    found: list[dict[str, Any]] = wait_for(copied, what=f"job.{kind} of {name} in the ledger")
    return found


def of_run(events: list[dict[str, Any]], run_id: int) -> list[dict[str, Any]]:
    return [e for e in events if e["data"].get("run_id") == run_id]


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["kind"].removeprefix("job.") for e in events]


def named(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["kind"] == f"job.{kind}"]


def output_file(host: Tree, name: str, slot: float) -> Path:
    return host.home.root / "jobs" / "output" / name / f"{slot_name(slot)}.md"


def first_run(host: Tree, name: str, state: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        runs = runs_of(host, name)
        return runs[0] if runs and runs[0]["state"] == state else None

    found: dict[str, Any] = wait_for(reached, timeout=30, what=f"{name}'s first run {state}")
    return found


# -- retries -----------------------------------------------------------------------------


def test_a_provider_that_fails_twice_costs_two_retries_with_growing_backoff(host: Tree) -> None:
    fails, max_retries, delay = 2, 3, 1.0
    with FakeUpstream() as upstream:
        upstream.set(fail_first=fails, status=500, error="warming up")
        supervisor = start(host, upstream, {"dispatch_interval_seconds": 5}, {})
        try:
            added = jobs_json(
                host, "add", "flaky", "--profile", "default", "--prompt", "status report",
                "--every", "3s", "--max-retries", str(max_retries),
                "--retry-delay", f"{delay:g}s", "--retry-max-delay", "10s",
            )  # fmt: skip
            wait_for(lambda: runs_of(host, "flaky"), what="the first slot's run")
            host.ok("jobs", "pause", "flaky")  # one run to follow
            run = first_run(host, "flaky", "completed")
            events = of_run(events_with(host, "flaky", run["id"], "completed"), run["id"])
            dead = jobs_json(host, "dead")
        finally:
            stop(supervisor)
        requests = chat_requests(upstream)

    assert run["slot"] == added["next_slot"] and run["manual"] is False
    (task,) = run["tasks"]
    assert (task["status"], task["attempts"], run["attempts"]) == ("done", fails + 1, fails + 1)
    assert requests == fails + 1, "one request per attempt"
    assert kinds(events) == [
        "scheduled",
        *["started", "failed", "retry_scheduled"] * fails,
        "started",
        "completed",
    ]
    started, failed = named(events, "started"), named(events, "failed")
    retries = named(events, "retry_scheduled")
    assert [e["data"]["attempt"] for e in started] == [1, 2, 3]
    assert [e["data"]["attempt"] for e in failed] == [1, 2]
    assert all("HTTP 500" in e["data"]["error"] for e in failed), failed
    # retry_delay x 2^(attempt-1), less up to 10 % jitter: about 1 s, then about 2 s.
    delays = [e["data"]["delay"] for e in retries]
    for n, seen in enumerate(delays, start=1):
        full = delay * 2 ** (n - 1)
        assert (1 - JITTER) * full - 0.01 <= seen <= full, delays
    assert delays[1] > delays[0]
    # Each retry started after its backoff, and not much later.
    for fail, retry, again in zip(failed, retries, started[1:], strict=True):
        waited = again["at"] - fail["at"]
        assert retry["data"]["delay"] - 0.05 <= waited <= retry["data"]["delay"] + RETRY_LATENESS
    completed = named(events, "completed")[0]
    assert completed["data"]["attempts"] == fails + 1
    # The result is saved where the issue says, and it is the task's answer.
    saved = output_file(host, "flaky", run["slot"])
    result = saved.read_text()
    assert result.startswith("echo: ") and "status report" in result
    assert saved.stat().st_uid == host.owner and saved.stat().st_mode & 0o077 == 0
    assert dead == []


def test_a_provider_that_always_fails_dead_letters_the_run_and_the_next_slot_fires(
    host: Tree,
) -> None:
    max_retries, every = 3, 6
    with FakeUpstream() as upstream:
        upstream.set(status=500, error="model unavailable")
        supervisor = start(host, upstream, {"dispatch_interval_seconds": 5}, {})
        try:
            jobs_json(
                host, "add", "doomed", "--profile", "default", "--prompt", "never answered",
                "--every", f"{every}s", "--max-retries", str(max_retries),
                "--retry-delay", "1s", "--retry-max-delay", "1.5s",
            )  # fmt: skip
            run = first_run(host, "doomed", "dead_lettered")
            dead = jobs_json(host, "dead")

            def next_slot_fired() -> dict[str, Any] | None:
                later = [
                    r
                    for r in runs_of(host, "doomed")
                    if r["slot"] > run["slot"] and r["state"] != "skipped"
                ]
                return later[0] if later else None

            later = wait_for(next_slot_fired, timeout=every + 10, what="the next slot's run")
            host.ok("jobs", "pause", "doomed")
            events = events_with(host, "doomed", later["id"], "scheduled")
            board = {t["id"]: t for t in snapshot(host)}
            # The dead letter can be run again: with the provider back, it completes.
            upstream.set()
            retried = jobs_json(host, "retry", str(run["id"]))
            assert retried["state"] == "active"

            def retried_done() -> dict[str, Any] | None:
                now = [r for r in runs_of(host, "doomed") if r["id"] == run["id"]]
                return now[0] if now and now[0]["state"] == "completed" else None

            done = wait_for(retried_done, what="the retried run to complete")
        finally:
            stop(supervisor)

    attempts = max_retries + 1
    (task,) = run["tasks"]
    assert (task["status"], task["attempts"], run["attempts"]) == ("blocked", attempts, attempts)
    run_events = of_run(events, run["id"])
    assert kinds(run_events) == [
        "scheduled",
        *["started", "failed", "retry_scheduled"] * max_retries,
        "started",
        "failed",
        "dead_lettered",
    ]
    delays = [e["data"]["delay"] for e in named(run_events, "retry_scheduled")]
    # 1 s, then 2 s and 4 s capped at --retry-max-delay 1.5 s (each less up to 10 %).
    for seen, full in zip(delays, (1.0, 1.5, 1.5), strict=True):
        assert (1 - JITTER) * full - 0.01 <= seen <= full, delays
    (letter,) = named(run_events, "dead_lettered")
    assert letter["data"]["attempts"] == attempts
    assert letter["data"]["prompt"] == "never answered"
    assert "HTTP 500" in letter["data"]["error"]
    # On the board: blocked with reason dead_letter, after exactly max_retries retries.
    board_task = board[task["id"]]
    assert [r["outcome"] for r in board_task["runs"]] == ["failed"] * attempts
    (gave_up,) = [e for e in board_task["events"] if e["kind"] == "gave_up"]
    assert gave_up["data"]["reason"] == "dead_letter" and gave_up["data"]["failures"] == attempts
    # `jobs dead` lists it with what failed and the prompt that failed.
    (entry,) = dead
    assert entry["id"] == run["id"] and entry["reason"] == "dead_letter"
    assert entry["failures"] == attempts and entry["profile"] == "default"
    assert entry["prompt"] == "never answered" and "HTTP 500" in entry["error"]
    # The next slot fired after the dead letter, on its own schedule.
    gap = later["slot"] - run["slot"]
    assert gap > 0 and gap % every == 0, (run["slot"], later["slot"])
    assert later["id"] > run["id"] and named(of_run(events, later["id"]), "scheduled")
    # `jobs retry` sent the dead letter back: one more attempt, and its result saved.
    assert done["attempts"] == attempts + 1
    assert output_file(host, "doomed", run["slot"]).read_text().startswith("echo: ")


# -- kill -9 of the dispatcher ---------------------------------------------------------------


KILLS_WHILE_DOWN = 3  # the slots' tasks are on the board, the gateway is down
KILLS_WHILE_RUNNING = 5


def kill_and_wait(host: Tree, pid: int, why: str) -> int:
    os.kill(pid, signal.SIGKILL)
    slot = host.scandir / "dispatcher"
    new: int = wait_for(
        lambda: (n := daemon_pid(slot)) != pid and n, what=f"s6 to restart the dispatcher {why}"
    )
    return new


def test_kill_9_of_the_dispatcher_loses_no_slot_and_runs_none_twice(host: Tree) -> None:
    seed = int(os.environ.get("HERMES_CHAOS_SEED") or time.time())
    rng = random.Random(seed)
    why = f"(HERMES_CHAOS_SEED={seed})"
    kanban = {"dispatch_interval_seconds": 1, "claim_ttl_seconds": 30}
    with FakeUpstream() as upstream:
        upstream.set(delay=0.3)  # kills also land while requests are in flight
        supervisor = start(host, upstream, kanban, {"gateway_grace_seconds": 300})
        slot = host.scandir / "dispatcher"
        try:
            pid = daemon_pid(slot)
            assert pid is not None
            seen = [pid]
            host.ok("-p", "default", "gateway", "stop")
            # catchup all + overlap queue: every slot gets a run of its own, in order.
            added = jobs_json(
                host, "add", "tick", "--profile", "default", "--prompt", "tock",
                "--every", "1s", "--catchup", "all", "--overlap", "queue",
            )  # fmt: skip
            wait_for(lambda: runs_of(host, "tick"), what="the first slot's run")
            for n in range(KILLS_WHILE_DOWN):
                time.sleep(rng.uniform(0.0, 1.5))
                pid = kill_and_wait(host, pid, f"after kill {n + 1} {why}")
                seen.append(pid)
            waiting = runs_of(host, "tick")
            host.ok("-p", "default", "gateway", "start")
            host.wait_ready("default")
            for n in range(KILLS_WHILE_RUNNING):
                time.sleep(rng.uniform(0.0, 1.2))
                pid = kill_and_wait(host, pid, f"after kill {KILLS_WHILE_DOWN + n + 1} {why}")
                seen.append(pid)

            def caught_up() -> list[dict[str, Any]] | None:
                """The runs, once the dispatcher has fired every slot so far and every
                run has completed."""
                job = jobs_json(host, "show", "tick")
                runs = runs_of(host, "tick")
                busy = [r for r in runs if r["state"] != "completed"]
                return None if busy or job["last_slot"] != runs[-1]["slot"] else runs

            wait_for(caught_up, timeout=60, what=f"the runs to catch up {why}")
            host.ok("jobs", "pause", "tick")
            # A slot may have fired between the two: its run completes too.
            runs = wait_for(caught_up, what=f"the last runs {why}")
            events = events_with(host, "tick", None, "paused")
            tasks = {t["id"]: t for t in snapshot(host)}
            assert daemons(host) == [pid], "one dispatcher, the last one s6 started"
        finally:
            stop(supervisor)
        requests = chat_requests(upstream)

    # While the gateway was down, slots fired and waited, not run: the kills came
    # between a slot's run being made and its task running (the active run's task on
    # the board, the later slots' runs queued behind it).
    unrun = [r for r in waiting if r["tasks"] and r["tasks"][0]["attempts"] == 0]
    queued = [r for r in waiting if r["state"] == "queued"]
    assert unrun and queued, f"no slot was waiting when the gateway came back {why}"
    assert len(set(seen)) == KILLS_WHILE_DOWN + KILLS_WHILE_RUNNING + 1

    # No slot lost: one run for each slot from the first to the last before the pause.
    slots = [r["slot"] for r in runs]
    assert slots[0] == added["next_slot"]
    assert [b - a for a, b in itertools.pairwise(slots)] == [1.0] * (len(slots) - 1), why
    (paused,) = named(events, "paused")
    assert paused["data"]["next_slot"] == slots[-1] + 1.0, why
    assert paused["at"] < slots[-1] + 1.0 + 0.5, "every slot that came before the pause fired"
    assert all(r["state"] == "completed" and not r["manual"] for r in runs), why

    # None run twice: each slot one task, done once, with one completed board run.
    task_ids = [r["first_task"] for r in runs]
    assert all(len(r["tasks"]) == 1 for r in runs) and len(set(task_ids)) == len(runs)
    assert set(tasks) == set(task_ids), "no task on the board that is not a slot's"
    for task_id in task_ids:
        task = tasks[task_id]
        assert task["status"] == "done", (task, why)
        board_kinds = Counter(e["kind"] for e in task["events"])
        assert board_kinds["completed"] == 1, (task_id, board_kinds, why)
        assert not board_kinds["failed"] and not board_kinds["gave_up"], (task_id, why)
        completed_runs = [r for r in task["runs"] if r["outcome"] == "completed"]
        assert len(completed_runs) == 1, (task_id, task["runs"], why)
        ordered = sorted(task["runs"], key=lambda r: r["claimed_at"])
        for earlier, later in itertools.pairwise(ordered):
            assert earlier["finished_at"] <= later["claimed_at"], (task_id, "two open runs", why)
    assert requests >= len(runs)

    # Each run's job events were made exactly once, whatever the kills interrupted.
    per_run = Counter((e["data"]["run_id"], e["kind"]) for e in events if e["data"].get("run_id"))
    for r in runs:
        assert per_run[(r["id"], "job.scheduled")] == 1, (r["id"], why)
        assert per_run[(r["id"], "job.completed")] == 1, (r["id"], why)
        assert output_file(host, "tick", r["slot"]).is_file(), (r["slot"], why)
    print(
        f"jobs chaos: {len(seen) - 1} kills, {len(runs)} slots, {len(waiting)} waiting for the "
        f"gateway, {requests} requests {why}"
    )
