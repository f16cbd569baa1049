"""`/api/status`: the public health summary, served from a pre-built body.

The body is rebuilt only when the (briefly cached) gateway counts change. The
outermost middleware answers the exact canonical `GET /api/status` itself, so the
hottest endpoint skips the session, routing and exception layers; it carries the same
security headers, and in loopback mode the same Host check, as every other response.
Reveals no paths, PIDs, ports, profile names or secrets, so it is safe with the gate on.
"""

from __future__ import annotations

import json
from typing import Any

from hermes_container import __version__
from hermes_container.dashboard.asgi import ASGIApp, Receive, Scope, Send
from hermes_container.dashboard.auth.public_paths import canonical_path
from hermes_container.dashboard.auth.token_mode import host_allowed
from hermes_container.dashboard.headers import COMMON_HEADERS
from hermes_container.dashboard.read_model import StatusCounts
from hermes_container.dashboard.settings import DashboardSettings

PATH = "/api/status"


class StatusBody:
    def __init__(self, settings: DashboardSettings, counts: StatusCounts) -> None:
        self.settings = settings
        self.counts = counts
        self._source: object = None
        self._body = b""

    def get(self) -> bytes:
        counts = self.counts.get()
        if counts is not self._source:
            payload: dict[str, Any] = {
                "version": __version__,
                **counts,
                "auth_required": self.settings.auth_required,
                "auth_mode": self.settings.mode,
                "auth_providers": self.settings.providers,
            }
            self._body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
            self._source = counts
        return self._body


class StatusFastPath:
    def __init__(self, app: ASGIApp, body: StatusBody, check_host: bool) -> None:
        self.app = app
        self.body = body
        self.check_host = check_host
        self._cached: tuple[bytes, list[tuple[bytes, bytes]]] = (b"", [])

    def _response(self) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        body = self.body.get()
        if body is not self._cached[0]:
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode("ascii")),
                (b"cache-control", b"no-store"),
                *COMMON_HEADERS,
            ]
            self._cached = (body, headers)
        return self._cached

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope.get("path") != PATH
            or scope["type"] != "http"
            or scope.get("method") not in ("GET", "HEAD")
            or canonical_path(scope) != PATH
            or (self.check_host and not host_allowed(scope))
        ):
            await self.app(scope, receive, send)
            return
        body, headers = self._response()
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )
