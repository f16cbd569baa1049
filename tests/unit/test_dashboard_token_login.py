"""HERMES_DASHBOARD_AUTH=token: a login with no identity provider that still fails closed.

In process (TestClient): a good token gives the same signed session, CSRF and audit as
an OAuth login; a wrong one is a 401, rate-limited per client, audited without the
token; `login-url --rotate` (the real CLI, another process) ends every session in the
running app. As a subprocess (the real `hermes dashboard`): the one sign-in line, the
file it keeps, the token absent from every log but that line, and exit 78 when nothing
authenticates a non-loopback bind.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from hermes_container.dashboard.app import create_app
from hermes_container.dashboard.auth.audit import PREAUTH_FILE
from hermes_container.dashboard.auth.login_token import LOGIN_TOKEN_FILE, LoginTokenFile
from hermes_container.dashboard.auth.ratelimit import ClientLimiter
from hermes_container.dashboard.auth.session import COOKIE_NAME
from hermes_container.dashboard.settings import load_settings
from hermes_container.errors import ConfigError
from hermes_container.home import HermesHome
from tests.conftest import free_port, wait_for
from tests.unit.dashboard_support import FakeManager, clean_env, dashboard_process

SIGN_IN = re.compile(r"hermes dashboard: INFO: sign in at (\S+)/login#token=([A-Za-z0-9_-]+)$")
WRONG = "wrong-token-" + "x" * 40  # token-shaped, so only the comparison can refuse it


def token_env(**extra: str) -> dict[str, str]:
    return {"HERMES_DASHBOARD_AUTH": "token", **extra}


@pytest.fixture
def app_client(home: HermesHome) -> Iterator[TestClient]:
    settings = load_settings(home, host="0.0.0.0", env=token_env())
    app = create_app(settings, home=home, manager=FakeManager(["default", "alpha"]))
    with TestClient(app, follow_redirects=False) as tc:
        yield tc


def csrf_of_login_page(client: TestClient) -> str:
    page = client.get("/login")
    assert page.status_code == 200, page.status_code
    assert 'id="token-login"' in page.text and "/static/login.js" in page.text
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
    assert match
    return match.group(1)


def post_token(client: TestClient, token: str, csrf: str | None, next_path: str = "/") -> Any:
    headers = {"X-CSRF-Token": csrf} if csrf else {}
    return client.post("/auth/token", json={"token": token, "next": next_path}, headers=headers)


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def all_log_text(home: HermesHome) -> str:
    return "".join(p.read_text() for p in home.logs_dir.rglob("*") if p.is_file())


def test_settings_token_mode_needs_no_public_url_and_counts_as_a_provider(tmp_path: Path) -> None:
    home = HermesHome(tmp_path / "home")
    settings = load_settings(home, host="0.0.0.0", port=9119, env=token_env())
    assert settings.mode == "oauth" and settings.token_login
    assert settings.providers == ["token"] and settings.oauth_providers == []
    assert settings.host_check is None  # no Host list to enforce without a public URL
    assert settings.sign_in_base == "http://localhost:9119"
    public = load_settings(
        home, host="0.0.0.0", env=token_env(HERMES_DASHBOARD_PUBLIC_URL="https://h.example/x/")
    )
    assert public.sign_in_base == "https://h.example/x"
    assert load_settings(home, host="10.1.2.3", port=1, env=token_env()).sign_in_base == (
        "http://10.1.2.3:1"
    )
    with pytest.raises(ConfigError) as err:
        load_settings(home, host="0.0.0.0", env={"HERMES_DASHBOARD_AUTH": "tokens"})
    assert "HERMES_DASHBOARD_AUTH='tokens'" in err.value.message
    # no allowlist is needed for the token, but OIDC next to it still needs one
    with pytest.raises(ConfigError, match="allowlist"):
        load_settings(
            home,
            host="0.0.0.0",
            env=token_env(
                HERMES_DASHBOARD_GITHUB_CLIENT_ID="id",
                HERMES_DASHBOARD_GITHUB_CLIENT_SECRET="s",
                HERMES_DASHBOARD_PUBLIC_URL="https://h.example",
            ),
        )


def test_a_good_token_gives_a_signed_session_with_csrf_and_audit(
    app_client: TestClient, home: HermesHome
) -> None:
    token = LoginTokenFile(home.root).ensure()
    assert app_client.get("/api/profiles").status_code == 401
    assert app_client.get("/").headers["location"].startswith("/login")
    csrf = csrf_of_login_page(app_client)
    # CSRF applies to the login itself
    assert post_token(app_client, token, None).status_code == 403
    assert post_token(app_client, token, "not-the-csrf").status_code == 403
    before = app_client.cookies.get(COOKIE_NAME)

    response = post_token(app_client, token, csrf, "/profiles/alpha")
    assert response.status_code == 200, response.text
    assert response.json() == {"ok": True, "next": "/profiles/alpha"}
    assert app_client.cookies.get(COOKIE_NAME) not in (None, before)  # a fresh session
    profiles = app_client.get("/api/profiles")
    assert profiles.status_code == 200 and "alpha" in profiles.text
    page = app_client.get("/")
    assert page.status_code == 200 and "operator" in page.text
    # the session's new CSRF token is required for actions; the pre-login one is dead
    new_csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
    assert new_csrf and new_csrf.group(1) != csrf
    action = "/api/profiles/alpha/gateway/restart"
    assert app_client.post(action, headers={"X-CSRF-Token": csrf}).status_code == 403
    assert app_client.post(action, headers={"X-CSRF-Token": new_csrf.group(1)}).status_code == 200
    # an open redirect is not a `next`
    assert post_token(app_client, token, new_csrf.group(1), "//evil.example").json()["next"] == "/"

    success = [r for r in records(home.auth_log) if r["event"] == "login_success"]
    assert success and success[0]["provider"] == "token" and success[0]["user"] == "operator"
    assert token not in all_log_text(home)


def test_a_wrong_token_is_401_then_rate_limited_and_never_logged(
    app_client: TestClient, home: HermesHome
) -> None:
    token = LoginTokenFile(home.root).ensure()
    now = [1000.0]
    login = app_client.app.state.hermes.token_login  # type: ignore[attr-defined]
    login.limiter = ClientLimiter(
        rate=1 / 12, burst=5, global_rate=1.0, global_burst=60, clock=lambda: now[0]
    )
    csrf = csrf_of_login_page(app_client)
    for _ in range(5):
        response = post_token(app_client, WRONG, csrf)
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_token"
    assert post_token(app_client, "", csrf).status_code == 429  # budget spent: even ""
    limited = post_token(app_client, token, csrf)  # the right token is not even compared
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert app_client.get("/api/profiles").status_code == 401
    now[0] += 12.5  # one attempt refilled
    assert post_token(app_client, token, csrf).status_code == 200
    assert app_client.get("/api/profiles").status_code == 200

    failures = [r for r in records(home.logs_dir / PREAUTH_FILE) if r["event"] == "login_failure"]
    reasons = [r["reason"] for r in failures]
    assert reasons.count("bad_token") == 5 and "rate_limited" in reasons
    assert {r["provider"] for r in failures} == {"token"}
    text = all_log_text(home)
    assert WRONG not in text and token not in text


def test_oversized_or_malformed_bodies_are_wrong_tokens(
    app_client: TestClient, home: HermesHome
) -> None:
    LoginTokenFile(home.root).ensure()
    csrf = csrf_of_login_page(app_client)
    headers = {"X-CSRF-Token": csrf, "Content-Type": "application/json"}
    for body in (b"[]", b"not json", b'{"token": 5}', b'{"token": "' + b"a" * 5000 + b'"}'):
        assert app_client.post("/auth/token", content=body, headers=headers).status_code == 401


def test_rotate_from_the_cli_ends_every_session_and_the_old_token(
    app_client: TestClient, home: HermesHome
) -> None:
    old = LoginTokenFile(home.root).ensure()
    csrf = csrf_of_login_page(app_client)
    assert post_token(app_client, old, csrf).status_code == 200
    assert app_client.get("/api/profiles").status_code == 200

    env = clean_env(HERMES_HOME=str(home.root), **token_env(HERMES_DASHBOARD_HOST="0.0.0.0"))
    proc = subprocess.run(
        [sys.executable, "-m", "hermes_container", "dashboard", "login-url", "--rotate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    url = proc.stdout.strip()
    new = url.rpartition("#token=")[2]
    assert url == f"http://localhost:9119/login#token={new}" and new != old
    assert "every dashboard session has ended" in proc.stderr and new not in proc.stderr

    # the running app notices the new generation within a second (one stat per second)
    wait_for(lambda: app_client.get("/api/profiles").status_code == 401, 5, "the session to end")
    assert app_client.get("/api/profiles").json()["error"] == "session_expired"
    csrf = csrf_of_login_page(app_client)
    assert post_token(app_client, old, csrf).status_code == 401
    assert post_token(app_client, new, csrf).status_code == 200
    assert app_client.get("/api/profiles").status_code == 200
    assert old not in all_log_text(home) and new not in all_log_text(home)


def test_login_url_prints_the_same_link_again(tmp_path: Path) -> None:
    env = clean_env(HERMES_HOME=str(tmp_path / "home"), **token_env())
    run = [sys.executable, "-m", "hermes_container", "dashboard", "login-url"]
    first = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
    second = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == second.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert first.stdout.startswith("http://127.0.0.1:9119/login#token=")
    assert first.stderr == ""
    # off: still printed, with a note on stderr
    env.pop("HERMES_DASHBOARD_AUTH")
    off = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
    assert off.returncode == 0 and off.stdout == first.stdout
    assert "HERMES_DASHBOARD_AUTH" in off.stderr


def test_the_dashboard_prints_one_sign_in_line_and_keeps_the_token(tmp_path: Path) -> None:
    home = HermesHome(tmp_path / "home")
    env = clean_env(HERMES_HOME=str(home.root), **token_env())
    port = free_port()
    with dashboard_process(env, host="0.0.0.0", port=port) as (_, proc):
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        page = client.get("/login")
        csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
        assert csrf
        bad = client.post(
            "/auth/token", json={"token": WRONG}, headers={"X-CSRF-Token": csrf.group(1)}
        )
        assert bad.status_code == 401
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    lines = [line for line in stderr.splitlines() if "sign in" in line]
    assert len(lines) == 1, stderr
    match = SIGN_IN.fullmatch(lines[0])
    assert match, lines[0]
    assert match.group(1) == f"http://localhost:{port}"
    token = match.group(2)
    path = home.root / LOGIN_TOKEN_FILE
    assert path.read_text().strip() == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stderr.count(token) == 1 and WRONG not in stderr
    assert token not in all_log_text(home) and WRONG not in all_log_text(home)

    # a restart keeps the token (and says it again); the public URL is the link's base
    env["HERMES_DASHBOARD_PUBLIC_URL"] = "https://hermes.example"
    with dashboard_process(env, host="0.0.0.0") as (_, proc):
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert f"sign in at https://hermes.example/login#token={token}" in stderr


def test_without_any_provider_a_public_bind_still_refuses_naming_the_token_mode(
    tmp_path: Path,
) -> None:
    env = clean_env(HERMES_HOME=str(tmp_path))
    for extra in ({}, {"HERMES_DASHBOARD_AUTH": "none"}, {"HERMES_DASHBOARD_AUTH": "bogus"}):
        proc = subprocess.run(
            [sys.executable, "-m", "hermes_container", "dashboard", "--host", "0.0.0.0",
             "--port", str(free_port())],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
        assert proc.returncode == 78, (extra, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1
        assert "HERMES_DASHBOARD_AUTH" in proc.stderr
    assert not (tmp_path / LOGIN_TOKEN_FILE).exists()
    assert os.listdir(tmp_path) in ([], [".dashboard_secret"])
