"""Server-rendered pages: overview, profile detail, boot log, audit log."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from hermes_container import __version__
from hermes_container.dashboard.context import csrf_token, ctx, current_user
from hermes_container.dashboard.logtail import tail_lines
from hermes_container.dashboard.read_model import profile_status, uptime_text
from hermes_container.names import is_valid_profile_name
from hermes_container.profiles import profile_exists
from hermes_container.supervision.protocol import ServiceManager

router = APIRouter()


def render(request: Request, template: str, status_code: int = 200, **extra: Any) -> Response:
    context = ctx(request)
    settings = context.settings
    values = {
        "version": __version__,
        "mode": settings.mode,
        "insecure": settings.mode == "insecure",
        "user": current_user(request) if settings.mode == "oauth" else None,
        "csrf_token": csrf_token(request),
        # Loopback mode only: the page hands the token to its own scripts.
        "session_token": settings.session_token if settings.mode == "token" else None,
        **extra,
    }
    return context.templates.TemplateResponse(request, template, values, status_code=status_code)


@router.get("/")
async def overview(request: Request) -> Response:
    manager, rows = await ctx(request).rows_now()
    return _render_status(request, "overview.html", manager, rows=rows)


@router.get("/profiles/{name}")
async def profile_page(request: Request, name: str) -> Response:
    context = ctx(request)
    if not is_valid_profile_name(name) or not profile_exists(context.home, name):
        return render(request, "error.html", 404, title="Not found", message="No such profile.")
    manager = context.managers.get()
    row = await run_in_threadpool(profile_status, context.home, manager, name)
    return _render_status(request, "profile.html", manager, row=row)


def _render_status(
    request: Request, template: str, manager: ServiceManager | None, **values: Any
) -> Response:
    supervisor = manager.name if manager else None
    return render(request, template, supervisor=supervisor, uptime_text=uptime_text, **values)


@router.get("/logs/boot")
async def boot_log(request: Request) -> Response:
    lines = await run_in_threadpool(tail_lines, ctx(request).home.boot_log, 500)
    return render(request, "boot_log.html", lines=list(reversed(lines)))


@router.get("/logs/audit")
async def audit_log(request: Request) -> Response:
    # Security events and pre-auth noise come from separate logs and are shown
    # separately, so no amount of unauthenticated traffic hides a real event.
    audit = ctx(request).audit
    records = await run_in_threadpool(audit.tail, 300)
    noise = await run_in_threadpool(audit.noise_tail, 100)
    return render(request, "audit_log.html", records=records, noise=noise)
