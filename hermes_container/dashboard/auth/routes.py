"""Login, OAuth callback, the login token and logout. All under /auth/ (public prefix)
except /login.

Audit: login_start and login_failure can be caused by anyone, so they go through
`AuditLog.client_event` (pre-auth log, rate-limited per client) with a fixed reason
code; login_denied (a provider vouched for the identity) goes to the security log,
rate-limited per client as well; login_success and logout are security events.
A login token attempt (POST /auth/token) or a basic login (POST /auth/basic) is budgeted
per client before anything is compared; a wrong or refused one is a pre-auth
`login_failure`, and neither the token nor a password (nor a user name typed by an
unauthenticated client) is ever written anywhere.
"""

from __future__ import annotations

import json

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from hermes_container.dashboard.auth.providers import LoginError
from hermes_container.dashboard.auth.reasons import reason_code
from hermes_container.dashboard.auth.redirects import safe_next
from hermes_container.dashboard.context import (
    DashboardContext,
    client_ip,
    ctx,
    current_user,
    user_label,
)
from hermes_container.dashboard.pages import render

router = APIRouter()
NEXT_KEY = "login_next"
MAX_TOKEN_BODY = 4096  # {"token": ..., "next": ...}; anything larger is not a login


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
    return render(
        request,
        "login.html",
        providers=providers,
        token_login=context.token_login is not None,
        basic_login=context.basic_login is not None,
        next=target,
        expired=bool(expired),
    )


@router.post("/auth/token")
async def token_login(request: Request) -> Response:
    """The login page's script posts the token from the sign-in link's fragment (or
    typed in): JSON `{"token": ..., "next": ...}`, with the page's CSRF token."""
    context = ctx(request)
    login = context.token_login
    if login is None:
        return JSONResponse({"error": "not_found"}, status_code=404)
    ip = client_ip(request)
    if not login.allow(ip):
        return _rate_limited(context, ip, "token", login.retry_after)
    presented, next_path = await _token_body(request)
    if not login.matches(presented):
        context.audit.client_event(
            "login_failure", ip, provider="token", reason=reason_code("bad_token")
        )
        return JSONResponse(
            {"error": "invalid_token", "detail": "that login token is not (or no longer) valid"},
            status_code=401,
        )
    return _signed_in(request, login.session_user(), "token", "operator", ip, next_path)


async def _token_body(request: Request) -> tuple[str | None, str | None]:
    data = await _json_body(request)
    return _text(data, "token"), _text(data, "next")


@router.post("/auth/basic")
async def basic_login(request: Request) -> Response:
    """The login page's user/password form: JSON `{"user", "password", "next"}`, with the
    page's CSRF token."""
    context = ctx(request)
    login = context.basic_login
    if login is None:
        return JSONResponse({"error": "not_found"}, status_code=404)
    ip = client_ip(request)
    if not login.allow(ip):
        return _rate_limited(context, ip, "basic", login.retry_after)
    data = await _json_body(request)
    if not await run_in_threadpool(login.verify, _text(data, "user"), _text(data, "password")):
        context.audit.client_event(
            "login_failure", ip, provider="basic", reason=reason_code("bad_password")
        )
        return JSONResponse(
            {"error": "invalid_credentials", "detail": "wrong user name or password"},
            status_code=401,
        )
    return _signed_in(request, login.session_user(), "basic", login.user, ip, _text(data, "next"))


def _rate_limited(
    context: DashboardContext, ip: str | None, provider: str, retry_after: object
) -> JSONResponse:
    """A token or password login refused before it is checked: too many tries from `ip`."""
    context.audit.client_event(
        "login_failure", ip, provider=provider, reason=reason_code("rate_limited")
    )
    return JSONResponse(
        {"error": "rate_limited", "detail": "too many attempts; wait and try again"},
        status_code=429,
        headers={"retry-after": str(retry_after)},
    )


def _signed_in(
    request: Request,
    user: dict[str, object],
    provider: str,
    who: str,
    ip: str | None,
    next_path: str | None,
) -> JSONResponse:
    """A fresh session (new id, new CSRF token), exactly as after an OAuth callback."""
    context = ctx(request)
    request.session.clear()
    request.session.update(context.codec.login_session(user))
    context.audit.write("login_success", provider=provider, user=who, ip=ip)
    return JSONResponse({"ok": True, "next": safe_next(next_path)})


async def _json_body(request: Request) -> dict[str, object]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_TOKEN_BODY:
            return {}
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _text(data: dict[str, object], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


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
