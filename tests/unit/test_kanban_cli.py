"""`hermes kanban ...` as a user runs it (run_hermes: the real CLI in a subprocess).

Every command with --json; bad input exits 2 with one line on stderr and changes
nothing on the board; `dispatch` reports like upstream hermes and, without --dry-run,
returns once the tasks it started have finished.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from hermes_container.commands.kanban import _last_events
from hermes_container.home import HermesHome
from hermes_container.kanban.store import Store
from tests.conftest import run_hermes
from tests.unit.kanban_support import (
    ELSEWHERE,
    Site,
    fresh_board,
    open_test_store,
    running_site,
    set_kanban,
    snapshot,
)


@pytest.fixture
def store(hermes_home: HermesHome, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    monkeypatch.delenv("HERMES_KANBAN_DATABASE_URL", raising=False)
    opened = open_test_store(hermes_home)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Running gateways (alpha, beta; gamma's is down) for the `dispatch` tests."""
    with running_site(tmp_path_factory.mktemp("site")) as running:
        yield running


@pytest.fixture
def site_store(site: Site, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """An empty board in the site's home, which HERMES_HOME now names."""
    opened = open_test_store(fresh_board(site, monkeypatch))
    yield opened
    opened.close()


def ok(*args: str) -> subprocess.CompletedProcess[str]:
    result = run_hermes("kanban", *args)
    assert result.returncode == 0, (args, result.stderr)
    return result


def ok_json(*args: str) -> Any:
    return json.loads(ok(*args, "--json").stdout)


# -- the commands, with --json ------------------------------------------------------------


def test_create_prints_the_id_and_json_the_task(store: Store) -> None:
    plain = ok("create", "first task")
    first = int(plain.stdout)
    assert plain.stdout == f"{first}\n"
    parent = ok_json("create", "parent")
    assert parent["status"] == "ready"
    data = ok_json(
        "create", "the works",
        "--body", "line one\nline two",
        "--assignee", "alpha",
        "--priority", "-3",
        "--parent", str(first), "--parent", str(parent["id"]),
        "--max-retries", "4",
        "--max-runtime", "90.5",
        "--idempotency-key", "job:nightly:1",
    )  # fmt: skip
    assert data["title"] == "the works"
    assert data["body"] == "line one\nline two"
    assert data["assignee"] == "alpha"
    assert data["priority"] == -3
    assert data["parents"] == sorted([first, parent["id"]])
    assert (data["max_retries"], data["max_runtime"]) == (4, 90.5)
    assert data["idempotency_key"] == "job:nightly:1"
    assert data["status"] == "todo"  # its parents are not done
    assert data["board"] == "default"
    row = store.get_task(data["id"])
    assert (row.title, row.assignee, row.priority, row.parents) == (
        "the works",
        "alpha",
        -3,
        tuple(sorted([first, parent["id"]])),
    )
    # Creating again with the key returns the same task, and nothing new.
    events = len(store.events_since(0))
    again = ok_json("create", "the works, again", "--idempotency-key", "job:nightly:1")
    assert again["id"] == data["id"] and again["title"] == "the works"
    assert len(store.events_since(0)) == events
    assert ok_json("create", "parked", "--triage")["status"] == "triage"
    ok("boards", "create", "ops")
    on_ops = ok_json("create", "elsewhere", "--board", "ops")
    assert store.get_task(on_ops["id"]).board == "ops"


def test_list_filters_and_orders(store: Store) -> None:
    a = store.create_task("a", assignee="alpha")
    b = store.create_task("b", assignee="beta", priority=5)
    c = store.create_task("c", assignee="alpha", triage=True)
    assert [t["id"] for t in ok_json("list")] == [b.id, a.id, c.id]
    assert [t["id"] for t in ok_json("list", "--status", "ready")] == [b.id, a.id]
    assert [t["id"] for t in ok_json("list", "--assignee", "alpha")] == [a.id, c.id]
    assert [t["id"] for t in ok_json("list", "--limit", "1")] == [b.id]
    plain = ok("list").stdout.splitlines()
    assert plain[0].split() == ["ID", "STATUS", "ASSIGNEE", "PRI", "TRY", "AGE", "TITLE"]
    assert plain[1].split()[:4] == [str(b.id), "ready", "beta", "5"]
    assert ok("list", "--status", "done").stdout == "no tasks\n"
    store.create_board("ops")
    assert ok_json("list", "--board", "ops") == []


def test_show_has_the_task_runs_events_and_result_but_no_run_token(store: Store) -> None:
    task = store.create_task("shown", body="details", assignee="alpha")
    store.comment(task.id, "a remark", author="ana")
    run = store.claim(ELSEWHERE, task_id=task.id)
    assert run is not None
    store.complete(run, "the answer", latency_ms=12, tokens=34)
    data = ok_json("show", str(task.id))
    assert (data["id"], data["status"], data["result"]) == (task.id, "done", "the answer")
    (shown_run,) = data["runs"]
    assert shown_run["outcome"] == "completed"
    assert (shown_run["latency_ms"], shown_run["tokens"]) == (12, 34)
    assert "token" not in shown_run
    assert run.token not in json.dumps(data)
    assert [e["kind"] for e in data["events"]] == [
        "created",
        "assigned",
        "commented",
        "claimed",
        "completed",
    ]
    plain = ok("show", str(task.id)).stdout
    assert f"Task #{task.id}: shown" in plain
    assert "Result:\nthe answer" in plain
    assert "commented" in plain and "a remark" in plain
    assert run.token not in plain


def test_assign_comment_block_unblock_archive_reclaim(store: Store) -> None:
    task = store.create_task("moves around")
    tid = str(task.id)
    assert ok_json("assign", tid, "alpha")["assignee"] == "alpha"
    assigned = [e for e in store.events_since(0, task_id=task.id) if e.kind == "assigned"]
    assert assigned[-1].data["source"] == "cli"
    result = ok("assign", tid, "stranger")
    assert result.stdout == f"Task #{task.id} assigned to stranger\n"
    assert "not a profile here" in result.stderr  # a note, not an error
    assert ok_json("assign", tid, "none")["assignee"] is None
    assert store.get_task(task.id).assignee is None

    ok_json("comment", tid, "look here", "--author", "bo")
    comment = store.events_since(0, task_id=task.id)[-1]
    assert (comment.kind, comment.data["text"], comment.data["author"]) == (
        "commented",
        "look here",
        "bo",
    )

    blocked = ok_json("block", tid, "waiting for the client")
    assert (blocked["status"], blocked["last_error"]) == ("blocked", "waiting for the client")
    assert ok_json("unblock", tid)["status"] == "todo"
    assert run_hermes("kanban", "unblock", tid).returncode == 1  # todo: nothing to unblock

    running = store.create_task("held", assignee="alpha")
    assert store.claim(ELSEWHERE, task_id=running.id) is not None
    reclaimed = ok_json("reclaim", str(running.id))
    assert (reclaimed["status"], reclaimed["consecutive_failures"]) == ("ready", 0)
    event = store.events_since(0, task_id=running.id)[-1]
    assert (event.kind, event.data["reason"]) == ("reclaimed", "reclaimed by hand")

    assert ok_json("archive", tid)["status"] == "archived"
    assert ok("archive", str(running.id)).stdout == f"Task #{running.id} is archived\n"
    assert store.get_task(running.id).status == "archived"


def test_boards_and_stats(store: Store, hermes_home: HermesHome) -> None:
    assert [b["slug"] for b in ok_json("boards")] == ["default"]
    created = ok_json("boards", "create", "ops")
    assert created["slug"] == "ops" and created["archived_at"] is None
    assert [b["slug"] for b in ok_json("boards", "list")] == ["default", "ops"]
    archived = ok_json("boards", "archive", "ops")
    assert archived["archived_at"] is not None
    assert [b["slug"] for b in ok_json("boards")] == ["default"]
    assert [b["slug"] for b in ok_json("boards", "list", "--all")] == ["default", "ops"]
    assert ok("boards").stdout == "default\n"

    set_kanban(hermes_home, max_in_progress_per_profile=3)
    store.create_task("r1", assignee="alpha")
    held = store.create_task("r2", assignee="alpha")
    store.create_task("t", assignee="beta", triage=True)
    store.create_task("u")
    assert store.claim(ELSEWHERE, task_id=held.id) is not None
    stats = ok_json("stats")
    assert stats["total"] == 4
    assert stats["by_status"] == {
        "triage": 1,
        "todo": 0,
        "ready": 2,
        "running": 1,
        "blocked": 0,
        "done": 0,
        "archived": 0,
    }
    assert stats["by_assignee"] == {
        "alpha": {"ready": 1, "running": 1},
        "beta": {"triage": 1},
        "-": {"ready": 1},
    }
    assert stats["running"] == {"alpha": 1}
    assert (stats["max_in_progress"], stats["max_in_progress_per_profile"]) == (8, 3)
    assert "alpha: ready 1  running 1 (running 1/3)" in ok("stats").stdout


def test_tail_prints_the_last_events_and_follows_from_an_id(store: Store) -> None:
    store.create_board("ops")
    tasks = [store.create_task(f"t{i}", board=("default", "ops")[i % 2]) for i in range(30)]
    events = store.events_since(0, limit=1000)
    lines = ok("tail", "--json").stdout.splitlines()
    assert [json.loads(line)["id"] for line in lines] == [e.id for e in events[-20:]]
    since = ok("tail", "--json", "--since", str(events[24].id)).stdout.splitlines()
    assert [json.loads(line)["id"] for line in since] == [e.id for e in events[25:]]
    ops = [json.loads(line) for line in ok("tail", "--json", "--board", "ops").stdout.splitlines()]
    assert [e["id"] for e in ops] == [e.id for e in events if e.board == "ops"][-20:]
    one = ok("tail", "--json", "--task", str(tasks[3].id)).stdout.splitlines()
    assert [json.loads(line)["task_id"] for line in one] == [tasks[3].id]
    plain = ok("tail", "--since", str(events[-2].id)).stdout.splitlines()
    assert len(plain) == 1 and f"#{tasks[-1].id} created" in plain[0]


@pytest.mark.parametrize("count", [1, 20])
def test_the_last_events_are_found_without_reading_the_whole_ledger(
    store: Store, count: int
) -> None:
    """`tail` without --since: the last N (matching) events, by a search over ids that
    reads a few rows per step, also past the first page sizes."""
    store.create_board("ops")
    for i in range(700):
        store.create_task(f"t{i}", board="ops" if i % 7 == 0 else "default")
    calls = []
    real = store.events_since

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("limit"))
        return real(*args, **kwargs)

    store.events_since = counting  # type: ignore[method-assign]
    everything = real(0, limit=100_000)
    assert len(everything) == 700
    for board, task in ((None, None), ("ops", None), ("default", None), (None, 7)):
        wanted = [
            e
            for e in everything
            if (board is None or e.board == board) and (task is None or e.task_id == task)
        ][-count:]
        calls.clear()
        assert _last_events(store, board, task, count) == wanted
        assert all(limit == count for limit in calls)
        assert len(calls) <= 2 * 10 + 2  # doubling up to 2^10 > 700, then halving


