"""GET /metrics on the dashboard: the bearer token is the only way in, in every auth mode."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from hermes_container.dashboard.auth.public_paths import (
    PUBLIC_API_PATHS,
    PUBLIC_PAGE_PATHS,
    is_public_path,
)
from hermes_container.dashboard.metrics_endpoint import MIN_TOKEN, metrics_token
from hermes_container.errors import EXIT_CONFIG, ConfigError
from hermes_container.home import HermesHome
from tests.conftest import free_port, run_hermes
from tests.unit.dashboard_support import call_asgi, clean_env, oidc_provider, scope_for
from tests.unit.metrics_support import TOKEN, dashboard, parse, scrape, value
from tests.unit.test_dashboard_oidc import (
    USERS,
    authorize_at_provider,
    login,
    make_settings,
    start_login,
)

SESSION_TOKEN = "the-loopback-session-token-42"


@pytest.fixture(scope="module")
def issuer() -> Iterator[str]:
    with oidc_provider(USERS) as url:
        yield url


def test_no_token_configured_means_no_endpoint(home: HermesHome) -> None:
    with dashboard(home, env={}, session_token=SESSION_TOKEN) as client:
        for headers in (
            {},
            {"authorization": f"Bearer {TOKEN}"},
            {"x-hermes-session-token": SESSION_TOKEN},
            {"authorization": f"Bearer {SESSION_TOKEN}"},
        ):
            response = client.get("/metrics", headers=headers)
            assert response.status_code == 404
            assert response.json()["error"] == "not_found"
            assert "HERMES_METRICS_TOKEN" in response.json()["detail"]


def test_the_bearer_token_is_required(home: HermesHome) -> None:
    with dashboard(home, session_token=SESSION_TOKEN) as client:
        for headers in (
            {},
            {"authorization": "Bearer wrong-token-of-some-length"},
            {"authorization": f"Bearer {TOKEN}x"},
            {"authorization": f"Bearer {TOKEN[:-1]}"},
            {"authorization": f"Basic {TOKEN}"},
            {"authorization": TOKEN},
            # The dashboard's own loopback session token opens the API, not /metrics.
            {"x-hermes-session-token": SESSION_TOKEN},
            {"authorization": f"Bearer {SESSION_TOKEN}"},
        ):
            response = client.get("/metrics", headers=headers)
            assert response.status_code == 401, headers
            assert response.headers["www-authenticate"] == "Bearer"
            assert "hermes_" not in response.text
        ok = client.get("/metrics", headers={"authorization": f"bearer {TOKEN}"})
        assert ok.status_code == 200
        assert ok.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert ok.headers["cache-control"] == "no-store"
        assert ok.headers["x-content-type-options"] == "nosniff"
        samples, _ = parse(ok.text)
        assert value(samples, "hermes_metrics_collector_up", collector="supervision") == 1
        # The session token still opens the API: the two are independent.
        api = client.get("/api/profiles", headers={"x-hermes-session-token": SESSION_TOKEN})
        assert api.status_code == 200
        assert (
            client.get("/api/profiles", headers={"authorization": f"Bearer {TOKEN}"}).status_code
            == 401
        )


def test_methods_head_and_openmetrics(home: HermesHome) -> None:
    auth = {"authorization": f"Bearer {TOKEN}"}
    with dashboard(home) as client:
        assert client.post("/metrics", headers=auth).status_code == 405
        assert client.post("/metrics").status_code == 405
        head = client.head("/metrics", headers=auth)
        assert head.status_code == 200 and head.content == b""
        om = client.get(
            "/metrics", headers={**auth, "accept": "application/openmetrics-text; version=1.0.0"}
        )
        assert om.status_code == 200
        assert om.headers["content-type"].startswith("application/openmetrics-text")
        assert om.text.endswith("# EOF\n")


def test_metrics_is_not_a_public_path() -> None:
    assert "/metrics" not in PUBLIC_API_PATHS | PUBLIC_PAGE_PATHS
    assert not is_public_path("/metrics")


@pytest.mark.parametrize(
    "target", ["/metrics/", "/%6detrics", "//metrics", "/METRICS", "/metrics;x"]
)
def test_other_spellings_never_reach_the_scrape(home: HermesHome, target: str) -> None:
    """Only the canonical path is the endpoint; the rest meet the normal gates (401
    without the session token) and, past them, no route."""
    with dashboard(home, session_token=SESSION_TOKEN) as client:
        app = client.app
        bearer = [(b"host", b"127.0.0.1:9119"), (b"authorization", f"Bearer {TOKEN}".encode())]
        status, _, body = asyncio.run(call_asgi(app, scope_for(target, headers=bearer)))
        assert status == 401 and b"hermes_" not in body
        session = [
            (b"host", b"127.0.0.1:9119"),
            (b"x-hermes-session-token", SESSION_TOKEN.encode()),
        ]
        status, _, body = asyncio.run(call_asgi(app, scope_for(target, headers=session)))
        assert status == 404 and b"hermes_" not in body


def test_token_from_a_file(home: HermesHome, tmp_path: Path) -> None:
    secret = tmp_path / "metrics-token"
    secret.write_text(TOKEN + "\n")
    with dashboard(home, env={"HERMES_METRICS_TOKEN_FILE": str(secret)}) as client:
        samples, _, _ = scrape(client)  # the file's content minus its newline
        assert value(samples, "hermes_metrics_collector_up", collector="files") == 1
        assert (
            client.get("/metrics", headers={"authorization": f"Bearer {TOKEN}\n"}).status_code
            == 200
        )


def test_token_settings_that_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text(TOKEN)
    with pytest.raises(ConfigError, match="not both"):
        metrics_token({"HERMES_METRICS_TOKEN": TOKEN, "HERMES_METRICS_TOKEN_FILE": str(secret)})
    with pytest.raises(ConfigError, match=f"at least {MIN_TOKEN}"):
        metrics_token({"HERMES_METRICS_TOKEN": "short"})
    with pytest.raises(ConfigError, match="cannot read"):
        metrics_token({"HERMES_METRICS_TOKEN_FILE": str(tmp_path / "missing")})
    assert metrics_token({"HERMES_METRICS_TOKEN": "  "}) is None
    assert metrics_token({"HERMES_METRICS_TOKEN_FILE": str(secret)}) == TOKEN.encode()


def test_a_misconfigured_token_stops_the_dashboard(tmp_path: Path) -> None:
    env = clean_env(
        HERMES_HOME=str(tmp_path / "home"),
        HERMES_METRICS_TOKEN="short",
    )
    env.pop("HERMES_METRICS_TOKEN_FILE", None)
    result = run_hermes("dashboard", "--port", str(free_port()), env=env, timeout=30)
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "HERMES_METRICS_TOKEN must be at least" in result.stderr


def test_oauth_mode_bearer_only_and_login_counters(issuer: str, home: HermesHome) -> None:
    settings = make_settings(issuer)
    fields = {
        name: getattr(settings, name)
        for name in ("host", "mode", "oidc", "allowlist", "public_url")
    }
    with dashboard(home, base_url="http://testserver", **fields) as client:
        auth = {"authorization": f"Bearer {TOKEN}"}
        assert client.get("/metrics").status_code == 401
        # Prometheus scrapes by whatever name reaches the container: no Host check here,
        # while every other path of an OAuth dashboard refuses an unknown Host.
        assert client.get("/metrics", headers={**auth, "host": "10.1.2.3:9119"}).status_code == 200
        assert client.get("/api/status", headers={"host": "10.1.2.3:9119"}).status_code == 400

        assert login(client, "alice").status_code == 303  # a logged-in session...
        assert client.get("/api/profiles").status_code == 200
        assert client.get("/metrics").status_code == 401  # ...does not open /metrics
        assert login(client, "mallory").status_code == 403  # not on the allowlist
        callback = authorize_at_provider(start_login(client), "alice")
        tampered = re.sub(r"state=[^&]+", "state=forged-state-value", callback)
        assert client.get(tampered).status_code == 400

        samples, _, _ = scrape(client)
        assert value(samples, "hermes_dashboard_logins_total", provider="oidc") == 1
        assert value(samples, "hermes_dashboard_login_denials_total", provider="oidc") == 1
        failures = "hermes_dashboard_login_failures_total"
        assert value(samples, failures, provider="oidc", reason="mismatching_state") == 1
