"""The dashboard's Kanban page and its API, against a real board (SQLite in the home).

The API is driven like the page drives it: loopback token mode, the CSRF token taken
from the rendered page, JSON bodies. The board is checked through a store of the test's
own, so every assertion is about what was really written (or, for the preview, not).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import httpx
import pytest
import yaml
from starlette.testclient import TestClient

from hermes_container.dashboard.app import create_app
from hermes_container.dashboard.auth.allowlist import Allowlist
from hermes_container.dashboard.auth.public_paths import is_public_path
from hermes_container.dashboard.kanban_board import KanbanBoard, last_event_id
from hermes_container.dashboard.kanban_live import SAFETY_POLL_S, BoardWatch, stream_events
from hermes_container.dashboard.settings import DashboardSettings, OidcConfig
from hermes_container.home import HermesHome
from hermes_container.kanban.dispatcher import Dispatcher, this_host
from hermes_container.kanban.model import Holder
from hermes_container.kanban.store import DATABASE_URL_ENV, Store, open_store
from tests.unit.dashboard_support import clean_env, dashboard_process

TOKEN = "kanban-test-token"
LOCAL = "http://127.0.0.1:9119"
HOLDER = Holder(host="elsewhere", pid=4242)


@pytest.fixture
def store(home: HermesHome) -> Iterator[Store]:
    board = open_store(home)
    yield board
    board.close()


@pytest.fixture
def anonymous(home: HermesHome) -> Iterator[TestClient]:
    """Token mode, no token sent."""
    app = create_app(DashboardSettings(session_token=TOKEN), home=home, manager=None)
    with TestClient(app, base_url=LOCAL, follow_redirects=False) as tc:
        yield tc


@pytest.fixture
def client(anonymous: TestClient) -> TestClient:
    """The page's own scripts: the token on every request, the page's CSRF token on POSTs."""
    anonymous.headers["X-Hermes-Session-Token"] = TOKEN
    page = anonymous.get("/kanban")
    assert page.status_code == 200, page.text
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
    assert match
    anonymous.headers["X-CSRF-Token"] = match.group(1)
    return anonymous


def write_kanban_config(home: HermesHome, **kanban: Any) -> None:
    path = home.root / "config.yaml"
    data = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    data["kanban"] = kanban
    path.write_text(yaml.safe_dump(data))


def create(client: TestClient, **fields: Any) -> dict[str, Any]:
    response = client.post("/api/kanban/tasks", json=fields)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_one_line_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert "\n" not in response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "detail"} and body["detail"], body
    return body


def board_state(store: Store) -> dict[str, Any]:
    """Everything the board holds, for before/after comparisons."""
    tasks = store.list_tasks(board=None)
    return {
        "tasks": [asdict(t) for t in tasks],
        "runs": [asdict(r) for t in tasks for r in store.runs_of(t.id)],
        "events": [asdict(e) for e in store.events_since(0, limit=100_000)],
    }


def audit_actions(home: HermesHome) -> list[dict[str, Any]]:
    lines = home.auth_log.read_text().splitlines() if home.auth_log.exists() else []
    return [r for r in map(json.loads, lines) if r["event"] == "kanban_action"]


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# -- the gate ---------------------------------------------------------------------------

GATED_READS = [
    "/kanban",
    "/api/kanban/board",
    "/api/kanban/tasks",
    "/api/kanban/tasks?status=ready",
    "/api/kanban/tasks/1",
    "/api/kanban/preview",
    "/api/kanban/stream",
]
GATED_WRITES = [
    "/api/kanban/tasks",
    "/api/kanban/tasks/1/assign",
    "/api/kanban/tasks/1/unblock",
    "/api/kanban/tasks/1/archive",
    "/api/kanban/tasks/1/reclaim",
]


def test_nothing_kanban_is_public() -> None:
    for target in GATED_READS + GATED_WRITES:
        assert not is_public_path(target.partition("?")[0]), target


def test_token_mode_needs_the_token_and_csrf(
    anonymous: TestClient, home: HermesHome, store: Store
) -> None:
    # The page itself is left out: loopback mode may serve pages without the header
    # (they hand their scripts the token); every API call needs it.
    for target in GATED_READS[1:]:
        assert anonymous.get(target).status_code == 401, target
    for target in GATED_WRITES:
        assert anonymous.post(target, json={"title": "x"}).status_code == 401, target

    anonymous.headers["X-Hermes-Session-Token"] = TOKEN
    # The token alone does not make a POST: the page's CSRF token must come with it.
    refused = anonymous.post("/api/kanban/tasks", json={"title": "no csrf"})
    assert refused.status_code == 403 and refused.json()["error"] == "csrf_failed"
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', anonymous.get("/kanban").text)
    assert csrf
    cross = anonymous.post(
        "/api/kanban/tasks",
        json={"title": "cross-site"},
        headers={"X-CSRF-Token": csrf.group(1), "Origin": "http://evil.example"},
    )
    assert cross.status_code == 403
    assert store.list_tasks() == []
    ok = anonymous.post(
        "/api/kanban/tasks", json={"title": "fine"}, headers={"X-CSRF-Token": csrf.group(1)}
    )
    assert ok.status_code == 201
    assert [t.title for t in store.list_tasks()] == ["fine"]


def test_oauth_mode_without_a_session_gets_nothing(home: HermesHome, store: Store) -> None:
    settings = DashboardSettings(
        host="0.0.0.0",
        mode="oauth",
        oidc=OidcConfig("http://127.0.0.1:9", "client", "secret"),
        allowlist=Allowlist.build(emails=["alice@example.com"]),
        public_url="http://127.0.0.1:9119",
    )
    store.create_task("secret plan", body="do not show")
    app = create_app(settings, home=home, manager=None)
    with TestClient(app, base_url=LOCAL, follow_redirects=False) as anonymous:
        page = anonymous.get("/kanban")
        assert page.status_code == 303 and page.headers["location"] == "/login?next=/kanban"
        for target in GATED_READS[1:]:
            response = anonymous.get(target)
            assert response.status_code == 401, target
            assert "secret plan" not in response.text
        for target in GATED_WRITES:
            assert anonymous.post(target, json={"title": "x"}).status_code == 401, target
    assert [t.title for t in store.list_tasks()] == ["secret plan"]


# -- the page ---------------------------------------------------------------------------


def test_page_has_the_form_with_profiles_and_a_column_per_status(client: TestClient) -> None:
    html = client.get("/kanban").text
    assert re.search(r'<select id="kanban-assignee"[^>]*>.*?<option value="alpha">', html, re.S)
    assert '<option value="default">' in html
    for status in ("triage", "todo", "ready", "running", "blocked", "done", "archived"):
        assert f'data-status="{status}"' in html, status
    assert '<details class="kcol kcol-archived" data-status="archived">' in html  # collapsed
    assert '<script src="/static/kanban.js" defer></script>' in html
    assert '<a href="/kanban">Kanban</a>' in client.get("/").text
    assert client.get("/kanban?board=Not%20A%20Board").status_code == 404
    assert client.get("/static/kanban.js").status_code == 200
    assert client.get("/static/kanban.css").status_code == 200


# -- create and list --------------------------------------------------------------------


def test_create_then_list_by_status(client: TestClient, store: Store, home: HermesHome) -> None:
    first = create(client, title="write the report", body="three pages", assignee="alpha",
                   priority=5)  # fmt: skip
    assert first["status"] == "ready" and first["assignee"] == "alpha"
    child = create(client, title="review it", parents=[first["id"]])
    assert child["status"] == "todo" and child["parents"] == [first["id"]]
    loose = create(client, title="someday", assignee=None, body="")
    assert loose["assignee"] is None

    stored = store.get_task(first["id"])
    assert (stored.title, stored.body, stored.priority) == ("write the report", "three pages", 5)
    kinds = [(e.task_id, e.kind) for e in store.events_since(0)]
    assert (first["id"], "assigned") in kinds and (child["id"], "created") in kinds

    ready = client.get("/api/kanban/tasks", params={"status": "ready"}).json()["tasks"]
    assert [t["id"] for t in ready] == [first["id"], loose["id"]]  # priority first
    todo = client.get("/api/kanban/tasks", params={"status": "todo"}).json()["tasks"]
    assert [t["id"] for t in todo] == [child["id"]]
    assert client.get("/api/kanban/tasks", params={"status": "done"}).json()["tasks"] == []
    everything = client.get("/api/kanban/tasks").json()["tasks"]
    assert {t["id"] for t in everything} == {first["id"], child["id"], loose["id"]}
    assert_one_line_error(client.get("/api/kanban/tasks", params={"status": "doing"}), 422)
    for bad in ("0", "1001", "99999999999999999999999", "\u00b2", "-1", "1.5"):
        assert_one_line_error(client.get("/api/kanban/tasks", params={"limit": bad}), 422)
    for bad in ("99999999999999999999999", "\u00b2", "-1", "x"):
        assert_one_line_error(client.get("/api/kanban/stream", params={"since": bad}), 422)
    assert len(client.get("/api/kanban/tasks", params={"limit": "1"}).json()["tasks"]) == 1

    snapshot = client.get("/api/kanban/board").json()
    assert [c["id"] for c in snapshot["columns"]["ready"]["tasks"]] == [first["id"], loose["id"]]
    card = snapshot["columns"]["ready"]["tasks"][0]
    assert card["assignee"] == "alpha" and card["priority"] == 5 and card["attempts"] == 0
    assert card["last_error"] is None and card["age_s"] >= 0
    assert "body" not in card  # cards stay small; the card view has the body
    assert [r["event"] for r in audit_actions(home)] == ["kanban_action"] * 3
    assert audit_actions(home)[0]["user"] == "local"
    assert audit_actions(home)[0]["task"] == first["id"]


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"not json", 400),
        (b"[1, 2]", 400),
        (b'"a string"', 400),
        (b"{}", 422),
        (b'{"title": ""}', 422),
        (b'{"title": "two\\nlines"}', 422),
        (b'{"title": 7}', 422),
        (b'{"title": "x", "body": 3}', 422),
        (b'{"title": "x", "priority": "high"}', 422),
        (b'{"title": "x", "priority": true}', 422),
        (b'{"title": "x", "priority": 1.5}', 422),
        (b'{"title": "x", "parents": "1"}', 422),
        (b'{"title": "x", "parents": [0]}', 422),
        (b'{"title": "x", "parents": [999]}', 422),
        (b'{"title": "x", "parents": [1180591620717411303424]}', 422),
        (b'{"title": "x", "priority": 1180591620717411303424}', 422),
        (b"[" * 100_000 + b"]" * 100_000, 400),
        (b'{"title": "x", "assignee": "ghost"}', 422),
        (b'{"title": "x", "assignee": "Not A Name"}', 422),
        (b'{"title": "x", "assignee": 5}', 422),
        (b'{"title": "x", "colour": "red"}', 422),
        (b'{"title": "x", "board": "Bad Board"}', 422),
        (b'{"title": "x", "board": "nope"}', 404),
    ],
)
def test_bad_create_is_refused_and_writes_nothing(
    client: TestClient, store: Store, payload: bytes, status: int
) -> None:
    response = client.post(
        "/api/kanban/tasks", content=payload, headers={"content-type": "application/json"}
    )
    assert_one_line_error(response, status)
    assert store.list_tasks(board=None) == []
    assert store.events_since(0) == []


def test_an_oversized_body_is_refused(client: TestClient, store: Store) -> None:
    big = json.dumps({"title": "big", "body": "x" * 300_000})
    response = client.post(
        "/api/kanban/tasks", content=big, headers={"content-type": "application/json"}
    )
    assert_one_line_error(response, 400)
    assert store.list_tasks() == []


# -- the card view ----------------------------------------------------------------------


def test_show_has_runs_events_and_result_but_never_the_run_token(
    client: TestClient, store: Store
) -> None:
    task = create(client, title="answer me", body="what is six times seven?", assignee="alpha")
    run = store.claim(HOLDER, task_id=task["id"])
    assert run is not None
    store.complete(run, "forty-two", latency_ms=12, tokens=10)

    response = client.get(f"/api/kanban/tasks/{task['id']}")
    assert response.status_code == 200
    assert run.token not in response.text
    shown = response.json()
    assert shown["status"] == "done" and shown["result"] == "forty-two"
    assert shown["body"] == "what is six times seven?"
    assert len(shown["runs"]) == 1 and "token" not in shown["runs"][0]
    assert shown["runs"][0]["outcome"] == "completed"
    assert (shown["runs"][0]["host"], shown["runs"][0]["pid"]) == ("elsewhere", 4242)
    assert (shown["runs"][0]["latency_ms"], shown["runs"][0]["tokens"]) == (12, 10)
    assert [e["kind"] for e in shown["events"]] == ["created", "assigned", "claimed", "completed"]

    card = client.get("/api/kanban/tasks", params={"status": "done"}).json()["tasks"][0]
    assert card["has_result"] is True and "result" not in card
    assert_one_line_error(client.get("/api/kanban/tasks/999"), 404)
    assert_one_line_error(client.get("/api/kanban/tasks/abc"), 404)
    assert_one_line_error(client.get("/api/kanban/tasks/0"), 404)


def test_card_shows_the_last_error(client: TestClient, store: Store) -> None:
    task = create(client, title="flaky", assignee="alpha")
    run = store.claim(HOLDER, task_id=task["id"])
    assert run is not None
    store.fail(run, "upstream said 500: " + "x" * 1000)
    card = client.get("/api/kanban/tasks", params={"status": "todo"}).json()["tasks"][0]
    assert card["attempts"] == 1 and card["last_error"].startswith("upstream said 500: ")
    assert len(card["last_error"]) <= 300


# -- actions ----------------------------------------------------------------------------


def test_assign(client: TestClient, store: Store, home: HermesHome) -> None:
    task = create(client, title="who does it")
    url = f"/api/kanban/tasks/{task['id']}/assign"
    assigned = client.post(url, json={"assignee": "alpha"})
    assert assigned.status_code == 200 and assigned.json()["assignee"] == "alpha"
    event = store.events_since(0, task_id=task["id"])[-1]
    assert event.kind == "assigned" and event.data["source"] == "dashboard"
    assert client.post(url, json={"assignee": None}).json()["assignee"] is None
    assert store.get_task(task["id"]).assignee is None

    assert_one_line_error(client.post(url, json={"assignee": "ghost"}), 422)
    assert_one_line_error(client.post(url, json={"who": "alpha"}), 422)
    assert_one_line_error(client.post(url, content=b"[]"), 400)
    assert_one_line_error(
        client.post("/api/kanban/tasks/999/assign", json={"assignee": "alpha"}), 404
    )
    assert store.get_task(task["id"]).assignee is None

    store.assign(task["id"], "alpha")
    run = store.claim(HOLDER, task_id=task["id"])
    assert run is not None
    store.complete(run, "done already")
    assert_one_line_error(client.post(url, json={"assignee": "alpha"}), 409)
    results = [(r["action"], r["result"]) for r in audit_actions(home) if r["action"] == "assign"]
    assert results[:2] == [("assign", "ok"), ("assign", "ok")]
    assert ("assign", "conflict") in results and ("assign", "invalid") in results


def test_unblock(client: TestClient, store: Store) -> None:
    task = create(client, title="stuck", assignee="alpha")
    store.block(task["id"], "needs a person")
    card = client.get("/api/kanban/tasks", params={"status": "blocked"}).json()["tasks"][0]
    assert card["last_error"] == "needs a person"
    response = client.post(f"/api/kanban/tasks/{task['id']}/unblock")
    assert response.status_code == 200 and response.json()["status"] == "todo"
    assert store.get_task(task["id"]).status == "todo"
    assert_one_line_error(client.post(f"/api/kanban/tasks/{task['id']}/unblock"), 409)
    assert_one_line_error(client.post("/api/kanban/tasks/999/unblock"), 404)


def test_archive(client: TestClient, store: Store) -> None:
    task = create(client, title="not needed")
    response = client.post(f"/api/kanban/tasks/{task['id']}/archive")
    assert response.status_code == 200 and response.json()["status"] == "archived"
    assert store.get_task(task["id"]).status == "archived"
    snapshot = client.get("/api/kanban/board").json()
    assert [c["id"] for c in snapshot["columns"]["archived"]["tasks"]] == [task["id"]]
    assert_one_line_error(client.post(f"/api/kanban/tasks/{task['id']}/archive"), 409)

    busy = create(client, title="in flight", assignee="alpha")
    assert store.claim(HOLDER, task_id=busy["id"]) is not None
    assert_one_line_error(client.post(f"/api/kanban/tasks/{busy['id']}/archive"), 409)
    assert store.get_task(busy["id"]).status == "running"
    assert_one_line_error(client.post(f"/api/kanban/tasks/{busy['id']}/delete"), 404)


def test_reclaim(client: TestClient, store: Store) -> None:
    task = create(client, title="hand it back", assignee="alpha")
    assert_one_line_error(client.post(f"/api/kanban/tasks/{task['id']}/reclaim"), 409)
    run = store.claim(HOLDER, task_id=task["id"])
    assert run is not None
    response = client.post(f"/api/kanban/tasks/{task['id']}/reclaim")
    assert response.status_code == 200 and response.json()["status"] == "ready"
    after = store.get_task(task["id"])
    assert after.status == "ready" and after.consecutive_failures == 0
    assert store.runs_of(task["id"])[0].outcome == "reclaimed"
    assert store.events_since(0, task_id=task["id"])[-1].kind == "reclaimed"
    # The holder can no longer record an outcome for the run it lost.
    with pytest.raises(Exception, match="no longer holds"):
        store.complete(run, "too late")
    assert_one_line_error(client.post("/api/kanban/tasks/999/reclaim"), 404)


# -- caps and the preview ----------------------------------------------------------------


def test_profiles_running_count_against_the_cap(
    client: TestClient, store: Store, home: HermesHome
) -> None:
    write_kanban_config(home, max_in_progress_per_profile=1, max_in_progress=4)
    task = create(client, title="busy", assignee="alpha")
    assert store.claim(HOLDER, task_id=task["id"]) is not None
    snapshot = client.get("/api/kanban/board").json()
    profiles = {p["name"]: p for p in snapshot["profiles"]}
    assert profiles["alpha"] == {"name": "alpha", "running": 1, "cap": 1}
    assert profiles["default"] == {"name": "default", "running": 0, "cap": 1}
    assert snapshot["running_total"] == 1 and snapshot["max_in_progress"] == 4

    write_kanban_config(home, max_in_progress_per_profile=0)  # "no cap", with a warning
    snapshot = client.get("/api/kanban/board").json()
    assert {p["name"]: p["cap"] for p in snapshot["profiles"]} == {"default": None, "alpha": None}
    assert any("max_in_progress_per_profile" in w for w in snapshot["warnings"])


def test_preview_reports_the_next_tick_and_writes_nothing(
    client: TestClient, store: Store, home: HermesHome
) -> None:
    write_kanban_config(home, default_assignee="alpha")
    loose = create(client, title="nobody's yet")
    orphan = create(client, title="its dispatcher died", assignee="alpha")
    assert store.claim(Holder(this_host(), dead_pid()), task_id=orphan["id"]) is not None
    parent = create(client, title="parent", assignee="alpha")
    run = store.claim(HOLDER, task_id=parent["id"])
    assert run is not None
    store.complete(run, "ok")
    child = create(client, title="child", assignee="alpha", parents=[parent["id"]])
    assert child["status"] == "ready"  # its parent is done already
    before = board_state(store)

    response = client.get("/api/kanban/preview")
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["dry_run"] is True
    assert report["auto_assigned_default"] == [loose["id"]]
    assert report["default_assignee"] == "alpha"
    assert report["reclaimed"] == [orphan["id"]]
    # No gateway runs in this test, so nothing would be spawned.
    assert set(report["skipped_gateway_down"]) == {loose["id"], child["id"]}
    assert report["spawned"] == []
    assert board_state(store) == before

    # The same tick for real does write: the preview was not vacuous.
    Dispatcher(home, store).tick()
    assert store.get_task(loose["id"]).assignee == "alpha"
    assert store.get_task(orphan["id"]).status == "ready"
    assert board_state(store) != before
    assert_one_line_error(client.get("/api/kanban/preview", params={"board": "nope"}), 404)


# -- live updates ------------------------------------------------------------------------


def test_last_event_id_finds_the_newest_id(store: Store) -> None:
    assert last_event_id(store) == 0
    task = store.create_task("one")
    for number in range(40):
        store.comment(task.id, f"comment {number}")
    newest = store.events_since(0, limit=1000)[-1].id
    assert newest == 41
    assert last_event_id(store) == newest


def _sse_messages(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    event, data = "message", []
    for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and data:
            yield event, json.loads("\n".join(data))
            event, data = "message", []


def test_the_stream_delivers_new_events_at_once(home: HermesHome, store: Store) -> None:
    """The real dashboard process: a write wakes the open stream within moments, and the
    listener it held is gone once the page disconnects."""
    store.create_task("before the page opened")
    env = clean_env(HERMES_HOME=str(home.root), HERMES_DASHBOARD_SESSION_TOKEN=TOKEN)
    wake_dir = home.root / "kanban" / "wake"
    with dashboard_process(env) as (port, _proc):
        base = f"http://127.0.0.1:{port}"
        headers = {"X-Hermes-Session-Token": TOKEN}
        with httpx.Client(base_url=base, headers=headers, timeout=10, trust_env=False) as http:
            page = http.get("/kanban")
            csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
            assert csrf
            with http.stream("GET", "/api/kanban/stream") as stream:
                assert stream.status_code == 200
                assert stream.headers["content-type"].startswith("text/event-stream")
                messages = _sse_messages(stream.iter_lines())
                assert next(messages) == ("hello", {"board": "default", "last_event_id": 1})
                started = time.monotonic()
                created = http.post(
                    "/api/kanban/tasks",
                    json={"title": "live", "assignee": "alpha"},
                    headers={"X-CSRF-Token": csrf.group(1)},
                )
                assert created.status_code == 201
                kind, events = next(messages)
                took = time.monotonic() - started
                assert kind == "events"
                assert [(e["task_id"], e["kind"]) for e in events][:1] == [(2, "created")]
                assert took < 2.0, took  # a wake-up, not the 5 s safety poll
                assert len(list(wake_dir.iterdir())) == 1  # one listener for the process
            # since= replays from where a reconnecting page left off, at once.
            started = time.monotonic()
            with http.stream("GET", "/api/kanban/stream", params={"since": "0"}) as again:
                replay = _sse_messages(again.iter_lines())
                assert next(replay) == ("hello", {"board": "default", "last_event_id": 0})
                kind, events = next(replay)
                assert [e["id"] for e in events] == [1, 2, 3]
                assert time.monotonic() - started < 2.0
            assert_one_line_error(http.get("/api/kanban/stream", params={"since": "x"}), 422)

            def listener_gone() -> bool:
                return not any(wake_dir.iterdir())

            deadline = time.monotonic() + 10
            while not listener_gone() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert listener_gone()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, home: HermesHome
) -> str:
    """The dashboard's board on either backend (PostgreSQL: a real server, fresh schema)."""
    if request.param == "postgresql":
        import psycopg

        server = request.getfixturevalue("postgres_server")
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
            conn.execute("CREATE SCHEMA public")
        monkeypatch.setenv(DATABASE_URL_ENV, server.url())
    else:
        monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
    return str(request.param)