# -- dispatch -----------------------------------------------------------------------------


DISPATCH_KEYS = (
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
)


def test_dispatch_json_has_the_issue_keys_and_a_dry_run_writes_nothing(
    site: Site, site_store: Store
) -> None:
    store = site_store
    set_kanban(site.home, default_assignee="alpha", max_in_progress_per_profile=1)
    first = store.create_task("first")
    second = store.create_task("second", assignee="alpha")
    down = store.create_task("down", assignee="gamma")  # its gateway is not running
    gone = store.create_task("gone", assignee="nobody")
    before = snapshot(store)
    report = ok_json("dispatch", "--dry-run")
    assert snapshot(store) == before
    for key in DISPATCH_KEYS:
        assert isinstance(report[key], list), key
    assert report["dry_run"] is True
    assert report["spawned"] == [{"task_id": first.id, "assignee": "alpha"}]
    assert report["auto_assigned_default"] == [first.id]
    assert report["skipped_per_profile_capped"] == [
        {"task_id": second.id, "assignee": "alpha", "current": 1}
    ]
    assert report["skipped_gateway_down"] == [down.id]
    assert report["skipped_nonspawnable"] == [gone.id]
    plain = ok("dispatch", "--dry-run").stdout.splitlines()
    assert f"Would spawn: #{first.id} (alpha)" in plain
    assert snapshot(store) == before


