"""The ingress's HTTP surface: a bare ASGI app, like the gateway's (gateway/http_api.py).

GET /health (no key); GET /v1/models: the profiles the caller's key opens, one model per
profile (id = profile name); POST /v1/chat/completions: to the profile named by `model`;
/p/<profile>/v1/...: to that profile as it is, for clients that cannot choose a model.
A profile's own API_SERVER_KEY opens that profile; the ingress key opens every one. A
model the key may not use is answered exactly like one that does not exist (404
`model_not_found`), so a profile key cannot probe which other profiles exist.
"""

from __future__ import annotations

import hmac
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.types import Receive, Scope, Send

from hermes_container.gateway.upstream import UpstreamError
from hermes_container.ingress.directory import Directory, Profile
from hermes_container.ingress.forward import GatewayUnreachable, Pools, relay
from hermes_container.ingress.keys import KeySource
from hermes_container.state import read_state

MAX_BODY_BYTES = 16 * 1024 * 1024  # each gateway applies its own gateway.max_body_bytes
RETRY_AFTER_S = 5
# Request headers a gateway uses besides the key (which the ingress replaces).
FORWARDED = (b"content-type", b"accept", b"x-hermes-session")
PROFILE_PREFIX = "/p/"
PATH_SAFE = "/:@!$&'()*+,;=-._~"  # RFC 3986 pchar and "/": kept as they are


