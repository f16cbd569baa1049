"""The sessions browser's API and page, against real gateways and the fake provider.

Exchanges are made the ways clients make them: `hermes chat --session` (only the new
message each time), an SDK-style client that resends the whole conversation, streamed
and plain answers, a failing provider. The dashboard runs in-process in loopback token
mode, driven like its page drives it (token header, the page's CSRF token); every
answer it gives is checked for the profiles' keys when the test ends.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from hermes_container.dashboard import session_reader
from hermes_container.dashboard.app import create_app
from hermes_container.dashboard.auth.public_paths import is_public_path
from hermes_container.dashboard.settings import DashboardSettings
from hermes_container.envfile import read_env
from hermes_container.events.ledger import Ledger
from hermes_container.gateway import http_api, sessions
from hermes_container.home import SESSIONS_DB, HermesHome
from hermes_container.profiles import list_profiles
from tests.conftest import run_hermes, wait_for
from tests.fake_upstream import FakeUpstream
from tests.unit.conftest import GatewayProfile
from tests.unit.dashboard_client_support import LOCAL, one_line_error, page_client

TOKEN = "sessions-browser-test-token"
# test_playground.py takes these from here with the rest it shares with this module.

MakeProfile = Callable[[str], GatewayProfile]


# -- shared with test_playground.py ------------------------------------------------------


def profile_secrets(home: HermesHome) -> list[str]:
    """Every value in every profile's .env (API_SERVER_KEY and any provider key)."""
    found = []
    for name in list_profiles(home):
        env = home.profile_dir(name) / ".env"
        if env.exists():
            found += [v for v in read_env(env).values() if len(v) >= 8]
    return found


def assert_no_secret(home: HermesHome, answers: list[httpx.Response]) -> None:
    secrets = profile_secrets(home)
    assert secrets, "the profiles have keys to look for"
    for response in answers:
        try:
            text = response.text
        except httpx.ResponseNotRead:
            text = ""
        seen = text + json.dumps(dict(response.headers))
        for secret in secrets:
            assert secret not in seen, f"a key in the answer to {response.request.url}"
    log = home.auth_log.read_text() if home.auth_log.exists() else ""
    assert all(secret not in log for secret in secrets)


@pytest.fixture
def dashboard(hermes_home: HermesHome) -> Iterator[TestClient]:
    """The page's own scripts: token on every request, the page's CSRF token on POSTs."""
    answers: list[httpx.Response] = []
    app = create_app(DashboardSettings(session_token=TOKEN), home=hermes_home, manager=None)
    with page_client(app, TOKEN, "/sessions", answers.append) as client:
        yield client
    assert len(answers) > 1  # the page, and what the test asked
    assert_no_secret(hermes_home, answers)


def audit_records(home: HermesHome, event: str) -> list[dict[str, Any]]:
    lines = home.auth_log.read_text().splitlines() if home.auth_log.exists() else []
    return [r for r in map(json.loads, lines) if r["event"] == event]


def ledger_actions(home: HermesHome) -> list[tuple[str | None, dict[str, Any]]]:
    ledger = Ledger(home.root)
    try:
        return [(e.profile, e.data) for e in ledger.iterate(0) if e.kind == "dashboard.action"]
    finally:
        ledger.close()


def rows_of(profile: GatewayProfile, session: str) -> int:
    with sqlite3.connect(profile.dir / SESSIONS_DB) as conn:
        found: int = conn.execute(
            "SELECT COUNT(*) FROM exchanges WHERE session_id = ?", (session,)
        ).fetchone()[0]
    return found


def wait_rows(profile: GatewayProfile, count: int) -> None:
    """Until the gateway's writer thread has committed `count` exchanges in all."""

    def committed() -> bool:
        db = profile.dir / SESSIONS_DB
        if not db.exists():
            return False
        with sqlite3.connect(db) as conn:
            return bool(conn.execute("SELECT COUNT(*) FROM exchanges").fetchone()[0] >= count)

    wait_for(committed, what=f"{count} recorded exchanges", tolerate=(sqlite3.Error,))


# -- making exchanges ---------------------------------------------------------------------


def ask(
    profile: GatewayProfile,
    session: str,
    messages: list[dict[str, str]],
    *,
    stream: bool = False,
) -> str:
    """One chat completion through the gateway; the answer's text (or the error)."""
    headers = {**profile.auth, "x-hermes-session": session}
    body = {"messages": messages, "stream": stream}
    with profile.client(headers=headers) as client:
        if not stream:
            reply = client.post("/v1/chat/completions", json=body)
            if reply.status_code != 200:
                return reply.text
            return str(reply.json()["choices"][0]["message"]["content"])
        with client.stream("POST", "/v1/chat/completions", json=body) as reply:
            text = reply.read().decode()
        assert "[DONE]" in text
        return text