def test_dispatch_returns_once_its_tasks_have_finished_with_upstreams_lines(
    site: Site, site_store: Store
) -> None:
    store, fake_upstream = site_store, site.upstream
    set_kanban(site.home, default_assignee="alpha", max_in_progress_per_profile=2)
    loose = [store.create_task("loose one"), store.create_task("loose two")]
    held = store.create_task("waits", assignee="alpha")
    fake_upstream.set(reply="did it", delay=1.0)
    started = time.monotonic()
    result = ok("dispatch")
    took = time.monotonic() - started
    assert took >= 1.0  # it waited for the provider's answers ...
    for task in loose:  # ... and the tasks are done when it returns
        row = store.get_task(task.id)
        assert (row.status, row.result, row.assignee) == ("done", "did it", "alpha")
    lines = result.stdout.splitlines()
    assert f"Auto-assigned to kanban.default_assignee='alpha': #{loose[0].id}, #{loose[1].id}" in (
        lines
    )
    assert f"Deferred (alpha at per-profile cap, 2 running): #{held.id}" in lines
    assert f"Spawned: #{loose[0].id} (alpha), #{loose[1].id} (alpha)" in lines
    assert f"Completed: #{loose[0].id}, #{loose[1].id}" in lines
    assert result.stderr == ""

    fake_upstream.set(reply="me too")
    report = ok_json("dispatch")
    assert report["spawned"] == [{"task_id": held.id, "assignee": "alpha"}]
    assert report["completed"] == [held.id]
    assert store.get_task(held.id).result == "me too"
    assert ok("dispatch").stdout == "Nothing to dispatch\n"


