"""OAuth/OIDC mode: everything except the shared public allowlist needs a logged-in session."""

from __future__ import annotations

from hermes_container.dashboard.asgi import Receive, Scope, Send, send_json, send_redirect
from hermes_container.dashboard.auth.base import HttpAuthMiddleware
from hermes_container.dashboard.auth.public_paths import canonical_path, is_api_path, is_public
from hermes_container.dashboard.auth.redirects import login_url


def session_user(scope: Scope) -> dict[str, object] | None:
    session = scope.get("session")
    if scope.get("hermes.session_status") != "ok" or not isinstance(session, dict):
        return None
    user = session.get("user")
    return user if isinstance(user, dict) else None


class OAuthGateMiddleware(HttpAuthMiddleware):
    async def gate(self, scope: Scope, receive: Receive, send: Send) -> None:
        user = session_user(scope)
        if user is not None:
            scope["hermes.user"] = user
            await self.app(scope, receive, send)
            return
        if is_public(scope):
            await self.app(scope, receive, send)
            return
        expired = scope.get("hermes.session_status") == "expired"
        if is_api_path(scope):
            await send_json(
                send,
                401,
                {
                    "error": "session_expired" if expired else "unauthenticated",
                    "detail": "your session has expired; log in again"
                    if expired
                    else "log in to use the dashboard API",
                    "login_url": login_url("/"),
                },
            )
            return
        await send_redirect(send, login_url(canonical_path(scope), expired=expired))
