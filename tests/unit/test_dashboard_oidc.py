"""OAuth gate against a REAL OIDC provider (oidc-provider-mock, authlib) on 127.0.0.1.

discovery -> login -> callback -> gated API -> logout, plus wrong state, replayed
code, a user outside the allowlist, an expired session, CSRF, open redirects and an
audit log that never contains codes, states, cookies or secrets.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.testclient import TestClient

from hermes_container.dashboard.app import create_app
from hermes_container.dashboard.auth.allowlist import Allowlist
from hermes_container.dashboard.auth.audit import PREAUTH_FILE
from hermes_container.dashboard.auth.session import COOKIE_NAME
from hermes_container.dashboard.settings import DashboardSettings, OidcConfig
from hermes_container.events.ledger import Ledger
from hermes_container.home import HermesHome
from tests.unit.dashboard_support import FakeManager, oidc_provider

CLIENT_SECRET = "client-secret-DO-NOT-LOG-42"
USERS: list[tuple[str, dict[str, Any]]] = [
    ("alice", {"email": "alice@example.com", "email_verified": True, "name": "Alice"}),
    ("bob", {"email": "bob@corp.example", "email_verified": True}),
    ("mallory", {"email": "mallory@evil.example", "email_verified": True}),
    ("eve", {"email": "eve@corp.example", "email_verified": False}),
    # Addresses the IdP does not vouch for, each inside the domain allowlist:
    ("nora", {"email": "nora@corp.example"}),  # no email_verified claim at all
    ("sam", {"email": "sam@corp.example", "email_verified": "false"}),  # a string
    ("tia", {"email": "tia@corp.example", "email_verified": "true"}),  # a string, too
    ("nils", {"email": "nils@corp.example", "email_verified": None}),
]


@pytest.fixture(scope="module")
def issuer() -> Iterator[str]:
    with oidc_provider(USERS) as url:
        yield url


def make_settings(issuer: str, **overrides: Any) -> DashboardSettings:
    values: dict[str, Any] = {
        "host": "0.0.0.0",
        "mode": "oauth",
        "oidc": OidcConfig(issuer, "hermes-dashboard", CLIENT_SECRET),
        "allowlist": Allowlist.build(emails=["alice@example.com"], domains=["corp.example"]),
        "public_url": "http://testserver",  # where TestClient's requests go
        **overrides,
    }
    return DashboardSettings(**values)


@pytest.fixture
def manager() -> FakeManager:
    return FakeManager(["default", "alpha"])


@pytest.fixture
def client(issuer: str, home: HermesHome, manager: FakeManager) -> Iterator[TestClient]:
    app = create_app(make_settings(issuer), home=home, manager=manager)
    with TestClient(app, follow_redirects=False) as tc:
        yield tc


def start_login(client: TestClient, next_path: str = "/") -> str:
    """Our /auth/login redirect; returns the provider's authorize URL."""
    response = client.get("/auth/login/oidc", params={"next": next_path})
    assert response.status_code == 302, response.text
    return response.headers["location"]


def authorize_at_provider(authorize_url: str, sub: str) -> str:
    """Play the user at the provider's form; returns our callback URL (path + query)."""
    response = httpx.post(authorize_url, data={"sub": sub}, follow_redirects=False, timeout=10)
    assert response.status_code == 302, response.text
    parts = urlsplit(response.headers["location"])
    assert parts.path == "/auth/callback/oidc"
    return f"{parts.path}?{parts.query}"


def login(client: TestClient, sub: str = "alice", next_path: str = "/") -> Any:
    callback = authorize_at_provider(start_login(client, next_path), sub)
    return client.get(callback)


def csrf_of(client: TestClient, path: str = "/") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.status_code
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
    assert match
    return match.group(1)


def audit_records(home: HermesHome) -> list[dict[str, Any]]:
    """The security log (logins, logouts, denials, gateway actions), oldest first."""
    if not home.auth_log.exists():
        return []
    return [json.loads(line) for line in home.auth_log.read_text().splitlines()]


def preauth_records(home: HermesHome) -> list[dict[str, Any]]:
    """The pre-auth log (login_start, login_failure, suppressed), oldest first."""
    path = home.logs_dir / PREAUTH_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_authorize_request_uses_pkce_state_and_nonce(client: TestClient) -> None:
    url = start_login(client)
    query = parse_qs(urlsplit(url).query)
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) >= 43
    assert query["state"][0] and query["nonce"][0]
    assert "openid" in query["scope"][0].split()
    assert query["redirect_uri"] == ["http://testserver/auth/callback/oidc"]


