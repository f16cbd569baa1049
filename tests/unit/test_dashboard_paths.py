"""Table-driven: hundreds of path variants against BOTH auth middlewares.

Only the literal allowlisted targets may get through without credentials; every
encoded, traversal, case, parameter, slash or NUL variant must be denied.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from hermes_container.dashboard.app import create_app
from hermes_container.dashboard.auth.allowlist import Allowlist
from hermes_container.dashboard.auth.audit import AuditLog
from hermes_container.dashboard.auth.gate import OAuthGateMiddleware, SessionAccess
from hermes_container.dashboard.auth.proxy import TrustedProxies
from hermes_container.dashboard.auth.public_paths import PUBLIC_API_PATHS, PUBLIC_PAGE_PATHS
from hermes_container.dashboard.auth.session import SessionCodec
from hermes_container.dashboard.auth.token_mode import TokenAuthMiddleware
from hermes_container.dashboard.settings import DashboardSettings, OidcConfig
from hermes_container.home import HermesHome
from tests.unit.dashboard_support import (
    FakeManager,
    Sentinel,
    call_asgi,
    clean_env,
    dashboard_process,
    raw_request,
    scope_for,
)

# Targets that are public as written (query strings do not change the path).
PUBLIC_TARGETS = frozenset(
    {
        "/api/status",
        "/api/status?verbose=1",
        "/api/auth/providers",
        "/login",
        "/login?next=/profiles/default",
        "/static/app.js",
        "/static/app.css",
        "/auth/login/oidc",
        "/auth/callback/oidc?code=x&state=y",
    }
)
# Pages the loopback mode serves without the header (they carry the token).
TOKEN_PAGES = frozenset(
    {
        "/",
        "/kanban",
        "/jobs",
        "/events",
        "/playground",
        "/sessions",
        "/logs/boot",
        "/logs/audit",
        "/profiles/default",
        "/profiles/alpha",
    }
)

GATED = [
    "/api/profiles",
    "/api/profiles/default",
    "/api/profiles/default/logs",
    "/api/profiles/default/gateway/stop",
    "/api/session",
]
PUBLIC_BASES = [
    "/api/status",
    "/api/auth/providers",
    "/static/app.js",
    "/auth/login/oidc",
    "/login",
]


def _traversals() -> list[str]:
    out = []
    for base, target in itertools.product(PUBLIC_BASES, GATED):
        rel = target.removeprefix("/api/") if base.startswith("/api/") else target.lstrip("/")
        up = "/.." * base.count("/")
        out += [
            f"{base}/../{rel}",
            f"{base}{up}{target}",
            f"{base}%2f..%2f{rel}",
            f"{base}%2F..%2F{rel}",
            f"{base}/%2e%2e/{rel}",
            f"{base}%252f..%252f{rel}",
            f"{base};/../{rel}",
        ]
    return out


def _mangles(path: str) -> list[str]:
    return [
        "/" + path,
        "//" + path.lstrip("/"),
        path.upper(),
        path.title(),
        path + "/",
        path + "//",
        path + ";x",
        path + ";jsessionid=1",
        path + "%00",
        path + "%2500",
        path + "\x00",
        path + "%20",
        path + ".",
        path + "/.",
        path + "%2f",
        path.replace("/", "%2f"),
        path.replace("/", "%2F", 2),
        path.replace("a", "%61"),
        path.replace("s", "%73"),
        path.replace("/", "\\"),
        path.replace("/", "/./"),
        "/." + path,
        path.replace("s", "\u017f"),  # LATIN SMALL LETTER LONG S, folds to "s"
        path + "#",
        path + "%23",
        path + "\t",
        " " + path,
    ]


def corpus() -> list[str]:
    items = [*PUBLIC_TARGETS, *TOKEN_PAGES, *GATED]
    items += _traversals()
    for path in [*PUBLIC_BASES, *GATED, "/", "/profiles/default"]:
        items += _mangles(path)
    items += [
        "/api/status%2f..%2fprofiles",
        "/static/..%2fapi/profiles",
        "/static/%2e%2e%2fapi%2fprofiles",
        "/static/..%5capi%5cprofiles",
        "/static/.%2e/api/profiles",
        "/auth/..%2f..%2fapi%2fprofiles",
        "/auth",
        "/auth/",
        "/authx/login/oidc",
        "/auth%2flogin/oidc",
        "/static",
        "/static/",
        "/staticx/app.js",
        "/static%2fapp.js",
        "/api",
        "/api/",
        "/api/statusx",
        "/api/status.json",
        "/api/status/x",
        "/api/statu",
        "/api/auth/providers/../../profiles",
        "/api/auth",
        "/api/status%C0%AE%C0%AE/profiles",
        "/api/status%c0%af..%c0%afprofiles",
        "/api/\uff53tatus",
        "/api/profiles?/api/status",
        "/api/profiles#/api/status",
        "/login/../api/profiles",
        "/login%2f..%2fapi%2fprofiles",
        "/login/",
        "/LOGIN",
        "/favicon.ico",
        "/docs",
        "/openapi.json",
        "/redoc",
        "/profiles/default/../../api/profiles",
        "/profiles/%2e%2e/api/profiles",
        "/profiles/Default",
        "/profiles/..",
        "/logs/../api/profiles",
        "/%2e/api/status",
        "/api/./status",
        "/api//status",
        "/./api/status",
        "*",
        "",
    ]
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)


CORPUS = corpus()


def test_corpus_is_big_enough() -> None:
    assert len(CORPUS) >= 200, len(CORPUS)
    assert {"/api/status", "/api/auth/providers"} <= PUBLIC_API_PATHS
    assert "/login" in PUBLIC_PAGE_PATHS


def _plain(path: str) -> bool:
    """Independent oracle: nothing a server or proxy could decode, fold or normalise."""
    return (
        path.startswith("/")
        and path.isascii()
        and all(c.isalnum() or c in "/_.~-" for c in path)
        and "//" not in path
        and "/." not in path
        and not path.endswith("/")
    )


def expected_public(target: str) -> bool:
    path = target.split("?", 1)[0]
    if target in PUBLIC_TARGETS:
        return True
    return _plain(path) and path.startswith(("/static/", "/auth/"))


def _run(app: object, target: str, **kw: object) -> int:
    status, _, _ = asyncio.run(call_asgi(app, scope_for(target, **kw)))  # type: ignore[arg-type]
    return status


def _oauth_gate(app: Sentinel, tmp_path: Path) -> OAuthGateMiddleware:
    return OAuthGateMiddleware(
        app,
        access=SessionAccess(Allowlist.build(emails=["alice@example.com"]), ["oidc"]),
        codec=SessionCodec(b"k" * 32),
        audit=AuditLog(tmp_path / "dashboard-auth.log"),
        proxies=TrustedProxies(),
    )


@pytest.mark.parametrize("target", CORPUS)
def test_oauth_gate(target: str, tmp_path: Path) -> None:
    sentinel = Sentinel()
    status = _run(_oauth_gate(sentinel, tmp_path), target)
    expected = expected_public(target)
    assert bool(sentinel.reached) == expected, (target, status)
    if not expected:
        assert status in (401, 303)


@pytest.mark.parametrize("target", CORPUS)
def test_token_middleware(target: str) -> None:
    sentinel = Sentinel()
    middleware = TokenAuthMiddleware(sentinel, token="s3cret-token")
    status = _run(middleware, target, headers=[(b"host", b"127.0.0.1:9119")])
    expected_open = expected_public(target) or target in TOKEN_PAGES
    assert bool(sentinel.reached) == expected_open, (target, status)
    if not expected_open:
        assert status == 401


@pytest.mark.parametrize("target", ["/", "/profiles/default", "/logs/boot"])
def test_token_pages_are_get_only(target: str) -> None:
    sentinel = Sentinel()
    middleware = TokenAuthMiddleware(sentinel, token="s3cret-token")
    status = _run(middleware, target, method="POST", headers=[(b"host", b"127.0.0.1")])
    assert status == 401 and not sentinel.reached


@pytest.mark.parametrize(
    "target", ["/api/profiles", "/api/status%2f..%2fprofiles", "//api/profiles"]
)
def test_token_unlocks_everything_and_wrong_token_nothing(target: str) -> None:
    sentinel = Sentinel()
    middleware = TokenAuthMiddleware(sentinel, token="s3cret-token")
    host = (b"host", b"localhost:9119")
    assert _run(middleware, target, headers=[host, (b"x-hermes-session-token", b"nope")]) == 401
    assert not sentinel.reached
    ok = _run(middleware, target, headers=[host, (b"x-hermes-session-token", b"s3cret-token")])
    assert ok == 200 and sentinel.reached


def _oauth_settings() -> DashboardSettings:
    return DashboardSettings(
        host="0.0.0.0",
        mode="oauth",
        oidc=OidcConfig("http://127.0.0.1:9", "client", "secret"),
        allowlist=Allowlist.build(emails=["alice@example.com"]),
        public_url="http://127.0.0.1:9119",
    )


@pytest.mark.parametrize("mode", ["oauth", "token"])
def test_full_app_never_serves_gated_content(home: HermesHome, mode: str) -> None:
    settings = _oauth_settings() if mode == "oauth" else DashboardSettings(session_token="tkn")
    app = create_app(settings, home=home, manager=FakeManager(["default", "alpha"]))
    open_targets = PUBLIC_TARGETS | (TOKEN_PAGES if mode == "token" else frozenset())
    for target in CORPUS:
        if target in open_targets or expected_public(target):
            continue
        status, _, body = asyncio.run(
            call_asgi(app, scope_for(target, headers=[(b"host", b"127.0.0.1:9119")]))
        )
        assert status in (401, 303), (mode, target, status)
        assert b"alpha" not in body and b"4242" not in body, (mode, target)
    status, _, body = asyncio.run(
        call_asgi(app, scope_for("/api/status", headers=[(b"host", b"127.0.0.1:9119")]))
    )
    assert status == 200 and b"auth_required" in body


LIVE_SAMPLE = [
    "/api/status/../profiles",
    "/api/status%2f..%2fprofiles",
    "//api/profiles",
    "/API/STATUS",
    "/api/status;x",
    "/static/..%2fapi/profiles",
    "/static/../api/profiles",
    "/api/status/",
    "/api/status%00",
    "/api/status%252f..%252fprofiles",
    "/api/profiles",
    "/api/profiles/default",
    "/api/profiles/default/logs",
    "/auth/../api/profiles",
    "/api/auth/providers/../../profiles",
    "/%61pi/profiles",
    "/api/status/%2e%2e/profiles",
    "/api//profiles",
    "/api/./profiles",
    "/api/profiles;/api/status",
    "/api/profiles?/api/status",
    "/login/../api/profiles",
    "/api/status\\..\\profiles",
]


@pytest.mark.parametrize("mode", ["token", "oauth"])
def test_live_server_raw_paths(home: HermesHome, mode: str) -> None:
    env = clean_env(HERMES_HOME=str(home.root))
    if mode == "oauth":
        env.update(
            HERMES_DASHBOARD_OIDC_ISSUER="http://127.0.0.1:9",
            HERMES_DASHBOARD_OIDC_CLIENT_ID="client",
            HERMES_DASHBOARD_OIDC_CLIENT_SECRET="secret",
            HERMES_DASHBOARD_ALLOWED_EMAILS="alice@example.com",
        )
    with dashboard_process(env) as (port, _proc):
        status, body = raw_request(port, b"/api/status")
        assert status == 200 and b'"auth_required":true' in body
        for target in LIVE_SAMPLE:
            status, body = raw_request(port, target.encode())
            # 400 is uvicorn refusing a malformed request line; still never the route.
            assert status in (400, 401, 303), (mode, target, status)
            assert b"8643" not in body and b'"profiles":[' not in body, (mode, target)
