"""The playground's relay: browser → dashboard → the profile's real gateway → the fake
provider, and back as a stream.

In-process (TestClient) for what the dashboard answers; a real dashboard process for
what needs real sockets: the answer arriving piece by piece, and a page that goes away
ending the request at the gateway. Every answer is checked for the profiles' keys.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from hermes_container.dashboard.auth.public_paths import is_public_path
from hermes_container.envfile import read_env, write_env
from hermes_container.home import SESSIONS_DB, HermesHome
from tests.conftest import run_hermes, wait_for
from tests.fake_upstream import FakeUpstream
from tests.unit.conftest import GatewayProfile
from tests.unit.dashboard_client_support import csrf_of, one_line_error
from tests.unit.dashboard_support import clean_env, dashboard_process
from tests.unit.test_sessions_browser import (
    TOKEN,
    assert_no_secret,
    audit_records,
    dashboard,
    ledger_actions,
    rows_of,
    wait_rows,
)

__all__ = ["dashboard"]  # a fixture shared with the sessions browser's tests

MakeProfile = Callable[[str], GatewayProfile]
CHAT = "/api/playground/alpha/chat"


def answer_of(stream_text: str) -> str:
    """The text of an OpenAI chat stream: every delta's content, in order."""
    parts = []
    for line in stream_text.splitlines():
        if not line.startswith("data:") or line == "data: [DONE]":
            continue
        for choice in json.loads(line[5:])["choices"]:
            parts.append(choice["delta"].get("content") or "")
    return "".join(parts)


def chat(client: TestClient | httpx.Client, message: str, session: str | None = None) -> Any:
    return client.post(CHAT, json={"message": message, "session": session})


def last_user_turns(upstream: FakeUpstream) -> list[tuple[str, str]]:
    """What the provider was sent last, without the persona (system) message."""
    messages = upstream.requests[-1].body["messages"]
    return [(m["role"], m["content"]) for m in messages if m["role"] != "system"]


# -- the gate -----------------------------------------------------------------------------


def test_nothing_of_the_playground_is_public() -> None:
    for target in ("/playground", CHAT):
        assert not is_public_path(target), target


def test_without_the_token_or_csrf_nothing_reaches_the_gateway(
    hermes_home: HermesHome, alpha: GatewayProfile, fake_upstream: FakeUpstream
) -> None:
    from hermes_container.dashboard.app import create_app
    from hermes_container.dashboard.settings import DashboardSettings

    app = create_app(DashboardSettings(session_token=TOKEN), home=hermes_home, manager=None)
    with TestClient(app, base_url="http://127.0.0.1:9119") as anonymous:
        one_line_error(chat(anonymous, "hello"), 401, "unauthenticated")
        anonymous.headers["X-Hermes-Session-Token"] = TOKEN
        one_line_error(chat(anonymous, "hello"), 403, "csrf_failed")
        csrf = csrf_of(anonymous.get("/playground"))
        cross = anonymous.post(
            CHAT,
            json={"message": "hello"},
            headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"},
        )
        one_line_error(cross, 403, "csrf_failed")
    assert fake_upstream.requests == []
    with sqlite3.connect(alpha.dir / SESSIONS_DB) as conn:
        assert conn.execute("SELECT COUNT(*) FROM exchanges").fetchone()[0] == 0


# -- chatting -----------------------------------------------------------------------------


def test_a_first_message_starts_a_session_and_streams_the_answer(
    dashboard: TestClient, alpha: GatewayProfile, fake_upstream: FakeUpstream
) -> None:
    response = chat(dashboard, "hello there")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    session = response.headers["x-hermes-session"]
    assert re.fullmatch(r"[0-9a-f]{32}", session)
    assert answer_of(response.text) == "echo: hello there "
    assert response.text.rstrip().endswith("data: [DONE]")
    # The gateway recorded it in that session, as it records any client's exchange.
    wait_rows(alpha, 1)
    body = dashboard.get(f"/api/sessions/alpha/session/{session}").json()
    assert [(m["role"], m["content"]) for m in body["messages"]] == [
        ("user", "hello there"),
        ("assistant", "echo: hello there "),
    ]
    assert body["exchanges"][0]["stream"] is True
    assert last_user_turns(fake_upstream) == [("user", "hello there")]