@pytest.fixture
def traffic(alpha: GatewayProfile, fake_upstream: FakeUpstream) -> GatewayProfile:
    """Three sessions of `alpha`, oldest first:
    - cli-1: two `hermes chat --session cli-1` calls (each sends only its message);
    - sdk-1: an SDK-style client resending the conversation; the second answer streamed;
    - fail-1: one exchange the provider refused (HTTP 500)."""
    for question in ("What is the capital of France?", "And of Peru?"):
        done = run_hermes("-p", "alpha", "chat", "--session", "cli-1", question)
        assert done.returncode == 0, done.stderr
    first = [{"role": "user", "content": "Tell me about zebras"}]
    answer = ask(alpha, "sdk-1", first)
    assert answer == "echo: Tell me about zebras"
    fake_upstream.set(chunks=["Stripes ", "are ", 'said "unique" ', "100% of the time"])
    follow = [*first, {"role": "assistant", "content": answer}, {"role": "user", "content": "Why?"}]
    ask(alpha, "sdk-1", follow, stream=True)
    fake_upstream.set(status=500, error="provider on fire")
    ask(alpha, "fail-1", [{"role": "user", "content": "doomed question"}])
    fake_upstream.set()
    wait_rows(alpha, 5)
    return alpha


# -- the gate -----------------------------------------------------------------------------

GATED_READS = [
    "/sessions",
    "/api/sessions/alpha",
    "/api/sessions/alpha/search?q=x",
    "/api/sessions/alpha/session/cli-1",
    "/api/sessions/alpha/session/cli-1/export",
]
GATED_WRITES = ["/api/sessions/alpha/session/cli-1/delete"]


def test_nothing_of_the_sessions_browser_is_public() -> None:
    for target in [*GATED_READS, *GATED_WRITES]:
        assert not is_public_path(target.partition("?")[0]), target


def test_without_the_token_nothing_is_read_or_deleted(
    traffic: GatewayProfile, hermes_home: HermesHome
) -> None:
    app = create_app(DashboardSettings(session_token=TOKEN), home=hermes_home, manager=None)
    with TestClient(app, base_url=LOCAL, follow_redirects=False) as anonymous:
        for target in GATED_READS[1:]:
            response = anonymous.get(target)
            assert response.status_code == 401, target
            assert "France" not in response.text
        assert anonymous.post(GATED_WRITES[0]).status_code == 401
    assert rows_of(traffic, "cli-1") == 2


def test_the_gateway_rules_are_the_readers_rules() -> None:
    # One rule for session ids and one lock wait, even though the dashboard does not
    # import the gateway: if either side changes, this fails.
    assert session_reader.SESSION_ID.pattern == http_api._SESSION_ID.pattern
    conn = sessions.connect(Path(":memory:"))
    try:
        busy_ms = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    finally:
        conn.close()
    assert busy_ms == session_reader.WRITE_BUSY_TIMEOUT_S * 1000


# -- list ---------------------------------------------------------------------------------


def test_the_list_shows_each_session_most_recent_first(
    dashboard: TestClient, traffic: GatewayProfile
) -> None:
    listing = dashboard.get("/api/sessions/alpha")
    assert listing.status_code == 200, listing.text
    body = listing.json()
    assert body["profile"] == "alpha" and body["total"] == 3 and body["next_offset"] is None
    by_id = {s["session_id"]: s for s in body["sessions"]}
    assert [s["session_id"] for s in body["sessions"]] == ["fail-1", "sdk-1", "cli-1"]
    assert by_id["cli-1"]["exchange_count"] == 2
    assert by_id["cli-1"]["preview"] == "What is the capital of France?"
    assert by_id["sdk-1"]["preview"] == "Tell me about zebras"
    for item in body["sessions"]:
        assert item["model"] == "test-model"
        assert item["first_at"] <= item["last_at"] and item["last_at"].endswith("Z")


def test_the_list_is_paginated(dashboard: TestClient, traffic: GatewayProfile) -> None:
    first = dashboard.get("/api/sessions/alpha?limit=2").json()
    assert [s["session_id"] for s in first["sessions"]] == ["fail-1", "sdk-1"]
    assert first["next_offset"] == 2
    rest = dashboard.get("/api/sessions/alpha?limit=2&offset=2").json()
    assert [s["session_id"] for s in rest["sessions"]] == ["cli-1"]
    assert rest["next_offset"] is None
    for bad in ("limit=0", "limit=201", "limit=x", "offset=-1", "offset=1e3"):
        detail = one_line_error(dashboard.get(f"/api/sessions/alpha?{bad}"), 400, "bad_parameter")
        assert "must be a whole number" in detail