def test_full_flow_login_api_action_logout(
    client: TestClient, home: HermesHome, manager: FakeManager
) -> None:
    denied = client.get("/api/profiles")
    assert denied.status_code == 401
    assert denied.json()["error"] == "unauthenticated"
    assert denied.json()["login_url"].startswith("/login?next=")
    assert client.get("/profiles/alpha").headers["location"] == "/login?next=/profiles/alpha"

    done = login(client, "alice", "/profiles/alpha")
    assert done.status_code == 303
    assert done.headers["location"] == "/profiles/alpha"
    cookie = done.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie

    profiles = client.get("/api/profiles")
    assert profiles.status_code == 200
    assert [p["name"] for p in profiles.json()["profiles"]] == ["default", "alpha"]
    assert "alice@example.com" in client.get("/").text

    # POST without the CSRF token is refused; with it the same manager is driven.
    assert client.post("/api/profiles/alpha/gateway/stop").status_code == 403
    token = csrf_of(client, "/profiles/alpha")
    stopped = client.post("/api/profiles/alpha/gateway/stop", headers={"X-CSRF-Token": token})
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["status"]["gateway_state"] == "stopped"
    assert manager.calls == [("stop", "alpha")]
    assert manager.actors == ["dashboard:alice@example.com"]
    ledger = Ledger(home.root)
    try:
        copied = [(e.kind, e.actor, e.profile, e.data) for e in ledger.iterate(0)]
    finally:
        ledger.close()
    assert ("dashboard.action", "dashboard:alice@example.com", "alpha") == copied[-1][:3]
    assert copied[-1][3] == {"action": "stop", "result": "ok"}
    logins = [c for c in copied if c[0] == "dashboard.login"]
    assert len(logins) == 1 and logins[0][1] == "dashboard:alice@example.com"
    evil = client.post(
        "/api/profiles/alpha/gateway/start",
        headers={"X-CSRF-Token": token, "Origin": "http://evil.example"},
    )
    assert evil.status_code == 403

    session_cookie = client.cookies.get(COOKIE_NAME)
    assert client.post("/auth/logout").status_code == 403  # logout needs CSRF too
    out = client.post("/auth/logout", data={"csrf_token": token})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert f"{COOKIE_NAME}=;" in out.headers["set-cookie"]
    assert "cookies" in out.headers["clear-site-data"]
    assert client.get("/api/profiles").status_code == 401
    # A copy of the old cookie is dead too (its session id was revoked).
    client.cookies.set(COOKIE_NAME, session_cookie)
    assert client.get("/api/profiles").status_code == 401

    events = [r["event"] for r in audit_records(home)]
    assert events == ["login_success", "gateway_action", "logout"]
    assert [r["event"] for r in preauth_records(home)] == ["login_start"]
    action = audit_records(home)[1]
    assert action["user"] == "alice@example.com" and action["action"] == "stop"


def test_wrong_state_is_refused_and_audited(client: TestClient, home: HermesHome) -> None:
    callback = authorize_at_provider(start_login(client), "alice")
    tampered = re.sub(r"state=[^&]+", "state=forged-state-value", callback)
    response = client.get(tampered)
    assert response.status_code == 400
    assert client.get("/api/profiles").status_code == 401
    failure = preauth_records(home)[-1]
    assert failure["event"] == "login_failure" and failure["reason"] == "mismatching_state"


def test_replayed_code_is_refused(issuer: str, home: HermesHome, manager: FakeManager) -> None:
    app = create_app(make_settings(issuer), home=home, manager=manager)
    with TestClient(app, follow_redirects=False) as first:
        callback = authorize_at_provider(start_login(first), "alice")
        pre_login_cookie = first.cookies.get(COOKIE_NAME)
        assert first.get(callback).status_code == 303
        # Same browser again: the state was consumed with the first use.
        assert first.get(callback).status_code == 400
    with TestClient(app, follow_redirects=False) as attacker:
        # Even with the pre-login cookie (state still inside), the provider refuses the code.
        attacker.cookies.set(COOKIE_NAME, pre_login_cookie)
        assert attacker.get(callback).status_code == 400
        assert attacker.get("/api/profiles").status_code == 401
    reasons = [r.get("reason") for r in preauth_records(home) if r["event"] == "login_failure"]
    assert reasons == ["mismatching_state", "invalid_grant"]