def test_a_picked_session_goes_on_with_its_conversation(
    dashboard: TestClient, alpha: GatewayProfile, fake_upstream: FakeUpstream
) -> None:
    done = run_hermes("-p", "alpha", "chat", "--session", "cli-7", "Name a colour")
    assert done.returncode == 0, done.stderr
    wait_rows(alpha, 1)
    response = chat(dashboard, "And another?", session="cli-7")
    assert response.status_code == 200, response.text
    assert response.headers["x-hermes-session"] == "cli-7"
    # The provider got the conversation so far, then the new message.
    assert last_user_turns(fake_upstream) == [
        ("user", "Name a colour"),
        ("assistant", "echo: Name a colour"),
        ("user", "And another?"),
    ]
    wait_rows(alpha, 2)
    body = dashboard.get("/api/sessions/alpha/session/cli-7").json()
    assert body["exchange_count"] == 2
    assert [m["content"] for m in body["messages"]] == [  # nothing shown twice
        "Name a colour",
        "echo: Name a colour",
        "And another?",
        "echo: And another? ",
    ]


def test_the_persona_is_the_profiles_own(
    dashboard: TestClient, alpha: GatewayProfile, fake_upstream: FakeUpstream
) -> None:
    (alpha.dir / "SOUL.md").write_text("You are a terse lighthouse keeper.\n")
    alpha.procs[-1].terminate()
    alpha.start()  # the persona is read at start
    assert chat(dashboard, "hi").status_code == 200
    first = fake_upstream.requests[-1].body["messages"][0]
    assert first == {"role": "system", "content": "You are a terse lighthouse keeper."}


def test_bad_bodies_are_refused_before_the_gateway(
    dashboard: TestClient, alpha: GatewayProfile, fake_upstream: FakeUpstream
) -> None:
    for body in (
        {"message": ""},
        {"message": "   "},
        {"message": 42},
        {},
        {"message": "x" * 32_001},
        {"message": "hi", "session": "bad id"},
        {"message": "hi", "session": 7},
        {"message": "hi", "session": "x" * 129},
    ):
        one_line_error(dashboard.post(CHAT, json=body), 400, "bad_request")
    for raw in (b"not json", b"[1, 2]", b'"text"'):
        sent = dashboard.post(CHAT, content=raw, headers={"content-type": "application/json"})
        one_line_error(sent, 400, "bad_request")
    assert fake_upstream.requests == []


def test_unknown_profiles_and_sessions_are_404(
    dashboard: TestClient, alpha: GatewayProfile, fake_upstream: FakeUpstream
) -> None:
    one_line_error(chat(dashboard, "hi", session="never-was"), 404, "not_found")
    one_line_error(dashboard.post("/api/playground/nope/chat", json={"message": "hi"}), 404)
    one_line_error(dashboard.post("/api/playground/NOPE/chat", json={"message": "hi"}), 404)
    assert fake_upstream.requests == []
    page = dashboard.get("/playground?profile=nope")
    assert page.status_code == 404 and "No such profile" in page.text


# -- the gateway's troubles, told plainly -------------------------------------------------


def test_a_stopped_gateway_is_a_503_that_says_so(
    dashboard: TestClient, alpha: GatewayProfile
) -> None:
    alpha.procs[-1].terminate()
    detail = one_line_error(chat(dashboard, "anyone?"), 503, "gateway_unreachable")
    assert "gateway of profile 'alpha' is not running" in detail
    assert f"127.0.0.1:{alpha.port}" in detail


