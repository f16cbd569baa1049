"""Board metrics at scrape time, and the dispatcher's tick histogram from its own process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter

import pytest

from hermes_container.home import HermesHome
from hermes_container.kanban.model import STATUSES, Holder
from hermes_container.kanban.store import open_store, sqlite_path
from tests.unit.metrics_support import REPO, dashboard, scrape, value

AGE_S = 300.0


def fill(home: HermesHome) -> Counter[str]:
    """Tasks in every status, created AGE_S seconds ago; the statuses as the store says."""
    store = open_store(home, {}, clock=lambda: time.time() - AGE_S)
    try:
        holder = Holder(host="test#0", pid=os.getpid())
        parent = store.create_task("parent")  # no assignee: never claimed, stays ready
        for n in range(4):
            store.create_task(f"ready {n}", assignee="default")
        store.create_task("waits for its parent", parents=[parent.id])
        store.create_task("to sort", triage=True)
        for outcome in ("completed", "completed", "failed", None):
            run = store.claim(holder)
            assert run is not None
            if outcome == "completed":
                store.complete(run, "ok")
            elif outcome == "failed":
                store.fail(run, "boom")
        store.block(store.create_task("blocked").id, "by hand")
        store.archive(store.create_task("archived").id)
        return Counter(task.status for task in store.list_tasks(limit=None))
    finally:
        store.close()


def test_tasks_runs_and_oldest_ready(home: HermesHome) -> None:
    statuses = fill(home)
    assert {"ready", "running", "done", "todo", "triage", "blocked", "archived"} <= set(statuses)
    with dashboard(home) as client:
        samples, types, _ = scrape(client)
    assert types["hermes_board_tasks"] == "gauge"
    for status in STATUSES:
        assert (
            value(samples, "hermes_board_tasks", board="default", status=status) == statuses[status]
        )
    runs = "hermes_board_runs_total"
    assert value(samples, runs, board="default", outcome="completed") == 2
    assert value(samples, runs, board="default", outcome="failed") == 1
    age = value(samples, "hermes_board_oldest_ready_task_age_seconds", board="default")
    assert age is not None and AGE_S - 1 < age < AGE_S + 60
    assert value(samples, "hermes_metrics_collector_up", collector="board") == 1


def test_no_board_yet_is_not_created_by_a_scrape(home: HermesHome) -> None:
    with dashboard(home) as client:
        samples, _, _ = scrape(client)
    assert not sqlite_path(home).exists()
    assert not any(name.startswith("hermes_board_") for name, _ in samples)
    assert value(samples, "hermes_metrics_collector_up", collector="board") == 1


def test_dispatch_ticks_from_the_dispatchers_process(home: HermesHome) -> None:
    code = (
        "from hermes_container.metrics.dispatch import observe_tick\n"
        "observe_tick(0.02, 'default'); observe_tick(0.3, 'default'); observe_tick(0.001, 'ops')\n"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "HERMES_HOME": str(home.root)},
        check=True,
        timeout=60,
    )
    with dashboard(home) as client:
        samples, types, _ = scrape(client)
    name = "hermes_board_dispatch_tick_duration_seconds"
    assert types[name] == "histogram"
    assert value(samples, f"{name}_count", board="default") == 2
    assert value(samples, f"{name}_sum", board="default") == pytest.approx(0.32)
    assert value(samples, f"{name}_bucket", board="default", le="0.025") == 1
    assert value(samples, f"{name}_count", board="ops") == 1