def test_user_outside_allowlist_gets_403_and_audit(client: TestClient, home: HermesHome) -> None:
    response = login(client, "mallory")
    assert response.status_code == 403
    assert "not allowed" in response.text
    assert client.get("/api/profiles").status_code == 401
    denied = audit_records(home)[-1]
    assert denied["event"] == "login_denied"
    assert denied["user"] == "mallory@evil.example"


def test_domain_allowlist_and_unverified_email(client: TestClient) -> None:
    assert login(client, "eve").status_code == 403  # email_verified: false never matches
    assert login(client, "bob").status_code == 303
    assert client.get("/api/profiles").status_code == 200


@pytest.mark.parametrize(
    ("sub", "status"),
    [("nora", 403), ("sam", 403), ("eve", 403), ("tia", 403), ("nils", 403), ("bob", 303)],
)
def test_email_counts_only_when_email_verified_is_true(
    client: TestClient, home: HermesHome, sub: str, status: int
) -> None:
    """Missing, "false", false (and "true", null) never pass the domain allowlist."""
    assert login(client, sub).status_code == status
    if status == 403:
        assert client.get("/api/profiles").status_code == 401
        denied = audit_records(home)[-1]
        assert denied["event"] == "login_denied"
        assert denied["user"] == sub  # shown by subject: the address was not taken
    else:
        assert client.get("/api/profiles").status_code == 200


@pytest.mark.parametrize(
    ("sub", "status"), [("nora", 303), ("eve", 403), ("sam", 403), ("nils", 403), ("bob", 303)]
)
def test_missing_claim_opt_out_covers_only_a_missing_claim(
    issuer: str, home: HermesHome, sub: str, status: int
) -> None:
    oidc = OidcConfig(issuer, "hermes-dashboard", CLIENT_SECRET, allow_missing_email_verified=True)
    app = create_app(make_settings(issuer, oidc=oidc), home=home, manager=None)
    with TestClient(app, follow_redirects=False) as tc:
        assert login(tc, sub).status_code == status
        assert tc.get("/api/profiles").status_code == (200 if status == 303 else 401)


def test_rebinding_host_cannot_act_with_a_valid_session(
    client: TestClient, manager: FakeManager
) -> None:
    """A DNS-rebinding page (Host and Origin both evil.example) is refused before CSRF."""
    assert login(client, "alice").status_code == 303
    token = csrf_of(client)
    evil = client.post(
        "/api/profiles/alpha/gateway/stop",
        headers={"Host": "evil.example", "Origin": "http://evil.example", "X-CSRF-Token": token},
    )
    assert evil.status_code == 400
    assert manager.calls == []


def test_expired_session_says_session_expired(issuer: str, home: HermesHome) -> None:
    app = create_app(make_settings(issuer, session_idle_ttl=2), home=home, manager=None)
    with TestClient(app, follow_redirects=False) as tc:
        assert login(tc).status_code == 303
        assert tc.get("/api/profiles").status_code == 200
        time.sleep(3.5)
        response = tc.get("/api/profiles")
        assert response.status_code == 401
        assert response.json()["error"] == "session_expired"
        assert response.json()["login_url"].startswith("/login?next=")
        page = tc.get("/profiles/alpha")
        assert page.headers["location"] == "/login?next=/profiles/alpha&expired=1"


def test_active_session_is_refreshed(issuer: str, home: HermesHome) -> None:
    app = create_app(make_settings(issuer, session_idle_ttl=4), home=home, manager=None)
    with TestClient(app, follow_redirects=False) as tc:
        assert login(tc).status_code == 303
        for _ in range(3):  # 6 s of activity on a 4 s idle timeout
            time.sleep(2)
            assert tc.get("/api/profiles").status_code == 200
    assert any(r["event"] == "refresh" for r in audit_records(home))


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example",
        "/\\evil.example",
        "/%2f%2fevil.example",
        "http:/evil.example",
        "javascript:alert(1)",
        "/auth/logout",
        " /x",
    ],
)
def test_open_redirect_next_is_rejected(client: TestClient, target: str) -> None:
    callback = authorize_at_provider(start_login(client, target), "alice")
    assert client.get(callback).headers["location"] == "/"
    page = client.get("/login", params={"next": target})
    assert page.headers["location"] == "/"