def test_a_profile_whose_gateway_never_ran_has_no_sessions(
    dashboard: TestClient, make_profile: MakeProfile
) -> None:
    make_profile("beta")  # configured, never started: no sessions.db at all
    assert dashboard.get("/api/sessions/beta").json()["sessions"] == []
    assert dashboard.get("/api/sessions/beta/search?q=x").json()["sessions"] == []
    one_line_error(dashboard.get("/api/sessions/beta/session/s1"), 404, "not_found")
    one_line_error(dashboard.post("/api/sessions/beta/session/s1/delete"), 404, "not_found")
    assert not (make_profile("gamma").dir / SESSIONS_DB).exists()


# -- transcript ---------------------------------------------------------------------------


def test_a_transcript_of_single_message_requests(
    dashboard: TestClient, traffic: GatewayProfile
) -> None:
    body = dashboard.get("/api/sessions/alpha/session/cli-1").json()
    assert [(m["role"], m["content"]) for m in body["messages"]] == [
        ("user", "What is the capital of France?"),
        ("assistant", "echo: What is the capital of France?"),
        ("user", "And of Peru?"),
        ("assistant", "echo: And of Peru?"),
    ]
    assert body["exchange_count"] == 2 and body["truncated"] is False
    assert [e["status"] for e in body["exchanges"]] == [200, 200]


def test_a_transcript_of_a_client_that_resends_the_conversation(
    dashboard: TestClient, traffic: GatewayProfile
) -> None:
    body = dashboard.get("/api/sessions/alpha/session/sdk-1").json()
    # The second request repeated the first exchange: it shows once. The streamed answer
    # is the gateway's reassembly of the provider's chunks.
    assert [(m["role"], m["content"]) for m in body["messages"]] == [
        ("user", "Tell me about zebras"),
        ("assistant", "echo: Tell me about zebras"),
        ("user", "Why?"),
        ("assistant", 'Stripes are said "unique" 100% of the time'),
    ]
    assert [e["stream"] for e in body["exchanges"]] == [False, True]
    assert len(body["exchanges"][1]["request_messages"]) == 3  # as the client sent it


def test_a_failed_exchange_shows_its_error(dashboard: TestClient, traffic: GatewayProfile) -> None:
    body = dashboard.get("/api/sessions/alpha/session/fail-1").json()
    (question, failure) = body["messages"]
    assert question["content"] == "doomed question"
    assert failure["role"] == "error" and failure["status"] == 502
    assert "provider on fire" in failure["content"]


def test_the_transcript_shows_the_newest_exchanges_of_a_long_session(
    dashboard: TestClient, alpha: GatewayProfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_reader, "TRANSCRIPT_MAX_EXCHANGES", 2)
    for n in range(3):
        ask(alpha, "long-1", [{"role": "user", "content": f"question {n}"}])
    wait_rows(alpha, 3)
    body = dashboard.get("/api/sessions/alpha/session/long-1").json()
    assert body["truncated"] is True and body["exchange_count"] == 3
    assert [m["content"] for m in body["messages"] if m["role"] == "user"] == [
        "question 1",
        "question 2",
    ]
    export = dashboard.get("/api/sessions/alpha/session/long-1/export").json()
    assert len(export["exchanges"]) == 3  # the export holds them all


def test_unknown_profiles_and_sessions_are_404(
    dashboard: TestClient, traffic: GatewayProfile
) -> None:
    for target in (
        "/api/sessions/nope",
        "/api/sessions/nope/search?q=x",
        "/api/sessions/nope/session/cli-1",
        "/api/sessions/nope/session/cli-1/export",
        "/api/sessions/NOPE",
        "/api/sessions/alpha/session/missing",
        "/api/sessions/alpha/session/missing/export",
        "/api/sessions/alpha/session/.hidden",
        "/api/sessions/alpha/session/" + "x" * 129,
    ):
        one_line_error(dashboard.get(target), 404, "not_found")
    page = dashboard.get("/sessions?profile=nope")
    assert page.status_code == 404 and "No such profile" in page.text


# -- search -------------------------------------------------------------------------------


def hits(dashboard: TestClient, query: str, **params: Any) -> list[dict[str, Any]]:
    response = dashboard.get("/api/sessions/alpha/search", params={"q": query, **params})
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["sessions"]
    return found


