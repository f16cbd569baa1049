"""What both auth modes' middlewares do before deciding on a request."""

from __future__ import annotations

from hermes_container.dashboard.asgi import ASGIApp, Receive, Scope, Send, reject_websocket


class HttpAuthMiddleware:
    """Websockets are refused (the dashboard has none), other non-HTTP scopes pass
    through untouched, and `gate` decides every HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await reject_websocket(send)
            return
        if kind != "http":
            await self.app(scope, receive, send)
            return
        await self.gate(scope, receive, send)

    async def gate(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError
