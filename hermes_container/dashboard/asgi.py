"""Tiny pure-ASGI helpers shared by the middlewares (no BaseHTTPMiddleware: it is slow)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Starlette's own ASGI types, re-exported so the middlewares import from one place.
__all__ = ["ASGIApp", "Message", "Receive", "Scope", "Send"]


def header(scope: Scope, name: bytes) -> str | None:
    """First value of header `name` (lower-case bytes), decoded as latin-1."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def send_response(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    extra_headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    headers = [
        (b"content-type", content_type.encode("latin-1")),
        (b"content-length", str(len(body)).encode("latin-1")),
        (b"cache-control", b"no-store"),
        *extra_headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(
    send: Send, status: int, payload: dict[str, Any], extra: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    await send_response(send, status, body, "application/json", extra)


async def send_redirect(send: Send, location: str) -> None:
    await send_response(
        send, 303, b"", "text/plain; charset=utf-8", [(b"location", location.encode("latin-1"))]
    )


async def reject_websocket(send: Send) -> None:
    # The dashboard has no websockets; close before accepting.
    await send({"type": "websocket.close", "code": 1008})
