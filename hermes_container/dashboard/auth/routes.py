"""Login, OAuth callback and logout. All under /auth/ (public prefix) except /login."""

from __future__ import annotations

import secrets
import time

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from hermes_container.dashboard.auth.providers import LoginError
from hermes_container.dashboard.auth.redirects import safe_next
from hermes_container.dashboard.context import client_ip, ctx, current_user, user_label
from hermes_container.dashboard.pages import render

router = APIRouter()
NEXT_KEY = "login_next"


def _clear_pending_logins(request: Request) -> None:
    # One login in flight per browser: stale authlib state entries would grow the cookie.
    for key in [k for k in request.session if k.startswith("_state_")]:
        del request.session[key]


def _redirect_uri(request: Request, provider: str) -> str:
    settings = ctx(request).settings
    base = settings.public_url or settings.proxies.origin(request.scope)
    return f"{base}/auth/callback/{provider}"


@router.get("/login")
async def login_page(
    request: Request, next: str | None = None, expired: str | None = None
) -> Response:
    context = ctx(request)
    target = safe_next(next)
    if context.settings.mode != "oauth" or current_user(request) is not None:
        return RedirectResponse(target, status_code=303)
    providers = context.providers.info() if context.providers else []
    return render(request, "login.html", providers=providers, next=target, expired=bool(expired))


@router.get("/auth/login/{provider}")
async def login_start(request: Request, provider: str, next: str | None = None) -> Response:
    context = ctx(request)
    if context.providers is None or provider not in context.providers.names:
        return render(request, "error.html", 404, title="Not found", message="Unknown provider.")
    _clear_pending_logins(request)
    request.session[NEXT_KEY] = safe_next(next)
    context.audit.write("login_start", provider=provider, ip=client_ip(request))
    try:
        return await context.providers.start(request, provider, _redirect_uri(request, provider))
    except LoginError as exc:
        context.audit.write(
            "login_failure", provider=provider, reason=exc.reason, ip=client_ip(request)
        )
        return render(
            request,
            "error.html",
            502,
            title="Login unavailable",
            message="The login provider could not be reached. Try again later.",
        )


@router.get("/auth/callback/{provider}")
async def login_callback(request: Request, provider: str) -> Response:
    context = ctx(request)
    ip = client_ip(request)
    if context.providers is None or provider not in context.providers.names:
        return render(request, "error.html", 404, title="Not found", message="Unknown provider.")
    try:
        identity = await context.providers.finish(request, provider)
    except LoginError as exc:
        context.audit.write("login_failure", provider=provider, reason=exc.reason, ip=ip)
        return render(
            request,
            "error.html",
            400,
            title="Login failed",
            message="The login could not be completed. Please start again.",
            retry=True,
        )
    if not context.settings.allowlist.allows(identity):
        context.audit.write(
            "login_denied",
            provider=provider,
            user=identity.display,
            subject=identity.subject,
            ip=ip,
        )
        _clear_pending_logins(request)
        return render(
            request,
            "error.html",
            403,
            title="Access denied",
            message=f"{identity.display} is not allowed to use this dashboard.",
        )
    target = safe_next(request.session.get(NEXT_KEY))
    # A fresh session (new id, new CSRF token) on login: no fixation of a pre-login cookie.
    request.session.clear()
    request.session.update(
        user=identity.session_user(),
        sid=secrets.token_urlsafe(16),
        iat=int(time.time()),
        csrf=secrets.token_urlsafe(32),
    )
    context.audit.write(
        "login_success", provider=provider, user=identity.display, subject=identity.subject, ip=ip
    )
    return RedirectResponse(target, status_code=303)


@router.post("/auth/logout")
async def logout(request: Request) -> Response:
    context = ctx(request)
    sid = request.session.get("sid")
    if isinstance(sid, str):
        context.codec.revoke(sid)
    if current_user(request) is not None:
        context.audit.write("logout", user=user_label(request), ip=client_ip(request))
    request.session.clear()
    request.scope["hermes.session_clear"] = True
    headers = {"clear-site-data": '"cache", "cookies", "storage"'}
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"ok": True, "login_url": "/login"}, headers=headers)
    target = "/login" if context.settings.mode == "oauth" else "/"
    return RedirectResponse(target, status_code=303, headers=headers)
