"""The upstream side: one shared httpx.AsyncClient to the profile's model provider.

The profile pins the model: a request's `model` field is accepted (OpenAI clients
always send one) but the upstream always gets `model.name` from config.yaml, so a
profile's persona and provider cannot be bypassed by a client. SOUL.md is prepended
as the system message unless the request already carries one. Failures become a
GatewayError with the HTTP status and OpenAI-style error body the client gets.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import httpx

from hermes_container.gateway.settings import Settings

# Client errors about the request itself keep their status; anything else upstream
# is the provider's or the profile's problem, reported as a bad gateway.
PASS_THROUGH = frozenset({400, 404, 409, 413, 422, 429})
MAX_DETAIL = 300


class GatewayError(Exception):
    def __init__(self, status: int, message: str, kind: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "code": self.code}}


def prepare_payload(payload: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The body sent upstream: the profile's model, the persona first."""
    messages = payload["messages"]
    has_system = any(isinstance(m, dict) and m.get("role") == "system" for m in messages)
    if settings.soul and not has_system:
        messages = [{"role": "system", "content": settings.soul}, *messages]
    return {**payload, "model": settings.model_name, "messages": messages}


def _detail(body: bytes) -> str:
    try:
        obj = json.loads(body)
        message = obj["error"]["message"] if isinstance(obj["error"], dict) else obj["error"]
        text = str(message)
    except (ValueError, KeyError, TypeError):
        text = body.decode("utf-8", "replace").strip()
    return text[:MAX_DETAIL] or "no detail"


def error_for_status(status: int, body: bytes) -> GatewayError:
    detail = _detail(body)
    if status in PASS_THROUGH:
        return GatewayError(status, f"model provider: {detail}", "upstream_error", str(status))
    if status in (401, 403):
        return GatewayError(
            502,
            f"the model provider rejected this profile's credentials (HTTP {status}): {detail}",
            "upstream_auth_error",
            str(status),
        )
    if status in (408, 504):
        return GatewayError(
            504, f"the model provider timed out (HTTP {status})", "upstream_timeout", str(status)
        )
    return GatewayError(
        502, f"the model provider failed (HTTP {status}): {detail}", "upstream_error", str(status)
    )


class Relay:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = settings.completions_url
        parts = urlsplit(self.url)
        # Only scheme://host:port ever appears in a message: never a path token or userinfo.
        self.where = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        self.headers = {"content-type": "application/json", "accept": "application/json"}
        if settings.model_api_key:
            self.headers["authorization"] = f"Bearer {settings.model_api_key}"
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=settings.connect_timeout_s,
                read=settings.read_timeout_s,
                write=settings.read_timeout_s,
                pool=settings.connect_timeout_s,
            ),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            trust_env=False,  # the provider is configured per profile, not via proxy env
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    def transport_error(self, exc: httpx.HTTPError) -> GatewayError:
        if isinstance(exc, httpx.TimeoutException):
            timeout = (
                self.settings.connect_timeout_s
                if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
                else self.settings.read_timeout_s
            )
            return GatewayError(
                504,
                f"the model provider at {self.where} did not answer within {timeout:g}s",
                "upstream_timeout",
            )
        if isinstance(exc, httpx.ConnectError):
            return GatewayError(
                502, f"cannot connect to the model provider at {self.where}", "upstream_unavailable"
            )
        return GatewayError(
            502,
            f"the model provider at {self.where} broke the connection ({type(exc).__name__})",
            "upstream_error",
        )

    async def complete(self, body: bytes) -> httpx.Response:
        """Non-streaming: the full upstream reply, or a GatewayError."""
        try:
            response = await self.client.post(self.url, content=body, headers=self.headers)
        except httpx.HTTPError as exc:
            raise self.transport_error(exc) from None
        if response.status_code >= 400:
            raise error_for_status(response.status_code, response.content)
        return response

    async def open_stream(self, body: bytes) -> httpx.Response:
        """Streaming: an open response whose status was checked; the caller closes it."""
        request = self.client.build_request("POST", self.url, content=body, headers=self.headers)
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self.transport_error(exc) from None
        if response.status_code >= 400:
            try:
                content = await response.aread()
            except httpx.HTTPError:
                content = b""
            finally:
                await response.aclose()
            raise error_for_status(response.status_code, content)
        return response