def test_status_reveals_nothing_sensitive_with_gate_on(
    client: TestClient, home: HermesHome
) -> None:
    body = client.get("/api/status")
    assert body.status_code == 200
    data = body.json()
    assert data["auth_required"] is True and data["auth_providers"] == ["oidc"]
    assert set(data) == {
        "version",
        "health",
        "profiles",
        "desired_running",
        "gateways",
        "auth_required",
        "auth_mode",
        "auth_providers",
    }
    text = body.text
    for leak in (str(home.root), "8642", "8643", "alpha", "pid", "port", "secret"):
        assert leak not in text
    providers = client.get("/api/auth/providers").json()["providers"]
    assert providers == [
        {"name": "oidc", "label": "Single sign-on (OIDC)", "login_url": "/auth/login/oidc"}
    ]


def test_audit_log_never_holds_secrets(issuer: str, home: HermesHome, manager: FakeManager) -> None:
    app = create_app(make_settings(issuer), home=home, manager=manager)
    secrets_seen: list[str] = [CLIENT_SECRET]
    with TestClient(app, follow_redirects=False) as tc:
        authorize = start_login(tc)
        query = parse_qs(urlsplit(authorize).query)
        secrets_seen += [query["state"][0], query["nonce"][0], query["code_challenge"][0]]
        callback = authorize_at_provider(authorize, "alice")
        secrets_seen.append(parse_qs(urlsplit(callback).query)["code"][0])
        tc.get(callback)
        secrets_seen.append(tc.cookies.get(COOKIE_NAME))
        token = csrf_of(tc)
        secrets_seen.append(token)
        tc.post("/api/profiles/alpha/gateway/restart", headers={"X-CSRF-Token": token})
        tc.get(re.sub(r"state=[^&]+", "state=x", callback))
        login(tc, "mallory")
        tc.post("/auth/logout", data={"csrf_token": token})
    text = home.auth_log.read_text() + (home.logs_dir / PREAUTH_FILE).read_text()
    assert text.count("\n") >= 6
    for secret in secrets_seen:
        assert secret and secret not in text
    for record in audit_records(home) + preauth_records(home):
        assert not {"code", "state", "token", "cookie", "id_token", "access_token"} & set(record)


def test_cookie_secure_only_behind_trusted_proxy(issuer: str, home: HermesHome) -> None:
    from hermes_container.dashboard.auth.proxy import TrustedProxies, parse_networks

    settings = make_settings(issuer, proxies=TrustedProxies(parse_networks(["10.0.0.0/8"])))
    app = create_app(settings, home=home, manager=None)
    with TestClient(app, follow_redirects=False, client=("10.1.2.3", 5000)) as proxied:
        response = proxied.get("/login", headers={"X-Forwarded-Proto": "https"})
        assert "Secure" in response.headers["set-cookie"]
    with TestClient(app, follow_redirects=False, client=("192.0.2.7", 5000)) as direct:
        response = direct.get("/login", headers={"X-Forwarded-Proto": "https"})
        assert "Secure" not in response.headers["set-cookie"]


def test_id_token_nonce_is_checked(issuer: str, home: HermesHome) -> None:
    """Swap the nonce remembered for this login: authlib must reject the ID token."""
    from hermes_container.dashboard.auth.session import SessionCodec

    settings = make_settings(issuer)
    app = create_app(settings, home=home, manager=None)
    codec = SessionCodec(settings.secret_key)
    with TestClient(app, follow_redirects=False) as tc:
        callback = authorize_at_provider(start_login(tc), "alice")
        data, status, _ = codec.loads(tc.cookies.get(COOKIE_NAME))
        assert status == "ok"
        (key,) = [k for k in data if k.startswith("_state_oidc_")]
        data[key]["data"]["nonce"] = "not-the-nonce-we-sent"
        # Replace, not add: the jar's copy from the server may carry a domain of its own,
        # and the client would send that one first (it does under httpx2).
        tc.cookies.clear()
        tc.cookies.set(COOKIE_NAME, codec.dumps(data))
        assert tc.get(callback).status_code == 400
        assert tc.get("/api/profiles").status_code == 401
    failure = preauth_records(home)[-1]
    assert failure["event"] == "login_failure"
    assert failure["reason"] == "invalid_response:InvalidClaimError", failure
