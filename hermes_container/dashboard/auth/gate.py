"""OAuth/OIDC mode: everything except the shared public allowlist needs a logged-in session.

The allowlist is checked on every request, not only at login: a session whose
identity (as of login) the current allowlist no longer admits, or whose provider is
no longer configured, is ended on the spot: its id is revoked (so a copy of the
cookie dies too, and is audited only once), the cookie is cleared, a `session_ended`
event is audited, and the request is treated as unauthenticated: `401
{"error": "access_revoked"}` for the API, a redirect to the login page otherwise.
The check is a few set lookups on the already-decoded cookie; no I/O unless a session
actually ends.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from hermes_container.dashboard.asgi import ASGIApp, Receive, Scope, Send, send_json, send_redirect
from hermes_container.dashboard.auth.allowlist import Allowlist
from hermes_container.dashboard.auth.audit import AuditLog
from hermes_container.dashboard.auth.base import HttpAuthMiddleware
from hermes_container.dashboard.auth.basic_login import BasicLogin
from hermes_container.dashboard.auth.proxy import TrustedProxies
from hermes_container.dashboard.auth.public_paths import canonical_path, is_api_path, is_public
from hermes_container.dashboard.auth.redirects import login_url
from hermes_container.dashboard.auth.session import SessionCodec

ACCESS_REVOKED = "access_revoked"
_DETAILS = {
    ACCESS_REVOKED: "your account is no longer allowed to use this dashboard",
    "session_expired": "your session has expired; log in again",
    "unauthenticated": "log in to use the dashboard API",
}


def session_user(scope: Scope) -> dict[str, object] | None:
    session = scope.get("session")
    if scope.get("hermes.session_status") != "ok" or not isinstance(session, dict):
        return None
    user = session.get("user")
    return user if isinstance(user, dict) else None


class SessionAccess:
    """Whether a session's identity, as of login, is still admitted."""

    def __init__(
        self,
        allowlist: Allowlist,
        providers: Iterable[str],
        basic: BasicLogin | None = None,
    ) -> None:
        self.allowlist = allowlist
        self.providers = frozenset(providers)
        self.basic = basic

    def admits(self, user: Mapping[str, object]) -> bool:
        # The fields Identity.session_user() wrote at login; no Identity is built here
        # because this runs on every request.
        sub = user.get("sub")
        if user.get("provider") not in self.providers or not isinstance(sub, str) or not sub:
            return False
        if user.get("provider") == "token":
            # Whoever holds the login token is the operator: there is no identity for
            # an allowlist to judge. Rotating the token ends these sessions.
            return True
        if user.get("provider") == "basic":
            # The configured user, with the password hash of its login.
            return self.basic is not None and self.basic.admits(user)
        email, login, orgs = user.get("email"), user.get("login"), user.get("orgs")
        return self.allowlist.allows_facts(
            email if isinstance(email, str) else None,
            login if isinstance(login, str) else None,
            [org for org in orgs if isinstance(org, str)] if isinstance(orgs, list) else (),
        )


def user_label(user: Mapping[str, object]) -> str:
    label = user.get("email") or user.get("login") or user.get("sub")
    return str(label) if label else "unknown"


class OAuthGateMiddleware(HttpAuthMiddleware):
    def __init__(
        self,
        app: ASGIApp,
        *,
        access: SessionAccess,
        codec: SessionCodec,
        audit: AuditLog,
        proxies: TrustedProxies,
    ) -> None:
        super().__init__(app)
        self.access = access
        self.codec = codec
        self.audit = audit
        self.proxies = proxies

    async def gate(self, scope: Scope, receive: Receive, send: Send) -> None:
        user = session_user(scope)
        ended = False
        if user is not None:
            if self.access.admits(user):
                scope["hermes.user"] = user
                await self.app(scope, receive, send)
                return
            await self._end_session(scope, user)
            ended = True
        if is_public(scope):
            await self.app(scope, receive, send)
            return
        expired = ended or scope.get("hermes.session_status") == "expired"
        if is_api_path(scope):
            error = ACCESS_REVOKED if ended else "session_expired" if expired else "unauthenticated"
            await send_json(
                send, 401, {"error": error, "detail": _DETAILS[error], "login_url": login_url("/")}
            )
            return
        await send_redirect(send, login_url(canonical_path(scope), expired=expired))

    async def _end_session(self, scope: Scope, user: Mapping[str, object]) -> None:
        session = scope["session"]
        data = dict(session)
        session.clear()
        scope["hermes.session_clear"] = True  # SessionMiddleware expires the cookie
        scope["hermes.session_status"] = "revoked"
        self.audit.write(
            "session_ended",
            reason="not_allowed",
            user=user_label(user),
            provider=user.get("provider"),
            subject=user.get("sub"),
            ip=self.proxies.client_ip(scope),
        )
        await self.codec.end(data)