def test_a_profile_without_a_key_is_a_503(
    dashboard: TestClient, alpha: GatewayProfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("API_SERVER_KEY", raising=False)
    env = read_env(alpha.dir / ".env")
    write_env(alpha.dir / ".env", {k: v for k, v in env.items() if k != "API_SERVER_KEY"})
    detail = one_line_error(chat(dashboard, "hi"), 503, "gateway_unconfigured")
    assert "API_SERVER_KEY" in detail
    write_env(alpha.dir / ".env", env)  # for the secrets check at the end


def test_a_provider_error_is_a_502_with_the_gateways_reason(
    dashboard: TestClient, alpha: GatewayProfile, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.set(status=500, error="provider on fire")
    response = chat(dashboard, "hi")
    detail = one_line_error(response, 502, "gateway_error")
    assert detail.startswith("the gateway answered HTTP 502:") and "provider on fire" in detail
    assert response.json()["gateway_status"] == 502


def test_the_key_is_read_at_each_message_and_a_refusal_is_no_logout(
    dashboard: TestClient, alpha: GatewayProfile
) -> None:
    # The .env gets a new key while the gateway still runs with the old one: the
    # dashboard sends the new key at once, the gateway refuses it, and the page gets a
    # 502 naming the gateway's 401 (a 401 would send the page to the login screen).
    env = read_env(alpha.dir / ".env")
    write_env(alpha.dir / ".env", {**env, "API_SERVER_KEY": "rotated-key-the-gateway-lacks"})
    response = chat(dashboard, "hi")
    detail = one_line_error(response, 502, "gateway_error")
    assert "HTTP 401" in detail and "invalid or missing API key" in detail
    write_env(alpha.dir / ".env", env)
    assert chat(dashboard, "hi").status_code == 200


def test_each_use_is_audited_without_the_message(
    dashboard: TestClient, alpha: GatewayProfile, hermes_home: HermesHome
) -> None:
    ok = chat(dashboard, "a private thought")
    session = ok.headers["x-hermes-session"]
    chat(dashboard, "")
    chat(dashboard, "hi", session="gone-1")
    alpha.procs[-1].terminate()
    chat(dashboard, "hi", session=None)
    records = audit_records(hermes_home, "playground_action")
    assert [(r["action"], r["profile"], r["result"]) for r in records] == [
        ("chat", "alpha", "ok"),
        ("chat", "alpha", "bad_request"),
        ("chat", "alpha", "not_found"),
        ("chat", "alpha", "gateway_unreachable"),
    ]
    assert records[0]["session"] == session and records[0]["user"] == "local"
    assert "a private thought" not in hermes_home.auth_log.read_text()
    assert ledger_actions(hermes_home)[0] == (
        "alpha",
        {"action": "playground.chat", "session": session, "result": "ok"},
    )


# -- a real dashboard process: streaming and hanging up ------------------------------------


@pytest.fixture
def live(hermes_home: HermesHome, alpha: GatewayProfile) -> Iterator[httpx.Client]:
    """The real `hermes dashboard` (loopback token mode), as the page's scripts call it."""
    env = clean_env(HERMES_HOME=str(hermes_home.root), HERMES_DASHBOARD_SESSION_TOKEN=TOKEN)
    answers: list[httpx.Response] = []
    with (
        dashboard_process(env) as (port, _proc),
        httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            trust_env=False,
            timeout=30,
            headers={"X-Hermes-Session-Token": TOKEN},
            event_hooks={"response": [answers.append]},
        ) as client,
    ):
        client.headers["X-CSRF-Token"] = csrf_of(client.get("/playground"))
        yield client
    assert_no_secret(hermes_home, answers)


def exchange_of(profile: GatewayProfile, session: str) -> tuple[int, str | None, str | None]:
    def recorded() -> tuple[int, str | None, str | None] | None:
        with sqlite3.connect(profile.dir / SESSIONS_DB) as conn:
            row = conn.execute(
                "SELECT status, error, response_text FROM exchanges WHERE session_id = ?",
                (session,),
            ).fetchone()
        return row  # type: ignore[no-any-return]

    found: tuple[int, str | None, str | None] = wait_for(
        recorded, what=f"the exchange of {session}", tolerate=(sqlite3.Error,)
    )
    return found


def test_a_page_that_goes_away_ends_the_request_at_the_gateway(
    live: httpx.Client, alpha: GatewayProfile, fake_upstream: FakeUpstream
) -> None:
    # The first piece reaches the test while the provider is still sending (so the relay
    # passes pieces on as they come); then the test hangs up, as a closed tab does.
    fake_upstream.set(chunks=[f"w{i} " for i in range(40)], chunk_delay=0.25)  # ~10 s
    with live.stream("POST", CHAT, json={"message": "long story"}) as response:
        session = response.headers["x-hermes-session"]
        for chunk in response.iter_raw():
            if b"w0" in chunk:
                break  # the with-block closes the connection
    status, error, text = exchange_of(alpha, session)
    assert (status, error) == (499, "client disconnected")
    assert text is not None and text.startswith("w0") and "w39" not in text


def test_a_page_that_goes_away_before_the_answer_begins_ends_it_too(
    live: httpx.Client, alpha: GatewayProfile, fake_upstream: FakeUpstream
) -> None:
    # The provider takes 2 s to begin, then ~10 s to stream. Had the dashboard kept its
    # gateway request open after the page left, the gateway would relay the whole answer
    # (status 200); it finds its client gone instead and stops at once.
    fake_upstream.set(delay=2, chunks=[f"w{i} " for i in range(40)], chunk_delay=0.25)
    with pytest.raises(httpx.ReadTimeout):
        live.post(CHAT, json={"message": "slow start", "session": None}, timeout=0.5)
    wait_for(lambda: fake_upstream.requests, what="the request at the provider")
    sessions = wait_for(
        lambda: live.get("/api/sessions/alpha").json()["sessions"], what="the recorded exchange"
    )
    (status, error, _text) = exchange_of(alpha, sessions[0]["session_id"])
    assert (status, error) == (499, "client disconnected")
    assert rows_of(alpha, sessions[0]["session_id"]) == 1


def test_the_page_offers_every_profile(dashboard: TestClient, make_profile: MakeProfile) -> None:
    make_profile("beta")
    page = dashboard.get("/playground?profile=beta&session=cli-1")
    assert page.status_code == 200
    assert '<option value="beta" selected>beta</option>' in page.text
    assert '<option value="default">default</option>' in page.text
    assert 'data-session="cli-1"' in page.text
    assert '<a href="/playground">Playground</a>' in page.text