def test_search_finds_words_in_questions_and_answers(
    dashboard: TestClient, traffic: GatewayProfile
) -> None:
    (peru,) = hits(dashboard, "peru")  # a question; ASCII letters in any case
    assert peru["session_id"] == "cli-1" and "And of Peru?" in peru["snippet"]
    (stripes,) = hits(dashboard, "STRIPES")  # only in a streamed answer
    assert stripes["session_id"] == "sdk-1" and "Stripes are" in stripes["snippet"]
    assert {s["session_id"] for s in hits(dashboard, "echo:")} == {"cli-1", "sdk-1"}
    assert hits(dashboard, "giraffe") == []


def test_search_matches_text_not_the_json_around_it(
    dashboard: TestClient, traffic: GatewayProfile
) -> None:
    # Every stored request has "role" and "content" keys; no message says either word.
    assert hits(dashboard, "role") == []
    assert hits(dashboard, "content") == []
    # LIKE's wildcards are literal, and quotes (escaped in the stored JSON) match.
    assert [s["session_id"] for s in hits(dashboard, "100%")] == ["sdk-1"]
    assert hits(dashboard, "_") == []
    assert [s["session_id"] for s in hits(dashboard, 'said "unique"')] == ["sdk-1"]


def test_search_is_paginated_and_checked(dashboard: TestClient, traffic: GatewayProfile) -> None:
    first = dashboard.get("/api/sessions/alpha/search", params={"q": "echo", "limit": 1}).json()
    assert [s["session_id"] for s in first["sessions"]] == ["sdk-1"]
    assert first["next_offset"] == 1
    second = dashboard.get(
        "/api/sessions/alpha/search", params={"q": "echo", "limit": 1, "offset": 1}
    ).json()
    assert [s["session_id"] for s in second["sessions"]] == ["cli-1"]
    assert second["next_offset"] is None
    one_line_error(dashboard.get("/api/sessions/alpha/search"), 400, "bad_parameter")
    one_line_error(dashboard.get("/api/sessions/alpha/search?q=%20"), 400, "bad_parameter")
    too_long = dashboard.get("/api/sessions/alpha/search", params={"q": "x" * 201})
    one_line_error(too_long, 400, "bad_parameter")


# -- export -------------------------------------------------------------------------------


def test_export_is_a_json_download_of_everything_stored(
    dashboard: TestClient, traffic: GatewayProfile
) -> None:
    response = dashboard.get("/api/sessions/alpha/session/sdk-1/export")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["content-disposition"] == (
        'attachment; filename="hermes-alpha-sdk-1.json"'
    )
    doc = response.json()
    assert doc["format"] == "hermes-session/1"
    assert (doc["profile"], doc["session_id"], doc["exchange_count"]) == ("alpha", "sdk-1", 2)
    plain, streamed = doc["exchanges"]
    assert plain["request_messages"] == [{"role": "user", "content": "Tell me about zebras"}]
    assert plain["response_text"] == "echo: Tell me about zebras"
    assert (plain["prompt_tokens"], plain["completion_tokens"]) == (7, 3)
    assert streamed["stream"] is True and streamed["status"] == 200
    assert [m["role"] for m in doc["messages"]] == ["user", "assistant", "user", "assistant"]
    with sqlite3.connect(traffic.dir / SESSIONS_DB) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM exchanges WHERE session_id='sdk-1'")]
    assert [e["id"] for e in doc["exchanges"]] == ids


# -- delete -------------------------------------------------------------------------------


def test_delete_needs_the_csrf_token(
    dashboard: TestClient, traffic: GatewayProfile, hermes_home: HermesHome
) -> None:
    refused = dashboard.post(
        "/api/sessions/alpha/session/cli-1/delete", headers={"X-CSRF-Token": "wrong"}
    )
    one_line_error(refused, 403, "csrf_failed")
    del dashboard.headers["X-CSRF-Token"]
    one_line_error(dashboard.post("/api/sessions/alpha/session/cli-1/delete"), 403, "csrf_failed")
    assert rows_of(traffic, "cli-1") == 2
    assert audit_records(hermes_home, "sessions_action") == []


