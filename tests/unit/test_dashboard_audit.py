"""The audit trail under unauthenticated load, against a REAL OIDC provider.

Anyone can hit the login and callback URLs; that must neither push real security
events off the audit page nor put text of the client's choosing into the logs.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from hermes_container.dashboard.app import create_app
from hermes_container.home import HermesHome
from tests.unit.dashboard_support import FakeManager, oidc_provider
from tests.unit.test_dashboard_oidc import audit_records, login, make_settings

PREAUTH_LOG = "dashboard-preauth.log"  # spelled out: the old code has no such log
ATTACKER = "ATTACKER-TEXT"
USERS = [("alice", {"email": "alice@example.com", "email_verified": True})]


@pytest.fixture(scope="module")
def issuer() -> Iterator[str]:
    with oidc_provider(USERS) as url:
        yield url


def all_log_text(home: HermesHome) -> str:
    return "".join(p.read_text() for p in home.logs_dir.glob("dashboard-*.log*"))


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def junk(i: int) -> tuple[str, dict[str, str]]:
    """Unauthenticated requests that each used to write an audit record."""
    text = f"{ATTACKER}-{i}<script>alert({i})</script>\u202e"
    if i % 2:
        return "/auth/callback/oidc", {"error": text, "error_description": text}
    return "/auth/login/oidc", {"next": f"/{ATTACKER}-{i}"}


def test_junk_flood_does_not_hide_a_real_login(issuer: str, home: HermesHome) -> None:
    app = create_app(make_settings(issuer), home=home, manager=FakeManager(["default"]))
    with TestClient(app, follow_redirects=False, client=("192.0.2.10", 4000)) as alice:
        assert login(alice, "alice").status_code == 303
        with TestClient(app, follow_redirects=False, client=("203.0.113.66", 5000)) as attacker:
            for i in range(1000):
                path, params = junk(i)
                assert attacker.get(path, params=params).status_code in (302, 400)
        page = alice.get("/logs/audit")
        assert page.status_code == 200
    security = page.text.split('id="preauth-events"')[0]
    assert "event-login_success" in security  # the real login is still on the page
    assert ATTACKER not in page.text

    logs = all_log_text(home)
    assert ATTACKER not in logs and "script" not in logs and "\\u202e" not in logs
    assert [r["event"] for r in audit_records(home)] == ["login_success"]
    noise = records(home.logs_dir / PREAUTH_LOG)
    written = [r for r in noise if r["event"] != "suppressed" and r["ip"] == "203.0.113.66"]
    assert len(written) <= 20  # a burst, then only counted
    (aggregate,) = [r for r in noise if r["event"] == "suppressed"]
    assert aggregate["client"] == "203.0.113.66" and aggregate["of"] == "preauth"
    assert aggregate["count"] + len(written) == 1000
    failures = {r["reason"] for r in noise if r["event"] == "login_failure"}
    assert failures == {"idp_error"}


@pytest.mark.parametrize(
    ("error", "recorded"),
    [
        ("access_denied", "access_denied"),
        ("consent_required", "consent_required"),
        ("invalid_response:ValueError", "invalid_response:ValueError"),
        ("invalid_response:Evil Text", "invalid_response"),
        ("x" * 5000, "idp_error"),
    ],
)
def test_idp_error_parameter_is_mapped_to_a_fixed_code(
    issuer: str, home: HermesHome, error: str, recorded: str
) -> None:
    app = create_app(make_settings(issuer), home=home, manager=None)
    with TestClient(app, follow_redirects=False) as tc:
        response = tc.get("/auth/callback/oidc", params={"error": error})
        assert response.status_code == 400
    both = records(home.auth_log) + records(home.logs_dir / PREAUTH_LOG)
    (failure,) = [r for r in both if r["event"] == "login_failure"]
    assert failure["reason"] == recorded


def test_reason_codes_are_a_closed_set() -> None:
    from hermes_container.dashboard.auth.reasons import KNOWN, reason_code

    assert reason_code("mismatching_state") == "mismatching_state"
    assert reason_code("invalid_grant") == "invalid_grant"
    assert reason_code("invalid_response:InvalidClaimError") == "invalid_response:InvalidClaimError"
    for hostile in ("", "Robert'); DROP", "access_denied ", "invalid_response:", None, 42):
        assert reason_code(hostile) in KNOWN | {"idp_error", "invalid_response"}
    assert reason_code("<b>hi</b>") == "idp_error"


def test_limiter_bounds_one_client_and_many() -> None:
    from hermes_container.dashboard.auth.ratelimit import OTHERS, ClientLimiter, client_key

    now = [0.0]
    limiter = ClientLimiter(
        rate=1.0, burst=3, global_rate=10.0, global_burst=50, max_clients=100,
        clock=lambda: now[0], wall=lambda: 1_700_000_000.0,
    )  # fmt: skip
    assert [limiter.allow("a") for _ in range(5)] == [True, True, True, False, False]
    now[0] += 1.0  # one token back
    assert limiter.allow("a") and not limiter.allow("a")
    (pending,) = limiter.drain()
    assert (pending.key, pending.count) == ("a", 3)
    assert limiter.drain() == []

    # 5000 addresses at once: the global bucket caps what is written, and the
    # aggregates stay bounded by the table size however many addresses there are.
    allowed = sum(limiter.allow(f"10.0.{i // 250}.{i % 250}") for i in range(5000))
    assert allowed <= 50
    aggregates = limiter.drain()
    assert len(aggregates) <= 101 and aggregates[-1].key == OTHERS
    assert allowed + sum(a.count for a in aggregates) == 5000

    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2")
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_key("not-an-ip") == client_key(None) == "unknown"


def test_login_denials_are_rate_limited_in_the_security_log(tmp_path: Path) -> None:
    from hermes_container.dashboard.auth.audit import AuditLog

    audit = AuditLog(tmp_path / "logs" / "dashboard-auth.log")
    audit.write("login_success", user="alice@example.com", ip="192.0.2.10")
    for i in range(500):
        audit.client_event("login_denied", "198.51.100.7", security=True, user=f"u{i}@x.example")
    audit.close()
    security = records(tmp_path / "logs" / "dashboard-auth.log")
    assert security[0]["event"] == "login_success"
    assert 1 < len(security) <= 6
    (aggregate,) = records(tmp_path / "logs" / PREAUTH_LOG)
    assert aggregate["of"] == "login_denied" and aggregate["count"] == 501 - len(security)


def test_audit_files_are_private(tmp_path: Path) -> None:
    from hermes_container.dashboard.auth.audit import AuditLog

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "dashboard-auth.log").write_text("")
    os.chmod(logs / "dashboard-auth.log", 0o644)  # left by an older version
    old_umask = os.umask(0o022)
    try:
        audit = AuditLog(logs / "dashboard-auth.log", max_bytes=400, backups=2)
        for i in range(20):
            audit.write("refresh", user=f"user{i}@example.com", ip="2001:db8::1")
            audit.client_event("login_start", "192.0.2.1", provider="oidc")
        audit.close()
    finally:
        os.umask(old_umask)
    files = sorted(logs.iterdir())
    assert {p.name for p in files} >= {"dashboard-auth.log", "dashboard-auth.log.1", PREAUTH_LOG}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_ip_field_holds_only_addresses(tmp_path: Path) -> None:
    from hermes_container.dashboard.auth.audit import AuditLog

    audit = AuditLog(tmp_path / "dashboard-auth.log")
    audit.write("logout", user="a@example.com", ip="for=evil\r\nX-Injected: 1")
    audit.write("logout", user="a@example.com", ip="2001:DB8::0001")
    audit.close()
    assert [r["ip"] for r in records(tmp_path / "dashboard-auth.log")] == ["invalid", "2001:db8::1"]


def test_audit_page_shows_security_events_before_noise(issuer: str, home: HermesHome) -> None:
    app = create_app(make_settings(issuer), home=home, manager=None)
    with TestClient(app, follow_redirects=False) as tc:
        assert login(tc, "alice").status_code == 303
        text = tc.get("/logs/audit").text
    security, _, noise = text.partition('id="preauth-events"')
    assert 'id="security-events"' in security and "event-login_success" in security
    assert "event-login_start" in noise
    assert re.search(r"login_start.*login_success", text, re.S) is None
