"""Loopback mode: an ephemeral token injected into pages, sent back in a header.

Pages (exact canonical page paths only) are served without the header because they
carry the token; every other non-public path needs `X-Hermes-Session-Token` (or
`Authorization: Bearer`). A cross-site page cannot read our pages (same-origin policy)
nor set that header without a CORS preflight we never grant, and the Host check stops
DNS rebinding from turning a hostile name into "same origin" with 127.0.0.1.
"""

from __future__ import annotations

import hmac
import re

from hermes_container.dashboard.asgi import (
    ASGIApp,
    Receive,
    Scope,
    Send,
    header,
    send_json,
)
from hermes_container.dashboard.auth.base import HttpAuthMiddleware
from hermes_container.dashboard.auth.public_paths import is_public, is_token_page

TOKEN_HEADER = b"x-hermes-session-token"
_LOOPBACK_HOST = re.compile(r"(?:127\.0\.0\.1|localhost|\[::1\])(?::[0-9]{1,5})?", re.ASCII)


def host_allowed(scope: Scope) -> bool:
    host = header(scope, b"host")
    return host is not None and _LOOPBACK_HOST.fullmatch(host.strip().lower()) is not None


def presented_token(scope: Scope) -> str | None:
    value = header(scope, TOKEN_HEADER)
    if value:
        return value.strip()
    auth = header(scope, b"authorization") or ""
    scheme, _, credentials = auth.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


class TokenAuthMiddleware(HttpAuthMiddleware):
    def __init__(self, app: ASGIApp, token: str) -> None:
        super().__init__(app)
        self._token = token.encode("utf-8")

    def token_ok(self, scope: Scope) -> bool:
        presented = presented_token(scope)
        return presented is not None and hmac.compare_digest(
            presented.encode("utf-8", "replace"), self._token
        )

    async def gate(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not host_allowed(scope):
            await send_json(
                send,
                400,
                {"error": "bad_host", "detail": "Host header must be a loopback address"},
            )
            return
        if self.token_ok(scope):
            scope["hermes.user"] = {"name": "local", "provider": "token"}
            await self.app(scope, receive, send)
            return
        if is_public(scope) or is_token_page(scope):
            await self.app(scope, receive, send)
            return
        await send_json(
            send,
            401,
            {
                "error": "unauthenticated",
                "detail": "send the dashboard session token in the X-Hermes-Session-Token header",
                "login_url": "/",
            },
        )
