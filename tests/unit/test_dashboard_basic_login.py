"""The basic login: HERMES_DASHBOARD_BASIC_USER + HERMES_DASHBOARD_BASIC_PASSWORD_HASH (argon2
through argon2-cffi) and `hermes dashboard hash-password`.

The hash is made by the real CLI; the app is the real one (TestClient); the session,
CSRF, audit and attempt budget are the same as the token login's.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from hermes_container.dashboard.app import create_app
from hermes_container.dashboard.auth.audit import PREAUTH_FILE
from hermes_container.dashboard.auth.ratelimit import ClientLimiter
from hermes_container.dashboard.settings import load_settings
from hermes_container.errors import ConfigError
from hermes_container.home import HermesHome
from tests.unit.dashboard_support import FakeManager, clean_env

PASSWORD = "correct horse battery staple"
WRONG = "wrong-password-do-not-log"


def hash_with_cli(password: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hermes_container", "dashboard", "hash-password"],
        input=password + "\n",
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def password_hash() -> str:
    proc = hash_with_cli(PASSWORD)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def basic_env(password_hash: str, **extra: str) -> dict[str, str]:
    return {
        "HERMES_DASHBOARD_BASIC_USER": "admin",
        "HERMES_DASHBOARD_BASIC_PASSWORD_HASH": password_hash,
        **extra,
    }


def make_client(home: HermesHome, env: dict[str, str]) -> TestClient:
    settings = load_settings(home, host="0.0.0.0", env=env)
    app = create_app(settings, home=home, manager=FakeManager(["default", "alpha"]))
    return TestClient(app, follow_redirects=False)


@pytest.fixture
def client(home: HermesHome, password_hash: str) -> Iterator[TestClient]:
    with make_client(home, basic_env(password_hash)) as tc:
        yield tc


def login_csrf(client: TestClient) -> str:
    page = client.get("/login")
    assert page.status_code == 200 and 'id="basic-login"' in page.text
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
    assert match
    return match.group(1)


def post_basic(client: TestClient, csrf: str, user: str, password: str) -> Any:
    return client.post(
        "/auth/basic",
        json={"user": user, "password": password, "next": "/kanban"},
        headers={"X-CSRF-Token": csrf},
    )


def logs(home: HermesHome) -> str:
    return "".join(p.read_text() for p in home.logs_dir.rglob("*") if p.is_file())


def test_hash_password_makes_an_argon2id_hash_and_refuses_empty() -> None:
    proc = hash_with_cli(PASSWORD)
    assert proc.returncode == 0 and proc.stderr == ""
    value = proc.stdout.strip()
    assert value.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert PASSWORD not in proc.stdout
    from argon2 import PasswordHasher

    assert PasswordHasher().verify(value, PASSWORD)
    assert hash_with_cli(PASSWORD).stdout.strip() != value  # a new salt each time
    empty = hash_with_cli("")
    assert empty.returncode == 2 and empty.stdout == ""


def test_settings_validate_the_pair_without_echoing_the_hash(
    tmp_path: Path, password_hash: str
) -> None:
    home = HermesHome(tmp_path / "home")
    settings = load_settings(home, host="0.0.0.0", env=basic_env(password_hash))
    assert settings.mode == "oauth" and settings.providers == ["basic"]
    assert password_hash not in repr(settings)
    bad_cases = [
        ({"HERMES_DASHBOARD_BASIC_USER": "admin"}, "both needed"),
        ({"HERMES_DASHBOARD_BASIC_PASSWORD_HASH": password_hash}, "both needed"),
        (basic_env("plain-text-password"), "not an argon2 hash"),
        (basic_env("$argon2id$v=19$garbage"), "not a well-formed"),
        (basic_env(password_hash.replace("m=19456", "m=1048576")), "at most"),
        (basic_env(password_hash, HERMES_DASHBOARD_BASIC_USER="ad\x07min"), "printable"),
    ]
    for env, needle in bad_cases:
        with pytest.raises(ConfigError) as err:
            load_settings(home, host="0.0.0.0", env=env)
        assert needle in err.value.message
        assert "plain-text-password" not in err.value.message


def test_the_right_password_gives_a_session_with_csrf_and_audit(
    client: TestClient, home: HermesHome
) -> None:
    assert client.get("/api/profiles").status_code == 401
    csrf = login_csrf(client)
    no_csrf = client.post("/auth/basic", json={"user": "admin", "password": PASSWORD})
    assert no_csrf.status_code == 403
    response = post_basic(client, csrf, "admin", PASSWORD)
    assert response.status_code == 200, response.text
    assert response.json() == {"ok": True, "next": "/kanban"}
    assert client.get("/api/profiles").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "admin" in page.text
    success = [json.loads(line) for line in home.auth_log.read_text().splitlines()]
    assert [(r["event"], r["provider"], r["user"]) for r in success] == [
        ("login_success", "basic", "admin")
    ]
    assert PASSWORD not in logs(home)


def test_wrong_credentials_are_401_then_rate_limited_and_never_logged(
    client: TestClient, home: HermesHome
) -> None:
    now = [50.0]
    login = client.app.state.hermes.basic_login  # type: ignore[attr-defined]
    login.limiter = ClientLimiter(
        rate=1 / 12, burst=5, global_rate=1.0, global_burst=60, clock=lambda: now[0]
    )
    csrf = login_csrf(client)
    attempts = [("admin", WRONG), ("root", PASSWORD), ("", ""), ("admin", WRONG), ("x", WRONG)]
    for user, password in attempts:
        response = post_basic(client, csrf, user, password)
        assert response.status_code == 401, (user, response.text)
        assert response.json()["error"] == "invalid_credentials"
    limited = post_basic(client, csrf, "admin", PASSWORD)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "12"
    now[0] += 12.5
    assert post_basic(client, csrf, "admin", PASSWORD).status_code == 200

    failures = [
        json.loads(line) for line in (home.logs_dir / PREAUTH_FILE).read_text().splitlines()
    ]
    reasons = [r["reason"] for r in failures if r["event"] == "login_failure"]
    assert reasons.count("bad_password") == 5 and reasons.count("rate_limited") == 1
    text = logs(home)
    assert WRONG not in text and PASSWORD not in text and '"root"' not in text


def test_a_new_password_hash_ends_the_old_sessions(home: HermesHome, password_hash: str) -> None:
    with make_client(home, basic_env(password_hash)) as first:
        assert post_basic(first, login_csrf(first), "admin", PASSWORD).status_code == 200
        cookies = dict(first.cookies)
    # a restart with the same hash keeps the session (same home: signing key, revocations)
    with make_client(home, basic_env(password_hash)) as again:
        again.cookies.update(cookies)
        assert again.get("/api/profiles").status_code == 200
    other = hash_with_cli("another password").stdout.strip()
    with make_client(home, basic_env(other)) as changed:
        changed.cookies.update(cookies)
        assert changed.get("/api/profiles").status_code == 401
        assert post_basic(changed, login_csrf(changed), "admin", PASSWORD).status_code == 401
    # ended for good: going back to the old hash does not revive it
    with make_client(home, basic_env(password_hash)) as back:
        back.cookies.update(cookies)
        assert back.get("/api/profiles").status_code == 401
    ended = [json.loads(line) for line in home.auth_log.read_text().splitlines()]
    assert [r["event"] for r in ended if r["event"] == "session_ended"] == ["session_ended"]
