"""The playground's one endpoint, behind the auth gate and CSRF like every POST:

    POST /api/playground/{profile}/chat   {"message": "...", "session": "<id>" | null}

The browser talks only to the dashboard. The dashboard sends the message, after the
session's conversation so far (session_reader.history, from the profile's sessions.db),
to the profile's own gateway on loopback with the profile's API_SERVER_KEY, read here
on every request (a rotated key is used at once) and never sent back; X-Hermes-Session
puts the exchange in that session (a new id when none is given). The gateway's event
stream is passed through as it arrives, with the session id in `X-Hermes-Session`;
when the page goes away (closed, reloaded, Stop), the request to the gateway is closed
at once, wherever it is (waiting for the answer to begin, or mid-stream), and the
gateway then hangs up on its model provider and records the exchange as 499.

Errors are one JSON line {"error", "detail"}: 400 for a bad body, 404 for an unknown
profile or session, 502 when the gateway answers with an error (its status and message
in the detail: a gateway's 401 must not look like the dashboard's own), 503 when the
profile's gateway is not configured or not running. Each use is written to the auth
audit log (`playground_action`, action `chat`) and the event ledger (`dashboard.action`,
action `playground.chat`), with the profile, the session and the outcome.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from hermes_container.dashboard import session_reader
from hermes_container.dashboard.context import ctx
from hermes_container.dashboard.session_reader import SESSION_ID, SessionsUnavailable
from hermes_container.dashboard.sessions_api import (
    database,
    error,
    known_profile,
    no_profile,
    no_session,
    record,
)
from hermes_container.kanban.gateways import LOOPBACK, Endpoint, GatewayDirectory

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("hermes.dashboard")
router = APIRouter(prefix="/api/playground")

MAX_MESSAGE_CHARS = 32_000
MAX_BODY_BYTES = 256 * 1024
CONNECT_TIMEOUT_S = 2.0  # a gateway is local: a slow connect means it is not there
# The gateway enforces its provider's timeouts; this only ends a gateway that hangs.
READ_TIMEOUT_S = 3600.0
ERROR_BODY_BYTES = 64 * 1024
SESSION_HEADER = "x-hermes-session"
EVENT_STREAM_HEADERS = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-store",
    "x-accel-buffering": "no",
}

Outcome = Callable[[str], Awaitable[None]]


class BadRequest(Exception):
    """The body is unusable (400)."""


async def _body(request: Request) -> tuple[str, str | None]:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest(f"the request body is larger than {MAX_BODY_BYTES // 1024} KiB")
    try:
        data = json.loads(raw or b"{}")
    except (ValueError, RecursionError):
        raise BadRequest("the request body must be a JSON object") from None
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    message = data.get("message")
    if not isinstance(message, str) or not message.strip():
        raise BadRequest("message must be a non-empty string")
    if len(message) > MAX_MESSAGE_CHARS:
        raise BadRequest(f"message must be at most {MAX_MESSAGE_CHARS} characters")
    session = data.get("session")
    if session is not None and (not isinstance(session, str) or not SESSION_ID.fullmatch(session)):
        raise BadRequest("session must be null or an id of [A-Za-z0-9._:-] (at most 128)")
    return message, session


def _gateway_message(body: bytes) -> str:
    """The gateway's error message (OpenAI shape), else the start of its body."""
    try:
        err = json.loads(body)["error"]
        return str(err["message"] if isinstance(err, dict) else err)
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace").strip()[:300] or "no detail"


def _sse_error(message: str) -> bytes:
    err = {"error": {"message": message, "type": "dashboard_error", "code": None}}
    return b"data: " + json.dumps(err).encode() + b"\n\ndata: [DONE]\n\n"