class Refused(Exception):
    """An answer decided before anything is relayed: status, OpenAI-style error body."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers or {}
        self.body = {"error": {"message": message, "type": kind, "code": code, **extra}}


def _unauthorized() -> Refused:
    return Refused(
        401,
        "invalid or missing API key (a profile's API_SERVER_KEY or the ingress key)",
        "invalid_request_error",
        "invalid_api_key",
        {"www-authenticate": "Bearer"},
    )


def _not_found(model: str) -> Refused:
    return Refused(
        404,
        f"The model {model!r} does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    )


async def send_json(
    send: Send, status: int, obj: Any, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps(obj).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> bytes:
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return b""


def _token(scope: Scope) -> bytes:
    value = _header(scope, b"authorization")
    return value[7:].strip() if value[:7].lower() == b"bearer " else b""


class ClientGone(Exception):
    pass


async def _read_body(receive: Receive) -> bytes:
    parts, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise Refused(
                413,
                f"request body exceeds {MAX_BODY_BYTES} bytes",
                "invalid_request_error",
                "body_too_large",
            )
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


class Ingress:
    """Routes requests to profiles' gateways; one instance per ingress process."""

    def __init__(self, directory: Directory, keys: KeySource, pools: Pools) -> None:
        self.directory, self.keys, self.pools = directory, keys, pools

    # keys
    def _is_master(self, token: bytes) -> bool:
        return bool(token) and hmac.compare_digest(token, self.keys.current())

    def _opens(self, token: bytes, profile: Profile | None) -> bool:
        return profile is not None and (self._is_master(token) or profile.opened_by(token))

    def _valid(self, token: bytes) -> bool:
        """Whether the key opens anything at all."""
        return self._is_master(token) or (
            bool(token) and any(p.opened_by(token) for p in self.directory.all())
        )

    def _refuse_model(self, token: bytes, model: str) -> Refused:
        """404 for a key that is valid somewhere, 401 for one that opens nothing."""
        if self._valid(token):
            return _not_found(model)
        return _unauthorized()

    # routes
    async def models(self, scope: Scope, send: Send) -> None:
        token = _token(scope)
        profiles = self.directory.all()
        if not self._is_master(token):
            profiles = [p for p in profiles if token and p.opened_by(token)]
            if not profiles:
                raise _unauthorized()
        data = [
            {"id": p.name, "object": "model", "created": p.created, "owned_by": "hermes"}
            for p in profiles
        ]
        await send_json(send, 200, {"object": "list", "data": data})

    async def chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = _token(scope)
        body = await _read_body(receive)
        model: Any = None
        try:
            payload = json.loads(body)
            model = payload.get("model") if isinstance(payload, dict) else None
        except (ValueError, RecursionError):
            payload = None
        if not isinstance(model, str) or not model:
            if not self._valid(token):
                raise _unauthorized()
            what = "body is not valid JSON" if payload is None else "'model' is missing"
            raise Refused(
                400,
                f"{what}: name a profile as the model (GET /v1/models lists them)",
                "invalid_request_error",
                "model" if payload is not None else None,
            )
        profile = self.directory.get(model)
        if not self._opens(token, profile):
            raise self._refuse_model(token, model)
        assert profile is not None
        await self._relay(scope, receive, send, profile, "POST", None, body)

    async def passthrough(self, scope: Scope, receive: Receive, send: Send) -> None:
        name, _, rest = scope["path"][len(PROFILE_PREFIX) :].partition("/")
        token = _token(scope)
        profile = self.directory.get(name)
        if not self._opens(token, profile):
            raise self._refuse_model(token, name)
        assert profile is not None
        if not rest.startswith("v1/"):
            raise Refused(404, "not found", "invalid_request_error")
        method = scope["method"]
        if method not in ("GET", "POST"):
            raise Refused(
                405, "use GET or POST", "invalid_request_error", headers={"allow": "GET, POST"}
            )
        body = await _read_body(receive)
        # The path arrives percent-decoded: encode it again, so that nothing in it (a
        # blank, CR or LF) can end the request line to the gateway early.
        query = scope.get("query_string", b"").decode("latin-1")
        target = quote("/" + rest, safe=PATH_SAFE) + (f"?{query}" if query else "")
        await self._relay(scope, receive, send, profile, method, target, body)

    async def _relay(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        profile: Profile,
        method: str,
        target: str | None,
        body: bytes,
    ) -> None:
        if profile.problem is not None or profile.port is None:
            raise self._unavailable(profile, profile.problem or "no gateway.port")
        headers = b"authorization: Bearer %s\r\n" % profile.api_key
        for name in FORWARDED:
            value = _header(scope, name)
            if value:
                headers += b"%s: %s\r\n" % (name, value)
        client = self.pools.client(profile.host, profile.port)
        try:
            await relay(receive, send, client, method, target, headers, body)
        except GatewayUnreachable as exc:
            raise self._unavailable(profile, str(exc)) from None
        except UpstreamError as exc:
            raise Refused(
                502,
                f"the gateway of profile {profile.name!r} failed: {exc.detail}",
                "upstream_error",
                "gateway_error",
            ) from None

    def _unavailable(self, profile: Profile, detail: str) -> Refused:
        """503 with the profile's state, read the cheap way (its state file)."""
        state = read_state(Path(profile.dir), warn=False)
        observed = state.gateway_state or "unknown"
        desired = state.desired_state or "unknown"
        return Refused(
            503,
            f"profile {profile.name!r} is not serving (gateway {observed}, "
            f"desired {desired}): {detail}",
            "service_unavailable",
            "profile_unavailable",
            {"retry-after": str(RETRY_AFTER_S), "x-hermes-gateway-state": observed},
            profile=profile.name,
            gateway_state=observed,
            desired_state=desired,
            exit_reason=state.exit_reason,
        )


class IngressApp:
    """The ASGI callable: a few path tests per request, no router or middleware."""

    def __init__(self, ingress: Ingress) -> None:
        self.ingress = ingress

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off; nothing else is served
            return
        path, method = scope["path"], scope["method"]
        ingress = self.ingress
        try:
            if path == "/v1/chat/completions":
                _method(method, "POST")
                await ingress.chat(scope, receive, send)
            elif path == "/v1/models":
                _method(method, "GET")
                await ingress.models(scope, send)
            elif path.startswith(PROFILE_PREFIX):
                await ingress.passthrough(scope, receive, send)
            elif path == "/health":
                _method(method, "GET")
                await send_json(send, 200, {"status": "ok"})
            else:
                raise Refused(404, "not found", "invalid_request_error")
        except Refused as refused:
            await send_json(send, refused.status, refused.body, refused.headers)
        except ClientGone:
            pass


def _method(given: str, allowed: str) -> None:
    if given != allowed:
        raise Refused(405, f"use {allowed}", "invalid_request_error", headers={"allow": allowed})


def build_app(directory: Directory, keys: KeySource, pools: Pools) -> IngressApp:
    return IngressApp(Ingress(directory, keys, pools))