def test_the_watch_wakes_the_stream_on_either_backend(home: HermesHome, backend: str) -> None:
    """A write by another store (another process, for the dashboard) reaches an open
    stream through the backend's wake-up, well before the safety poll would."""
    kanban = KanbanBoard(home)
    watch = BoardWatch(kanban)
    writer = open_store(home)

    async def connected() -> bool:
        return False

    async def scenario() -> None:
        writer.create_task("already there")
        stream = stream_events(watch, "default", 1, connected)
        assert b"event: hello" in await anext(stream)
        waiting = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.5)
        assert not waiting.done() and watch.listening
        started = time.monotonic()
        await asyncio.to_thread(writer.create_task, "wake up")
        message = await asyncio.wait_for(waiting, SAFETY_POLL_S)
        assert time.monotonic() - started < SAFETY_POLL_S / 2
        assert message.startswith(b"event: events\n")
        events = json.loads(message.decode().split("data: ", 1)[1])
        assert [(e["id"], e["kind"]) for e in events] == [(2, "created")]
        await stream.aclose()
        assert not watch.listening  # the last page left: the listener is closed

    try:
        asyncio.run(scenario())
    finally:
        watch.close()
        kanban.close()
        writer.close()


def test_board_of_another_slug(client: TestClient, store: Store) -> None:
    store.create_board("ops")
    task = create(client, title="on ops", board="ops")
    assert task["board"] == "ops"
    assert client.get("/api/kanban/tasks").json()["tasks"] == []
    ops = client.get("/api/kanban/board", params={"board": "ops"}).json()
    assert [c["id"] for c in ops["columns"]["ready"]["tasks"]] == [task["id"]]
    assert ops["boards"] == ["default", "ops"]
    assert client.get("/kanban", params={"board": "ops"}).status_code == 200
    assert_one_line_error(client.get("/api/kanban/board", params={"board": "nope"}), 404)