def test_dispatch_prints_a_config_warning_once_naming_the_key(
    store: Store, hermes_home: HermesHome
) -> None:
    set_kanban(hermes_home, max_in_progress_per_profile=0)
    store.create_task("unassigned")
    result = ok("dispatch")
    warnings = result.stderr.splitlines()
    assert len(warnings) == 1
    assert "kanban.max_in_progress_per_profile" in warnings[0]
    assert warnings[0].startswith("hermes: warning: ")
    assert "Skipped (no assignee, no default): #1" in result.stdout
    report = json.loads(run_hermes("kanban", "dispatch", "--json").stdout)
    assert len(report["warnings"]) == 1


# -- bad input ------------------------------------------------------------------------------


BAD_INPUT: list[tuple[str, ...]] = [
    ("create", ""),
    ("create", "   "),
    ("create", "two\nlines"),
    ("create", "x" * 501),
    ("create", "x", "--priority", "high"),
    ("create", "x", "--parent", "999"),
    ("create", "x", "--parent", "0"),
    ("create", "x", "--max-retries", "-1"),
    ("create", "x", "--max-runtime", "0"),
    ("create", "x", "--max-runtime", "inf"),
    ("create", "x", "--assignee", "Not A Profile"),
    ("create", "x", "--board", "Bad Board"),
    ("create", "x", "--board", "nosuch"),
    ("create", "x", "--idempotency-key", ""),
    ("create", "x", "--no-such-flag"),
    ("list", "--status", "sleeping"),
    ("list", "--assignee", "../etc"),
    ("list", "--limit", "0"),
    ("list", "--board", "UPPER"),
    ("show", "999"),
    ("show", "one"),
    ("show", "0"),
    ("assign", "999", "alpha"),
    ("assign", "1", "Bad Name"),
    ("comment", "1", "   "),
    ("comment", "999", "hello"),
    ("block", "1", ""),
    ("block", "999", "why"),
    ("unblock", "999"),
    ("archive", "999"),
    ("reclaim", "999"),
    ("dispatch", "--max", "0"),
    ("dispatch", "--board", "nosuch"),
    ("dispatch", "--dry-run", "--board", "nosuch"),
    ("tail", "--since", "-1"),
    ("tail", "--task", "0"),
    ("boards", "create"),
    ("boards", "create", "Bad!"),
    ("boards", "create", "default"),
    ("boards", "archive", "default"),
    ("boards", "archive", "nosuch"),
    ("boards", "list", "extra"),
    ("boards", "rename", "x"),
    ("stats", "--board", "no/such"),
    ("daemon", "--board", "Bad Board"),
    ("frobnicate",),
]


