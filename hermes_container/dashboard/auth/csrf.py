"""CSRF for every state-changing request, in every auth mode.

The token lives in the signed session and is rendered into each page; unsafe methods
must echo it in `X-CSRF-Token` or, for plain HTML forms, a `csrf_token` form field.
A present `Origin` header must also be our own origin: HERMES_DASHBOARD_PUBLIC_URL's,
or this request's scheme://Host, a Host the middlewares outside this one have already
vetted (auth/hosts.py in OAuth mode, the loopback check in token mode). Tokens are
compared in constant time.
"""

from __future__ import annotations

import hmac
from urllib.parse import parse_qs

from hermes_container.dashboard.asgi import (
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    header,
    send_json,
)
from hermes_container.dashboard.auth.proxy import TrustedProxies

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_FORM_BYTES = 64 * 1024


def _equal(presented: str | None, expected: object) -> bool:
    if not presented or not isinstance(expected, str) or not expected:
        return False
    return hmac.compare_digest(presented.encode("utf-8", "replace"), expected.encode("utf-8"))


class CsrfMiddleware:
    def __init__(
        self, app: ASGIApp, proxies: TrustedProxies, public_origin: str | None = None
    ) -> None:
        self.app = app
        self.proxies = proxies
        # HERMES_DASHBOARD_PUBLIC_URL's origin is ours too (e.g. TLS ended by a proxy).
        self.public_origin = public_origin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        origin = header(scope, b"origin")
        if origin is not None and origin not in (self.proxies.origin(scope), self.public_origin):
            await self._deny(send, "cross-origin request refused")
            return
        session = scope.get("session")
        expected = session.get("csrf") if isinstance(session, dict) else None
        if _equal(header(scope, b"x-csrf-token"), expected):
            await self.app(scope, receive, send)
            return
        content_type = (header(scope, b"content-type") or "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            await self._deny(send, "missing or wrong CSRF token")
            return
        body = await _read_body(receive)
        if body is None:
            await self._deny(send, "form too large")
            return
        fields = parse_qs(body.decode("latin-1"), max_num_fields=50)
        if not _equal(next(iter(fields.get("csrf_token", [])), None), expected):
            await self._deny(send, "missing or wrong CSRF token")
            return
        await self.app(scope, _replay(body, receive), send)

    async def _deny(self, send: Send, detail: str) -> None:
        await send_json(send, 403, {"error": "csrf_failed", "detail": detail})


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, upstream: Receive) -> Receive:
    """Hand the buffered body to the app once, then pass through (e.g. disconnects)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await upstream()

    return receive
