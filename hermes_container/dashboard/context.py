"""Everything a request handler needs, built once by the app factory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from hermes_container.dashboard.auth.audit import AuditLog
from hermes_container.dashboard.auth.session import SessionCodec, new_csrf_token
from hermes_container.dashboard.manager import ManagerSource
from hermes_container.dashboard.read_model import RowsCache, RowsSnapshot, StatusCounts
from hermes_container.dashboard.settings import DashboardSettings
from hermes_container.home import HermesHome

if TYPE_CHECKING:
    from starlette.templating import Jinja2Templates

    from hermes_container.dashboard.auth.basic_login import BasicLogin
    from hermes_container.dashboard.auth.providers import LoginProviders
    from hermes_container.dashboard.auth.token_login import TokenLogin
    from hermes_container.supervision.protocol import ServiceManager
    from hermes_container.supervision.service_status import ServiceStatus

PACKAGE_DIR = Path(__file__).resolve().parent


@dataclass
class DashboardContext:
    settings: DashboardSettings
    home: HermesHome
    managers: ManagerSource
    audit: AuditLog
    counts: StatusCounts
    rows: RowsCache
    codec: SessionCodec
    templates: Jinja2Templates
    providers: LoginProviders | None
    token_login: TokenLogin | None = None  # HERMES_DASHBOARD_AUTH=token
    basic_login: BasicLogin | None = None  # HERMES_DASHBOARD_BASIC_*

    async def rows_snapshot(self) -> RowsSnapshot:
        """Every profile's status as RowsCache serves it: straight from the event loop
        when there are rows to serve, else read in the threadpool (the loop never waits
        for the supervisor or the files)."""
        manager = self.managers.get()
        snapshot = self.rows.peek(manager)
        if snapshot is None:
            snapshot = await run_in_threadpool(self.rows.snapshot, manager)
        return snapshot

    async def rows_now(self) -> tuple[ServiceManager | None, list[ServiceStatus]]:
        """The supervisor and every profile's status (see rows_snapshot)."""
        snapshot = await self.rows_snapshot()
        return snapshot.manager, snapshot.rows


def ctx(request: Request) -> DashboardContext:
    value: DashboardContext = request.app.state.hermes
    return value


def current_user(request: Request) -> dict[str, Any] | None:
    user = request.scope.get("hermes.user")
    return user if isinstance(user, dict) else None


def user_label(request: Request) -> str:
    user = current_user(request)
    if user is None:
        return "anonymous"
    return str(user.get("email") or user.get("login") or user.get("name") or user.get("sub"))


def client_ip(request: Request) -> str | None:
    return ctx(request).settings.proxies.client_ip(request.scope)


def csrf_token(request: Request) -> str:
    """The session's CSRF token, minted on first use (the session cookie then carries it)."""
    session = request.session
    token = session.get("csrf")
    if not isinstance(token, str) or not token:
        token = new_csrf_token()
        session["csrf"] = token
    return token