def test_delete_removes_one_session_and_is_recorded(
    dashboard: TestClient, traffic: GatewayProfile, hermes_home: HermesHome
) -> None:
    done = dashboard.post("/api/sessions/alpha/session/cli-1/delete")
    assert done.status_code == 200, done.text
    assert done.json() == {"ok": True, "profile": "alpha", "session_id": "cli-1", "deleted": 2}
    assert rows_of(traffic, "cli-1") == 0
    assert rows_of(traffic, "sdk-1") == 2  # the others stay
    listing = dashboard.get("/api/sessions/alpha").json()
    assert [s["session_id"] for s in listing["sessions"]] == ["fail-1", "sdk-1"]
    assert hits(dashboard, "Peru") == []
    one_line_error(dashboard.get("/api/sessions/alpha/session/cli-1"), 404, "not_found")
    again = dashboard.post("/api/sessions/alpha/session/cli-1/delete")
    one_line_error(again, 404, "not_found")
    one_line_error(dashboard.post("/api/sessions/nope/session/x/delete"), 404, "not_found")

    records = audit_records(hermes_home, "sessions_action")
    assert [(r["action"], r.get("profile"), r.get("session"), r["result"]) for r in records] == [
        ("delete", "alpha", "cli-1", "ok"),
        ("delete", "alpha", "cli-1", "not_found"),
        ("delete", None, "x", "not_found"),
    ]
    assert records[0]["user"] == "local" and records[0]["exchanges"] == 2
    assert ledger_actions(hermes_home)[0] == (
        "alpha",
        {"action": "sessions.delete", "session": "cli-1", "result": "ok"},
    )


def test_a_delete_waits_for_a_writer_instead_of_failing(
    dashboard: TestClient, traffic: GatewayProfile
) -> None:
    # Another connection holds the write lock for a moment, as the gateway's writer does
    # while it commits a batch: the delete waits for it, then succeeds.
    held = threading.Event()

    def hold_the_lock() -> None:
        conn = sqlite3.connect(traffic.dir / SESSIONS_DB, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE exchanges SET error = error WHERE session_id = 'sdk-1'")
        held.set()
        time.sleep(1.0)
        conn.execute("COMMIT")
        conn.close()

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    held.wait(5)
    done = dashboard.post("/api/sessions/alpha/session/sdk-1/delete")
    holder.join(5)
    assert done.status_code == 200, done.text
    assert rows_of(traffic, "sdk-1") == 0


def test_a_delete_while_the_gateway_records_loses_nothing_else(
    dashboard: TestClient, alpha: GatewayProfile
) -> None:
    for n in range(5):
        ask(alpha, "old-1", [{"role": "user", "content": f"old {n}"}])
    wait_rows(alpha, 5)
    failures: list[BaseException] = []

    def talk() -> None:
        try:
            for n in range(30):
                ask(alpha, "live-1", [{"role": "user", "content": f"live {n}"}])
        except BaseException as exc:
            failures.append(exc)

    talker = threading.Thread(target=talk)
    talker.start()
    wait_for(lambda: rows_of(alpha, "live-1") > 0, what="the first live exchange")
    done = dashboard.post("/api/sessions/alpha/session/old-1/delete")
    talker.join(60)
    assert not failures and done.status_code == 200, done.text
    assert done.json()["deleted"] == 5
    wait_for(lambda: rows_of(alpha, "live-1") == 30, what="all 30 live exchanges")
    assert rows_of(alpha, "old-1") == 0


def test_a_locked_database_is_a_503_not_a_hang(
    dashboard: TestClient, traffic: GatewayProfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_reader, "WRITE_BUSY_TIMEOUT_S", 0.2)
    conn = sqlite3.connect(traffic.dir / SESSIONS_DB, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        refused = dashboard.post("/api/sessions/alpha/session/cli-1/delete")
        assert "locked" in one_line_error(refused, 503, "sessions_unavailable")
        # Reading goes on while a writer holds the lock (WAL).
        assert dashboard.get("/api/sessions/alpha").json()["total"] == 3
    finally:
        conn.execute("ROLLBACK")
        conn.close()
    assert rows_of(traffic, "cli-1") == 2


# -- the page -----------------------------------------------------------------------------


def test_the_page_lists_profiles_and_opens_where_asked(
    dashboard: TestClient, traffic: GatewayProfile
) -> None:
    page = dashboard.get("/sessions?profile=alpha&session=cli-1&q=Peru")
    assert page.status_code == 200
    assert '<option value="alpha" selected>alpha</option>' in page.text
    assert 'data-session="cli-1"' in page.text and 'data-query="Peru"' in page.text
    assert '<a href="/sessions">Sessions</a>' in page.text  # in the nav
    assert "/static/sessions.js" in page.text
    hostile = dashboard.get("/sessions", params={"session": '"><script>', "q": '"><b>'})
    assert hostile.status_code == 200
    assert "<script>" not in hostile.text.split("</head>")[1] and "<b>" not in hostile.text