class GatewayChat(Response):
    """Relays one chat completion to a gateway and its event stream back, and closes the
    gateway request the moment the browser disconnects."""

    def __init__(
        self, endpoint: Endpoint, session_id: str, payload: bytes, outcome: Outcome
    ) -> None:
        # No super().__init__(): the head is sent by __call__, once the gateway answered.
        self.status_code, self.background = 200, None
        self.endpoint, self.session_id, self.payload = endpoint, session_id, payload
        self.outcome = outcome

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            task.cancel()  # wherever the relay waits: the gateway's head, a chunk, the socket

        watcher = asyncio.ensure_future(watch())
        try:
            await self._relay(send)
        except asyncio.CancelledError:
            if not gone:
                raise  # shutdown, not the browser
            task.uncancel()
        finally:
            watcher.cancel()

    async def _relay(self, send: Send) -> None:
        import httpx  # first use only: the dashboard starts without it

        endpoint = self.endpoint
        url = f"http://{LOOPBACK}:{endpoint.port}/v1/chat/completions"
        headers = {
            "authorization": f"Bearer {endpoint.api_key}",
            "content-type": "application/json",
            "accept": "text/event-stream",
            SESSION_HEADER: self.session_id,
        }
        timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        # trust_env=False: loopback must never go through $http_proxy.
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
            request = client.build_request("POST", url, headers=headers, content=self.payload)
            try:
                response = await client.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                await self.outcome("gateway_unreachable")
                await self._json(send, 503, "gateway_unreachable", self._down())
                return
            except httpx.HTTPError as exc:
                await self.outcome("gateway_failed")
                detail = f"the gateway of profile {endpoint.profile!r} failed: {type(exc).__name__}"
                await self._json(send, 502, "gateway_failed", detail)
                return
            try:
                if response.status_code != 200:
                    await self._refused(response, send)
                    return
                await self.outcome("ok")
                await self._stream(response, send)
            finally:
                await response.aclose()

    def _down(self) -> str:
        name, port = self.endpoint.profile, self.endpoint.port
        return (
            f"the gateway of profile {name!r} is not running (nothing answers on "
            f"{LOOPBACK}:{port}); start it on the Profiles page"
        )

    async def _refused(self, response: httpx.Response, send: Send) -> None:
        body = b""
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > ERROR_BODY_BYTES:
                break
        status = response.status_code
        await self.outcome(f"gateway_{status}")
        detail = f"the gateway answered HTTP {status}: {_gateway_message(body[:ERROR_BODY_BYTES])}"
        await self._json(send, 502, "gateway_error", detail, gateway_status=status)

    async def _stream(self, response: httpx.Response, send: Send) -> None:
        import httpx

        head = [(k.encode(), v.encode()) for k, v in EVENT_STREAM_HEADERS.items()]
        head.append((SESSION_HEADER.encode(), self.session_id.encode()))
        await send({"type": "http.response.start", "status": 200, "headers": head})
        try:
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except httpx.HTTPError as exc:
            # The head is gone already: say so in-band, as the gateway does for its provider.
            message = f"the gateway broke the stream: {type(exc).__name__}"
            await send(
                {"type": "http.response.body", "body": _sse_error(message), "more_body": True}
            )
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _json(self, send: Send, status: int, code: str, detail: str, **extra: Any) -> None:
        body = json.dumps({"error": code, "detail": " ".join(detail.split())[:500], **extra})
        data = body.encode()
        head = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": data, "more_body": False})


@router.post("/{name}/chat")
async def chat(request: Request, name: str) -> Response:
    async def audit(result: str, session: str | None = None) -> None:
        target: dict[str, object] = {"profile": name}
        if session is not None:
            target["session"] = session
        await record(request, "playground_action", "chat", result, **target)

    if not known_profile(request, name):
        return no_profile()
    try:
        message, session = await _body(request)
    except BadRequest as exc:
        await audit("bad_request")
        return error(400, "bad_request", str(exc))
    home = ctx(request).home
    # Looked up on every message: a port or key changed since the last one is used now.
    endpoint = await run_in_threadpool(GatewayDirectory(home).endpoint, name)
    if endpoint is None:
        await audit("gateway_unconfigured", session)
        return error(
            503,
            "gateway_unconfigured",
            f"profile {name!r} has no valid gateway port or API_SERVER_KEY in its settings",
        )
    messages: list[dict[str, str]] = []
    if session is not None:
        db = database(request, name)
        try:
            earlier = await run_in_threadpool(session_reader.history, db, session)
        except SessionsUnavailable as exc:
            await audit("sessions_unavailable", session)
            return error(503, "sessions_unavailable", str(exc))
        if earlier is None:
            await audit("not_found", session)
            return no_session(session)
        messages = earlier
    else:
        session = uuid.uuid4().hex  # the gateway's own form for a new session
    messages.append({"role": "user", "content": message})
    payload = json.dumps({"messages": messages, "stream": True}, ensure_ascii=False).encode()
    chosen = session
    return GatewayChat(endpoint, chosen, payload, lambda result: audit(result, chosen))