def test_bad_input_exits_2_with_one_line_and_changes_nothing(store: Store) -> None:
    task = store.create_task("exists", assignee="alpha")
    done = store.create_task("finished", assignee="alpha")
    run = store.claim(ELSEWHERE, task_id=done.id)
    assert run is not None
    store.complete(run, "result")
    assert task.id == 1
    before = snapshot(store)
    db = store.path  # type: ignore[attr-defined]
    files = sorted(p.name for p in db.parent.iterdir())

    def attempt(args: tuple[str, ...]) -> tuple[tuple[str, ...], Any]:
        return args, run_hermes("kanban", *args, "--json")

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(attempt, BAD_INPUT))
    for args, result in results:
        assert result.returncode == 2, (args, result.returncode, result.stderr)
        lines = result.stderr.splitlines()
        assert len(lines) == 1, (args, result.stderr)
        assert lines[0].startswith("hermes: error: "), (args, lines)
        assert result.stdout == "", (args, result.stdout)
    assert snapshot(store) == before
    assert [b.slug for b in store.list_boards(include_archived=True)] == ["default"]
    assert sorted(p.name for p in db.parent.iterdir()) == files


def test_a_transition_the_status_forbids_exits_1_with_one_line_and_changes_nothing(
    store: Store,
) -> None:
    """Not malformed input but a conflict with the task's state (exit 1, like NotHolder):
    the command was well-formed, the board refused it."""
    ready = store.create_task("ready", assignee="alpha")
    done = store.create_task("done", assignee="alpha")
    run = store.claim(ELSEWHERE, task_id=done.id)
    assert run is not None
    store.complete(run, "result")
    running = store.create_task("running", assignee="alpha")
    assert store.claim(ELSEWHERE, task_id=running.id) is not None
    before = snapshot(store)
    for args in (
        ("block", str(done.id), "too late"),
        ("unblock", str(ready.id)),
        ("archive", str(running.id)),
        ("assign", str(running.id), "beta"),
        ("assign", str(done.id), "beta"),
        ("block", str(running.id), "reclaim it first"),
        ("reclaim", str(ready.id)),
    ):
        result = run_hermes("kanban", *args)
        assert result.returncode == 1, (args, result.stderr)
        assert len(result.stderr.splitlines()) == 1, (args, result.stderr)
        assert result.stderr.startswith("hermes: error: cannot "), (args, result.stderr)
        assert result.stdout == ""
    assert snapshot(store) == before


def test_bad_input_on_a_fresh_home_creates_no_database(
    hermes_home: HermesHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HERMES_KANBAN_DATABASE_URL", raising=False)
    for args in (("create", "x", "--board", "Bad Board"), ("list", "--board", "BAD")):
        result = run_hermes("kanban", *args)
        assert result.returncode == 2, result.stderr
    assert not (hermes_home.root / "kanban").exists()
