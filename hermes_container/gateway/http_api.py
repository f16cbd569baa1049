"""The gateway's HTTP surface: a bare ASGI app with Starlette requests and responses.

GET /health (no auth), GET /v1/models, POST /v1/chat/completions (streaming or not).
`/v1/*` needs `Authorization: Bearer <API_SERVER_KEY>`; errors use the OpenAI shape.
The session id comes from `X-Hermes-Session` (or is new) and is echoed back.

Each request reads the current settings generation (`Gateway.live`, see
live_settings.py) once and keeps it to its end: a reload never changes the settings,
key or relay under a request already running.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from hermes_container.gateway.live_settings import Live
from hermes_container.gateway.profile_settings import Settings
from hermes_container.gateway.relay import GatewayError, Relay, prepare_payload
from hermes_container.gateway.sessions import Exchange, SessionStore
from hermes_container.gateway.upstream import UpstreamError, UpstreamResponse
from hermes_container.metrics.gateway import NULL_METER, Meter, route_label

SESSION_HEADER = "x-hermes-session"
_SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def error_response(err: GatewayError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        err.body(), status_code=err.status, headers={**err.headers, **(headers or {})}
    )


def _sse_error(err: GatewayError) -> bytes:
    return b"data: " + json.dumps(err.body()).encode() + b"\n\ndata: [DONE]\n\n"


class RelayedStream(Response):
    """Passes upstream SSE bytes through as they arrive; always closes and records."""

    def __init__(
        self,
        upstream: UpstreamResponse,
        relay: Relay,
        store: SessionStore,
        ex: Exchange,
        meter: Meter = NULL_METER,
        sent: float = 0.0,  # perf_counter() when the request went to the provider
    ) -> None:
        # No super().__init__(): with no body set, init_headers adds no Content-Length.
        self.status_code, self.background = 200, None
        self.media_type = upstream.headers.get("content-type", "text/event-stream")
        self.init_headers({"cache-control": "no-cache", SESSION_HEADER: ex.session_id})
        self.upstream, self.relay, self.store, self.ex = upstream, relay, store, ex
        self.meter, self.sent = meter, sent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ex = self.ex
        # uvicorn's send() silently drops data for a vanished client, so watch for the
        # disconnect ourselves and hang up on the provider: no paying for unread tokens.
        watcher = asyncio.ensure_future(self._watch_disconnect(receive))
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        try:
            while (chunk := await self.upstream.next_chunk()) is not None:
                # Pieces that came in together go out together: one write, one wake-up
                # of the client, instead of one per SSE event.
                chunk += self.upstream.take_buffered()
                ex.chunks.append(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except UpstreamError as exc:
            if exc.kind == "aborted":
                ex.status, ex.error = 499, "client disconnected"
                return
            # Headers are gone already: report the failure in-band, as OpenAI does.
            err = self.relay.upstream_error(exc)
            ex.status, ex.error = err.status, err.message
            await send({"type": "http.response.body", "body": _sse_error(err), "more_body": True})
        except BaseException as exc:  # cancelled (shutdown grace exceeded)
            ex.status, ex.error = 499, f"relay interrupted ({type(exc).__name__})"
            raise
        finally:
            watcher.cancel()
            if ex.status != 499:  # the client hung up: not the provider's time
                self.meter.upstream(time.perf_counter() - self.sent)
            ex.finished = time.time()
            self.store.record(ex)
            self.upstream.close()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _watch_disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.upstream.abort("client disconnected")


class Gateway:
    """Route handlers for one profile: its session store, and its settings and relay as
    a generation (`live`) that a reload replaces whole."""

    def __init__(self, settings: Settings, relay: Relay, store: SessionStore) -> None:
        self.live = Live(settings, relay)
        self.store = store
        self.started = time.monotonic()
        self.created = int(time.time())
        self.meter: Meter = NULL_METER  # runner.py swaps in the real one once ready

    def set_meter(self, meter: Meter) -> None:
        self.meter = self.live.relay.meter = meter

    @staticmethod
    def _authorized(request: Request, live: Live) -> bool:
        given = request.headers.get("authorization", "").encode("utf-8", "replace")
        return hmac.compare_digest(given, live.expected_auth)

    def _unauthorized(self) -> JSONResponse:
        err = GatewayError(
            401, "invalid or missing API key", "invalid_request_error", "invalid_api_key"
        )
        return error_response(err, {"www-authenticate": "Bearer"})

    async def health(self, request: Request, live: Live) -> Response:
        uptime = round(time.monotonic() - self.started, 3)
        return JSONResponse({"status": "ok", "profile": live.settings.profile, "uptime_s": uptime})

    async def models(self, request: Request, live: Live) -> Response:
        if not self._authorized(request, live):
            return self._unauthorized()
        model = {
            "id": live.settings.model_name,
            "object": "model",
            "created": self.created,
            "owned_by": f"hermes:{live.settings.profile}",
        }
        return JSONResponse({"object": "list", "data": [model]})

    @staticmethod
    async def _read_body(request: Request, limit: int) -> bytes:
        too_big = GatewayError(
            413, f"request body exceeds {limit} bytes", "invalid_request_error", "body_too_large"
        )
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_big
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_big
                chunks.append(chunk)
        except ClientDisconnect:  # nobody left to answer; not a server error
            raise GatewayError(499, "client disconnected", "invalid_request_error") from None
        return b"".join(chunks)

    async def _parse(self, request: Request, live: Live) -> dict[str, Any]:
        try:
            payload = json.loads(await self._read_body(request, live.settings.max_body_bytes))
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            raise GatewayError(400, "body is not valid JSON", "invalid_request_error") from None
        messages = payload.get("messages") if isinstance(payload, dict) else None
        if not isinstance(messages, list) or not messages:
            raise GatewayError(
                400, "'messages' must be a non-empty list", "invalid_request_error", "messages"
            )
        return payload  # type: ignore[no-any-return]

    @staticmethod
    def _session_id(request: Request) -> str:
        given = request.headers.get(SESSION_HEADER)
        if given is None:
            return uuid.uuid4().hex
        if not _SESSION_ID.fullmatch(given):
            raise GatewayError(
                400, "X-Hermes-Session must match [A-Za-z0-9._:-]{1,128}", "invalid_request_error"
            )
        return given

    async def chat_completions(self, request: Request, live: Live) -> Response:
        if not self._authorized(request, live):
            return self._unauthorized()
        settings, relay = live.settings, live.relay
        started = time.time()
        try:
            session_id = self._session_id(request)
            payload = await self._parse(request, live)
        except GatewayError as err:
            return error_response(err)
        stream = payload.get("stream") is True
        ex = Exchange(
            session_id=session_id,
            started=started,
            finished=started,
            model=settings.model_name,
            stream=stream,
            messages=payload["messages"],
            status=200,
        )
        body = json.dumps(prepare_payload(payload, settings)).encode()
        meter, sent = self.meter, time.perf_counter()
        try:
            if stream:
                upstream = await relay.send(body)
                return RelayedStream(upstream, relay, self.store, ex, meter, sent)
            content, content_type = await relay.complete(body)
        except GatewayError as err:
            meter.upstream(time.perf_counter() - sent)
            ex.finished, ex.status, ex.error = time.time(), err.status, err.message
            self.store.record(ex)
            return error_response(err, {SESSION_HEADER: session_id})
        meter.upstream(time.perf_counter() - sent)
        ex.finished, ex.body = time.time(), content
        self.store.record(ex)
        return Response(content, media_type=content_type, headers={SESSION_HEADER: session_id})


Handler = Callable[[Request, Live], Awaitable[Response]]


class GatewayApp:
    """The ASGI app: a dict lookup per request instead of Starlette's Router and its
    middleware, which cost more than the whole relay path on a small machine."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.routes: dict[str, dict[str, Handler]] = {
            "/health": {"GET": gateway.health, "HEAD": gateway.health},
            "/v1/models": {"GET": gateway.models},
            "/v1/chat/completions": {"POST": gateway.chat_completions},
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off; nothing else is served
            return
        methods = self.routes.get(scope["path"])
        handler = methods.get(scope["method"]) if methods else None
        gateway = self.gateway
        meter = gateway.meter  # the same one at the end, even if swapped meanwhile
        meter.begin()
        started = time.perf_counter()
        response: Response | None = None
        # The request's settings generation, kept to its end (a stream's last byte).
        live = gateway.live
        live.inflight += 1
        try:
            if handler is not None:
                response = await handler(Request(scope, receive), live)
            elif methods:
                err = GatewayError(405, f"use {', '.join(methods)}", "invalid_request_error")
                response = error_response(err, {"allow": ", ".join(methods)})
            else:
                response = error_response(GatewayError(404, "not found", "invalid_request_error"))
            await response(scope, receive, send)
        finally:
            live.leave()
            meter.end(route_label(scope["path"]), _status(response), time.perf_counter() - started)


def _status(response: Response | None) -> int:
    """The status a request is counted with: a stream's is the one its exchange recorded
    (499 when the client left, the in-band error's after a failure mid-stream)."""
    if response is None:
        return 500
    if isinstance(response, RelayedStream):
        return response.ex.status
    return response.status_code


def build_app(settings: Settings, relay: Relay, store: SessionStore) -> GatewayApp:
    return GatewayApp(Gateway(settings, relay, store))
