"""The app factory: routes, templates and the middleware stack for one auth mode.

Middleware order, outermost first: the Host check (OAuth mode; auth/hosts.py), the
/api/status fast path, security headers, the session cookie, the auth gate for the
mode (loopback token, OAuth gate, or none when explicitly insecure), CSRF, and the
loading of the features a request needs (features.py).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import jinja2
from fastapi import FastAPI
from starlette.routing import Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from hermes_container.dashboard import api, features, metrics_endpoint, pages
from hermes_container.dashboard.asgi import Scope
from hermes_container.dashboard.auth import routes as auth_routes
from hermes_container.dashboard.auth.audit import AuditLog
from hermes_container.dashboard.auth.csrf import CsrfMiddleware
from hermes_container.dashboard.auth.gate import OAuthGateMiddleware, SessionAccess
from hermes_container.dashboard.auth.hosts import HostCheckMiddleware
from hermes_container.dashboard.auth.revocations import REVOCATIONS_FILE, RevocationStore
from hermes_container.dashboard.auth.session import SessionCodec, SessionMiddleware
from hermes_container.dashboard.auth.token_mode import TokenAuthMiddleware
from hermes_container.dashboard.context import PACKAGE_DIR, DashboardContext
from hermes_container.dashboard.headers import SecurityHeadersMiddleware
from hermes_container.dashboard.ledger_audit import chain, ledger_observer
from hermes_container.dashboard.manager import ManagerSource, supervision_lookup
from hermes_container.dashboard.public_status import StatusBody, StatusFastPath
from hermes_container.dashboard.read_model import RowsCache, StatusCounts
from hermes_container.dashboard.settings import DashboardSettings
from hermes_container.home import HermesHome
from hermes_container.supervision.protocol import ServiceManager

log = logging.getLogger("hermes.dashboard")


class _Auto:
    """Sentinel: find the manager through hermes_container.supervision.get_manager."""


AUTO = _Auto()


def _no_telemetry() -> dict[str, Any]:
    """Newer FastAPI probes OpenTelemetry on every request; we export none, so skip it."""
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters:
        return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    return {}


def _origin(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(PACKAGE_DIR / "templates")),
        autoescape=True,
        auto_reload=False,
    )
    return Jinja2Templates(env=env)


def _revocations(settings: DashboardSettings, home: HermesHome, audit: AuditLog) -> RevocationStore:
    """Persistent in OAuth mode (the only one with login sessions), else in memory."""
    if settings.mode != "oauth":
        return RevocationStore()
    store = RevocationStore.load(home.root / REVOCATIONS_FILE)
    if store.reset_reason not in (None, "missing"):  # a first start has nothing to report
        audit.write("revocations_reset", reason=store.reset_reason)
    store.on_reset = lambda reason: audit.write("revocations_reset", reason=reason)
    return store


def create_app(
    settings: DashboardSettings,
    *,
    home: HermesHome,
    manager: ServiceManager | _Auto | None = AUTO,
    status_ttl: float = 2.0,
) -> FastAPI:
    audit = AuditLog(home.auth_log)
    codec = SessionCodec(
        settings.secret_key,
        idle_ttl=settings.session_idle_ttl,
        max_age=settings.session_max_age,
        revocations=_revocations(settings, home, audit),
    )
    providers = None
    if settings.oauth_providers:
        from hermes_container.dashboard.auth.providers import LoginProviders

        providers = LoginProviders(settings)
    token_login = None
    if settings.token_login:
        from hermes_container.dashboard.auth.token_login import TokenLogin

        token_login = TokenLogin(home.root)
    basic_login = None
    if settings.basic is not None:
        from hermes_container.dashboard.auth.basic_login import BasicLogin

        basic_login = BasicLogin(settings.basic.user, settings.basic.password_hash)
    managers = (
        ManagerSource(supervision_lookup(home))
        if isinstance(manager, _Auto)
        else ManagerSource.fixed(manager)
    )
    context = DashboardContext(
        settings=settings,
        home=home,
        managers=managers,
        audit=audit,
        counts=StatusCounts(home, ttl=status_ttl),
        rows=RowsCache(home),
        codec=codec,
        templates=_templates(),
        providers=providers,
        token_login=token_login,
        basic_login=basic_login,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        lazy_features.close()  # the board, if a request opened it
        audit.close()  # also writes the pending `suppressed` aggregates

    app = FastAPI(
        title="Hermes dashboard",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
        **_no_telemetry(),
    )
    # Board, events, sessions and the profile editor: included on their first request
    # (features.py); its middleware goes first, so it is the innermost.
    lazy_features = features.install(app, home)
    app.state.hermes = context
    status_body = StatusBody(settings, context.counts)
    app.state.status_body = status_body
    # Plain Starlette routes, matched first: no FastAPI dependency solving on the two
    # paths every open page polls (FastAPI's routing is most of a request's CPU there).
    app.router.routes.append(Route("/api/status", api.status_endpoint, methods=["GET"]))
    app.router.routes.append(Route("/api/profiles", api.list_profiles_api, methods=["GET"]))
    app.include_router(api.router)
    app.include_router(auth_routes.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=str(PACKAGE_DIR / "static")), name="static")

    def on_refresh(scope: Scope, data: dict[str, Any]) -> None:
        user = data.get("user")
        label = user.get("email") or user.get("login") if isinstance(user, dict) else None
        audit.write("refresh", user=label, ip=settings.proxies.client_ip(scope))

    # add_middleware puts each new one outside the previous ones: innermost first.
    app.add_middleware(
        CsrfMiddleware, proxies=settings.proxies, public_origin=_origin(settings.public_url)
    )
    if settings.mode == "token":
        app.add_middleware(TokenAuthMiddleware, token=settings.session_token)
    elif settings.mode == "oauth":
        app.add_middleware(
            OAuthGateMiddleware,
            access=SessionAccess(settings.allowlist, settings.providers, basic_login),
            codec=codec,
            audit=audit,
            proxies=settings.proxies,
        )
    app.add_middleware(
        SessionMiddleware, codec=codec, proxies=settings.proxies, on_refresh=on_refresh
    )
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(StatusFastPath, body=status_body, check_host=settings.mode == "token")
    if settings.host_check is not None:  # outermost: unknown Hosts never reach auth logic
        app.add_middleware(HostCheckMiddleware, hosts=settings.host_check)
    metrics_endpoint.install(app, home)
    audit.observer = chain(
        audit.observer, ledger_observer(home.root)
    )  # outermost: GET /metrics has its own bearer gate
    return app
