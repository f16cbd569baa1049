"""Login, OAuth callback and logout. All under /auth/ (public prefix) except /login.

Audit: login_start and login_failure can be caused by anyone, so they go through
`AuditLog.client_event` (pre-auth log, rate-limited per client) with a fixed reason
code; login_denied (a provider vouched for the identity) goes to the security log,
rate-limited per client as well; login_success and logout are security events.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from hermes_container.dashboard.auth.providers import LoginError
from hermes_container.dashboard.auth.reasons import reason_code
from hermes_container.dashboard.auth.redirects import safe_next
from hermes_container.dashboard.context import client_ip, ctx, current_user, user_label
from hermes_container.dashboard.pages import render

router = APIRouter()
NEXT_KEY = "login_next"


def _clear_pending_logins(request: Request) -> None:
    # One login in flight per browser: stale authlib state entries would grow the cookie.
    for key in [k for k in request.session if k.startswith("_state_")]:
        del request.session[key]


def _login_failed(
    request: Request, provider: str, exc: LoginError, status: int, **page: object
) -> Response:
    # exc.reason may echo the callback's `?error=`: only a fixed code is recorded.
    reason = reason_code(exc.reason)
    ctx(request).audit.client_event(
        "login_failure", client_ip(request), provider=provider, reason=reason
    )
    return render(request, "error.html", status, **page)


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
    ip = client_ip(request)
    context.audit.client_event("login_start", ip, provider=provider)
    try:
        return await context.providers.start(request, provider, _redirect_uri(request, provider))
    except LoginError as exc:
        return _login_failed(
            request,
            provider,
            exc,
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
        return _login_failed(
            request,
            provider,
            exc,
            400,
            title="Login failed",
            message="The login could not be completed. Please start again.",
            retry=True,
        )
    if not context.settings.allowlist.allows(identity):
        context.audit.client_event(
            "login_denied",
            ip,
            security=True,
            provider=provider,
            user=identity.display,
            subject=identity.subject,
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
    allowlist = context.settings.allowlist
    request.session.update(
        context.codec.login_session(identity.session_user(allowlist.github_orgs))
    )
    context.audit.write(
        "login_success", provider=provider, user=identity.display, subject=identity.subject, ip=ip
    )
    return RedirectResponse(target, status_code=303)


@router.post("/auth/logout")
async def logout(request: Request) -> Response:
    context = ctx(request)
    if current_user(request) is not None:
        # Only a logged-in session's id is worth remembering (and persisting).
        await context.codec.end(request.session)
        context.audit.write("logout", user=user_label(request), ip=client_ip(request))
    request.session.clear()
    request.scope["hermes.session_clear"] = True
    headers = {"clear-site-data": '"cache", "cookies", "storage"'}
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"ok": True, "login_url": "/login"}, headers=headers)
    target = "/login" if context.settings.mode == "oauth" else "/"
    return RedirectResponse(target, status_code=303, headers=headers)
