"""Loopback mode: token injected into pages, header required for the API, Host check,
CSRF on POST, gateway control through the injected manager, 503 without one, SSE logs."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from hermes_container.dashboard.app import create_app
from hermes_container.dashboard.settings import DashboardSettings
from hermes_container.home import HermesHome
from hermes_container.profiles import create_profile
from hermes_container.state import write_desired, write_observed
from tests.unit.dashboard_support import FakeManager

TOKEN = "loopback-token-123"
LOCAL = "http://127.0.0.1:9119"


@pytest.fixture
def manager() -> FakeManager:
    return FakeManager(["default", "alpha"])


@pytest.fixture
def client(home: HermesHome, manager: FakeManager) -> Iterator[TestClient]:
    app = create_app(DashboardSettings(session_token=TOKEN), home=home, manager=manager)
    with TestClient(app, base_url=LOCAL, follow_redirects=False) as tc:
        yield tc


def page_tokens(client: TestClient, path: str = "/") -> dict[str, str]:
    html = client.get(path).text
    return dict(
        re.findall(r'<meta name="(csrf-token|hermes-session-token)" content="([^"]+)"', html)
    )


def test_page_carries_token_and_api_needs_it(client: TestClient) -> None:
    tokens = page_tokens(client)
    assert tokens["hermes-session-token"] == TOKEN
    assert client.get("/api/profiles").status_code == 401
    assert (
        client.get("/api/profiles", headers={"X-Hermes-Session-Token": "wrong"}).status_code == 401
    )
    ok = client.get("/api/profiles", headers={"X-Hermes-Session-Token": TOKEN})
    assert ok.status_code == 200 and ok.json()["supervisor"] == "fake"
    bearer = client.get("/api/profiles", headers={"Authorization": f"Bearer {TOKEN}"})
    assert bearer.status_code == 200


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:9119", "127.0.0.1.nip.io", "0.0.0.0"]
)
def test_dns_rebinding_host_is_refused(client: TestClient, host: str) -> None:
    for path in ("/", "/api/status", "/api/profiles"):
        response = client.get(path, headers={"Host": host, "X-Hermes-Session-Token": TOKEN})
        assert response.status_code == 400, (host, path)
        assert TOKEN not in response.text


@pytest.mark.parametrize("host", ["localhost:9119", "127.0.0.1", "[::1]:9119"])
def test_loopback_hosts_accepted(client: TestClient, host: str) -> None:
    assert client.get("/", headers={"Host": host}).status_code == 200


def test_post_needs_token_and_csrf(client: TestClient, manager: FakeManager) -> None:
    tokens = page_tokens(client, "/profiles/alpha")
    url = "/api/profiles/alpha/gateway/stop"
    assert client.post(url).status_code == 401
    assert client.post(url, headers={"X-Hermes-Session-Token": TOKEN}).status_code == 403
    both = {"X-Hermes-Session-Token": TOKEN, "X-CSRF-Token": tokens["csrf-token"]}
    response = client.post(url, headers=both)
    assert response.status_code == 200
    assert response.json()["status"]["gateway_state"] == "stopped"
    assert manager.calls == [("stop", "alpha")]
    assert client.post("/api/profiles/alpha/gateway/explode", headers=both).status_code == 404
    assert client.post("/api/profiles/nope/gateway/stop", headers=both).status_code == 404


def test_gateway_action_is_audited(client: TestClient, home: HermesHome) -> None:
    tokens = page_tokens(client)
    headers = {"X-Hermes-Session-Token": TOKEN, "X-CSRF-Token": tokens["csrf-token"]}
    assert client.post("/api/profiles/default/gateway/restart", headers=headers).status_code == 200
    record = json.loads(home.auth_log.read_text().splitlines()[-1])
    assert record["event"] == "gateway_action"
    assert record["action"] == "restart" and record["profile"] == "default"
    assert record["user"] == "local" and record["result"] == "ok"


def test_no_supervisor_shows_state_file_and_503(home: HermesHome) -> None:
    write_desired(home.profile_dir("alpha"), "running")
    write_observed(home.profile_dir("alpha"), gateway_state="crashed", exit_reason="boom")
    app = create_app(DashboardSettings(session_token=TOKEN), home=home, manager=None)
    with TestClient(app, base_url=LOCAL) as tc:
        tokens = page_tokens(tc)
        headers = {"X-Hermes-Session-Token": TOKEN, "X-CSRF-Token": tokens["csrf-token"]}
        rows = {r["name"]: r for r in tc.get("/api/profiles", headers=headers).json()["profiles"]}
        assert rows["alpha"]["gateway_state"] == "crashed"
        assert rows["alpha"]["desired_state"] == "running"
        response = tc.post("/api/profiles/alpha/gateway/start", headers=headers)
        assert response.status_code == 503
        assert response.json()["error"] == "supervisor_unavailable"
        status = tc.get("/api/status").json()
        assert status["health"] == "degraded" and status["gateways"]["crashed"] == 1
        assert "No supervisor" in tc.get("/profiles/alpha").text


def test_pages_render(client: TestClient, home: HermesHome) -> None:
    home.boot_log.parent.mkdir(parents=True, exist_ok=True)
    home.boot_log.write_text(
        "2026-01-01T00:00:00Z profile=default prior_state=none action=started\n"
    )
    overview = client.get("/")
    assert overview.status_code == 200 and 'href="/profiles/alpha"' in overview.text
    detail = client.get("/profiles/alpha")
    assert 'data-action="stop"' in detail.text
    assert "action=started" in client.get("/logs/boot").text
    assert client.get("/logs/audit").status_code == 200
    assert client.get("/profiles/does-not-exist").status_code == 404
    assert client.get("/login").headers["location"] == "/"
    headers = client.get("/").headers
    assert headers["x-frame-options"] == "DENY"
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["cache-control"] == "no-store"


def test_log_tail_sse(client: TestClient, home: HermesHome) -> None:
    log_dir = home.gateway_log_dir("alpha")
    log_dir.mkdir(parents=True)
    (log_dir / "current").write_text("line one\nline two\n")
    response = client.get(
        "/api/profiles/alpha/logs", params={"once": "1"}, headers={"X-Hermes-Session-Token": TOKEN}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "data: line one\n\ndata: line two\n\n" in response.text
    assert "event: backlog-end" in response.text
    missing = client.get(
        "/api/profiles/..%2f..%2fetc/logs", headers={"X-Hermes-Session-Token": TOKEN}
    )
    assert missing.status_code == 404


def test_status_is_public_and_cached(client: TestClient, home: HermesHome) -> None:
    first = client.get("/api/status").json()
    assert first["auth_required"] is True and first["auth_mode"] == "token"
    assert first["profiles"] == 2 and first["version"]
    create_profile(home, "beta")
    assert client.get("/api/status").json()["profiles"] == 2  # cached briefly


def test_origin_check_accepts_own_and_public_url_origin(home: HermesHome) -> None:
    settings = DashboardSettings(session_token=TOKEN, public_url="https://dash.example")
    app = create_app(settings, home=home, manager=FakeManager(["default", "alpha"]))
    with TestClient(app, base_url=LOCAL) as tc:
        csrf = page_tokens(tc)["csrf-token"]
        url = "/api/profiles/alpha/gateway/start"
        base = {"X-Hermes-Session-Token": TOKEN, "X-CSRF-Token": csrf}
        for origin, expected in (
            (LOCAL, 200),
            ("https://dash.example", 200),
            ("https://evil.example", 403),
            ("null", 403),
        ):
            assert tc.post(url, headers={**base, "Origin": origin}).status_code == expected, origin


class _BrokenManager(FakeManager):
    def status(self, profile: str):  # type: ignore[no-untyped-def]
        raise OSError("s6-svstat vanished")

    def stop(self, profile: str, *, wait: float | None = None):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")


def test_broken_manager_degrades_gracefully(home: HermesHome) -> None:
    from hermes_container.errors import HermesError

    manager = _BrokenManager(["default", "alpha"])
    app = create_app(DashboardSettings(session_token=TOKEN), home=home, manager=manager)
    with TestClient(app, base_url=LOCAL, raise_server_exceptions=False) as tc:
        assert tc.get("/").status_code == 200  # rows fall back to the state files
        csrf = page_tokens(tc)["csrf-token"]
        headers = {"X-Hermes-Session-Token": TOKEN, "X-CSRF-Token": csrf}
        response = tc.post("/api/profiles/alpha/gateway/stop", headers=headers)
        assert response.status_code == 500 and response.json()["error"] == "action_failed"

        def refuse(profile: str, *, wait: float | None = None) -> None:
            raise HermesError("gateway alpha did not become ready within 15s")

        manager.start = refuse  # type: ignore[method-assign,assignment]
        response = tc.post("/api/profiles/alpha/gateway/start", headers=headers)
        assert response.status_code == 409
        assert "did not become ready" in response.json()["detail"]
    results = [json.loads(x)["result"] for x in home.auth_log.read_text().splitlines()]
    assert results == ["error", "error"]
