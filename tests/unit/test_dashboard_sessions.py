"""Login sessions against a REAL OIDC provider: the allowlist is re-checked on every
request, and ended sessions stay ended across a dashboard restart.

A "restart" is a second app built from the same home and signing key, as the
dashboard process is after the container restarts with (possibly) new env.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from hermes_container.dashboard.app import create_app
from hermes_container.dashboard.auth.allowlist import Allowlist
from hermes_container.dashboard.auth.session import COOKIE_NAME
from hermes_container.home import HermesHome
from tests.unit.dashboard_support import FakeManager, oidc_provider
from tests.unit.test_dashboard_oidc import audit_records, csrf_of, login, make_settings

KEY = b"sessions-test-signing-key-0123456789abcdef"
USERS = [
    ("alice", {"email": "alice@example.com", "email_verified": True}),
    ("bob", {"email": "bob@corp.example", "email_verified": True}),
]
REVOKED = Path("dashboard", "revoked.json")  # spelled out: the old code has no module for it


@pytest.fixture(scope="module")
def issuer() -> Iterator[str]:
    with oidc_provider(USERS) as url:
        yield url


def app_for(issuer: str, home: HermesHome, **overrides: Any) -> Any:
    """One dashboard "process": the same signing key every time, like a restart."""
    overrides.setdefault(
        "allowlist", Allowlist.build(emails=["alice@example.com"], domains=["corp.example"])
    )
    settings = make_settings(issuer, secret_key=KEY, **overrides)
    return create_app(settings, home=home, manager=FakeManager(["default", "alpha"]))


def logged_in_cookie(issuer: str, home: HermesHome, sub: str) -> str:
    with TestClient(app_for(issuer, home), follow_redirects=False) as tc:
        assert login(tc, sub).status_code == 303
        assert tc.get("/api/profiles").status_code == 200
        cookie = tc.cookies.get(COOKIE_NAME)
    assert isinstance(cookie, str) and cookie
    return cookie


def test_removed_user_is_ended_on_the_next_request(issuer: str, home: HermesHome) -> None:
    """Item 1: restart with alice off the allowlist; her cookie must stop working."""
    api_cookie = logged_in_cookie(issuer, home, "alice")
    page_cookie = logged_in_cookie(issuer, home, "alice")
    bob_cookie = logged_in_cookie(issuer, home, "bob")

    shorter = Allowlist.build(domains=["corp.example"])  # alice@example.com removed
    with TestClient(app_for(issuer, home, allowlist=shorter), follow_redirects=False) as tc:
        tc.cookies.set(COOKIE_NAME, api_cookie)
        denied = tc.get("/api/profiles")
        assert denied.status_code == 401
        assert denied.json()["error"] == "access_revoked"
        assert denied.json()["login_url"].startswith("/login")
        assert f"{COOKIE_NAME}=; Max-Age=0" in denied.headers["set-cookie"]

        tc.cookies.clear()
        tc.cookies.set(COOKIE_NAME, page_cookie)
        page = tc.get("/profiles/alpha")
        assert page.status_code == 303
        assert page.headers["location"] == "/login?next=/profiles/alpha&expired=1"
        assert f"{COOKIE_NAME}=; Max-Age=0" in page.headers["set-cookie"]

        # A copy of an ended cookie stays dead, and is not audited again.
        tc.cookies.clear()
        tc.cookies.set(COOKIE_NAME, api_cookie)
        assert tc.get("/api/profiles").json()["error"] == "unauthenticated"
        assert tc.post("/api/profiles/alpha/gateway/stop").status_code == 401

        tc.cookies.clear()
        tc.cookies.set(COOKIE_NAME, bob_cookie)  # still allowed by the domain rule
        assert tc.get("/api/profiles").status_code == 200

    ended = [r for r in audit_records(home) if r["event"] == "session_ended"]
    assert [r["user"] for r in ended] == ["alice@example.com", "alice@example.com"]
    assert all(r["reason"] == "not_allowed" and r["provider"] == "oidc" for r in ended)


def test_session_of_a_removed_provider_ends(issuer: str, home: HermesHome) -> None:
    from hermes_container.dashboard.settings import GithubConfig

    cookie = logged_in_cookie(issuer, home, "alice")
    app = app_for(issuer, home, oidc=None, github=GithubConfig("gh-id", "gh-secret"))
    with TestClient(app, follow_redirects=False) as tc:
        tc.cookies.set(COOKIE_NAME, cookie)
        assert tc.get("/api/profiles").json()["error"] == "access_revoked"


def test_github_session_keeps_only_allowlisted_orgs_and_is_rechecked() -> None:
    from hermes_container.dashboard.auth.allowlist import Identity
    from hermes_container.dashboard.auth.gate import SessionAccess

    identity = Identity(
        provider="github",
        subject="42",
        github_login="octocat",
        github_orgs=frozenset({"Acme", "Beta", "private-club"}),
    )
    allowlist = Allowlist.build(github_orgs=["acme", "beta"])
    assert allowlist.allows(identity)
    user = identity.session_user(allowlist.github_orgs)
    assert user["orgs"] == ["acme", "beta"]  # not the memberships nobody asked about
    assert SessionAccess(allowlist, ["github"]).admits(user)
    assert SessionAccess(Allowlist.build(github_orgs=["beta"]), ["github"]).admits(user)
    assert not SessionAccess(Allowlist.build(github_orgs=["other"]), ["github"]).admits(user)
    assert SessionAccess(Allowlist.build(github_users=["OctoCat"]), ["github"]).admits(user)
    assert not SessionAccess(allowlist, ["oidc"]).admits(user)  # provider gone
    assert not SessionAccess(Allowlist.build(allow_any=True), ["github"]).admits({"sub": "42"})


def test_logout_survives_a_restart(issuer: str, home: HermesHome) -> None:
    """Item 2: a copied cookie must not come back to life after a restart."""
    with TestClient(app_for(issuer, home), follow_redirects=False) as tc:
        assert login(tc, "alice").status_code == 303
        copied = tc.cookies.get(COOKIE_NAME)
        token = csrf_of(tc)
        assert tc.post("/auth/logout", data={"csrf_token": token}).status_code == 303

    with TestClient(app_for(issuer, home), follow_redirects=False) as restarted:
        restarted.cookies.set(COOKIE_NAME, copied)
        assert restarted.get("/api/profiles").status_code == 401
        # Logging in after the restart works as before.
        assert login(restarted, "bob").status_code == 303
        assert restarted.get("/api/profiles").status_code == 200
    path = home.root / REVOKED
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(json.loads(path.read_text())["revoked"]) == 1


def test_corrupt_revocation_file_fails_closed(
    issuer: str, home: HermesHome, caplog: pytest.LogCaptureFixture
) -> None:
    """Unknown revocations: every existing session ends (nobody is locked out)."""
    cookie = logged_in_cookie(issuer, home, "alice")
    path = home.root / REVOKED
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"version": 1, "generation": ')  # torn or tampered
    with caplog.at_level(logging.WARNING, "hermes.dashboard"):
        app = app_for(issuer, home)
    with TestClient(app, follow_redirects=False) as tc:
        tc.cookies.set(COOKIE_NAME, cookie)
        answer = tc.get("/api/profiles")
        assert answer.status_code == 401 and answer.json()["error"] == "session_expired"
        tc.cookies.clear()
        assert login(tc, "alice").status_code == 303  # logging in again works
        assert tc.get("/api/profiles").status_code == 200
    assert "could not be trusted (corrupt)" in caplog.text
    assert path.with_name("revoked.json.corrupt").exists()
    assert json.loads(path.read_text())["version"] == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    reset = [r for r in audit_records(home) if r["event"] == "revocations_reset"]
    assert [r["reason"] for r in reset] == ["corrupt"]


def test_revocation_store_prunes_bounds_and_survives_torn_writes(tmp_path: Path) -> None:
    from hermes_container.dashboard.auth.revocations import RevocationStore

    path = tmp_path / "dashboard" / "revoked.json"
    now = [1000.0]
    store = RevocationStore.load(path, max_entries=3, clock=lambda: now[0])
    assert store.reset_reason == "missing"
    first_generation = store.generation
    assert store.revoke("a", 1500.0) and store.revoke("b", 2500.0)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700

    # A restart between writing the temp file and the rename: the old file is whole,
    # the orphan is removed.
    orphan = path.parent / ".revoked.json.0123456789ab.tmp"
    orphan.write_text('{"version": 1, "gen')
    now[0] = 2000.0  # "a" has expired by now
    again = RevocationStore.load(path, max_entries=3, clock=lambda: now[0])
    assert again.reset_reason is None and again.generation == first_generation
    assert not orphan.exists()
    assert not again.is_revoked("a") and again.is_revoked("b")
    assert set(json.loads(path.read_text())["revoked"]) == {"b"}  # pruned on disk too

    # Full: rather than forget a revocation, end every session (new generation).
    resets: list[str] = []
    again.on_reset = resets.append
    for sid in ("c", "d", "e"):
        again.add(sid, 3000.0)
    assert resets == ["overflow"] and again.generation != first_generation
    assert len(again) == 1 and again.is_revoked("e")


def test_unwritable_revocations_end_sessions_at_each_restart(tmp_path: Path) -> None:
    from hermes_container.dashboard.auth.revocations import RevocationStore

    path = tmp_path / "dashboard" / "revoked.json"
    first = RevocationStore.load(path)
    os.remove(path)
    path.parent.rmdir()
    path.parent.write_text("not a directory")  # works as root too, unlike chmod
    second = RevocationStore.load(path)
    assert second.reset_reason == "unreadable"
    third = RevocationStore.load(path)
    assert len({first.generation, second.generation, third.generation}) == 3


def test_sessions_expire_by_generation_not_by_clock(issuer: str, home: HermesHome) -> None:
    """A login right after a start that reset the list is valid (no same-second race)."""
    (home.root / REVOKED).parent.mkdir(parents=True, exist_ok=True)
    (home.root / REVOKED).write_text("[]")
    with TestClient(app_for(issuer, home), follow_redirects=False) as tc:
        assert login(tc, "alice").status_code == 303
        assert tc.get("/api/profiles").status_code == 200
