"""The upstream side: one pooled client to the profile's model provider.

select_client picks it once at start: the lean client (upstream.py) by default, httpx
(upstream_httpx.py) when a proxy applies to model.base_url or model.client says so.

The profile pins the model: a request's `model` field is accepted (OpenAI clients
always send one) but the upstream always gets `model.name` from config.yaml, so a
client cannot pick another model or provider. SOUL.md goes first as a system message;
a client's own system messages follow it, kept as they are, so the persona cannot be
bypassed either, unless the profile says `gateway.persona: unless-client-system`
(then a client's system message replaces SOUL.md). A non-streamed answer is read up
to `gateway.max_response_bytes` and refused past it. Failures become a GatewayError
with the HTTP status and OpenAI-style error body the client gets.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from hermes_container.config_schema import redact_url
from hermes_container.gateway.profile_settings import Settings
from hermes_container.gateway.upstream import (
    Upstream,
    UpstreamClient,
    UpstreamError,
    UpstreamResponse,
)
from hermes_container.metrics.gateway import NULL_METER, Meter
from hermes_container.metrics.names import http_status_kind

log = logging.getLogger("hermes.gateway")

# Client errors about the request itself keep their status; anything else upstream
# is the provider's or the profile's problem, reported as a bad gateway.
PASS_THROUGH = frozenset({400, 413, 422, 429})
MAX_DETAIL = 300
MAX_ERROR_BODY = 64 * 1024  # an error's body only feeds MAX_DETAIL characters of detail


class GatewayError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        kind: str,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.code = code
        self.headers = dict(headers or {})  # sent with the error response

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "code": self.code}}


def _has_system(messages: list[Any]) -> bool:
    return any(isinstance(m, dict) and m.get("role") == "system" for m in messages)


def prepare_payload(payload: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The body sent upstream: the profile's model, the persona first (gateway.persona)."""
    messages = payload["messages"]
    replaced = settings.persona == "unless-client-system" and _has_system(messages)
    if settings.soul and not replaced:
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


def error_for_status(
    status: int, body: bytes, headers: Mapping[str, str] | None = None
) -> GatewayError:
    detail = _detail(body)
    if status in PASS_THROUGH:
        # A 429's Retry-After is the provider's instruction to whoever retries (the
        # kanban dispatcher honours it), so it travels with the status.
        retry_after = (headers or {}).get("retry-after", "").strip()
        passed = {"retry-after": retry_after} if status == 429 and retry_after else None
        return GatewayError(
            status, f"model provider: {detail}", "upstream_error", str(status), passed
        )
    if status in (401, 403):
        return GatewayError(
            502,
            f"the model provider rejected this profile's credentials (HTTP {status}): {detail}",
            "upstream_auth_error",
            str(status),
        )
    if 300 <= status < 400:
        return GatewayError(
            502,
            f"the model provider redirected (HTTP {status}); check model.base_url",
            "upstream_error",
            str(status),
        )
    if status in (408, 504):
        return GatewayError(
            504, f"the model provider timed out (HTTP {status})", "upstream_timeout", str(status)
        )
    return GatewayError(
        502, f"the model provider failed (HTTP {status}): {detail}", "upstream_error", str(status)
    )


def select_client(settings: Settings) -> Upstream:
    """The client for this profile's provider, announced once in the log."""
    url, timeouts = settings.completions_url, (settings.connect_timeout_s, settings.read_timeout_s)
    if settings.model_client == "fast" and settings.proxy_from:
        log.warning("model.client is fast: ignoring the proxy in %s", settings.proxy_from)
    if settings.model_client == "fast" or (
        settings.model_client == "auto" and settings.proxy is None
    ):
        fast = UpstreamClient(url, *timeouts)
        log.info("relay direct to %s", fast.where)
        return fast
    # Imported here: httpx costs memory and start-up time only where it is used.
    from hermes_container.gateway.upstream_httpx import HttpxClient

    client = HttpxClient(url, *timeouts, proxy=settings.proxy)
    if settings.proxy is None:
        log.info("relay direct to %s (httpx client: model.client)", client.where)
    else:
        log.info("relay via proxy %s (%s)", redact_url(settings.proxy), settings.proxy_from)
    return client


class Relay:
    """The profile's provider: one pooled client, failures as GatewayErrors."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = select_client(settings)
        # Only scheme://host:port (and the proxy's) ever appears in a message: never a
        # path token or userinfo.
        self.where = self.client.where
        headers = (
            "content-type: application/json\r\naccept: application/json, text/event-stream\r\n"
        )
        if settings.model_api_key:
            headers += f"authorization: Bearer {settings.model_api_key}\r\n"
        self.headers = headers.encode("latin-1")
        self.meter: Meter = NULL_METER  # runner.py swaps in the real one once ready

    def close(self) -> None:
        self.client.close()

    def upstream_error(self, exc: UpstreamError) -> GatewayError:
        self.meter.upstream_error(exc.kind)
        if exc.kind in ("connect_timeout", "read_timeout"):
            timeout = (
                self.settings.connect_timeout_s
                if exc.kind == "connect_timeout"
                else self.settings.read_timeout_s
            )
            return GatewayError(
                504,
                f"the model provider at {self.where} did not answer within {timeout:g}s",
                "upstream_timeout",
            )
        if exc.kind == "connect":
            return GatewayError(
                502,
                f"cannot connect to the model provider at {self.where} ({exc.detail})",
                "upstream_unavailable",
            )
        if exc.kind == "too_large":
            return GatewayError(
                502,
                f"the model provider at {self.where} answered with more than "
                f"gateway.max_response_bytes ({self.settings.max_response_bytes} bytes)",
                "upstream_error",
                "response_too_large",
            )
        return GatewayError(
            502,
            f"the model provider at {self.where} broke the exchange: {exc.detail}",
            "upstream_error",
        )

    async def send(self, body: bytes) -> UpstreamResponse:
        """POST the body; an open response with a 2xx status, or a GatewayError."""
        try:
            response = await self.client.post(self.headers, body)
        except UpstreamError as exc:
            raise self.upstream_error(exc) from None
        if response.status >= 300:  # redirects are not followed: base_url is wrong
            try:
                content = await response.read(MAX_ERROR_BODY)
            except UpstreamError:  # too large included: the status alone says enough
                content = b""
            finally:
                response.close()
            self.meter.upstream_error(http_status_kind(response.status))
            raise error_for_status(response.status, content, response.headers)
        return response

    async def complete(self, body: bytes) -> tuple[bytes, str]:
        """Non-streaming: the reply body and its content type, or a GatewayError.

        At most gateway.max_response_bytes are held: past them the read stops and close()
        hangs up on the provider (a stream is relayed piece by piece, never held).
        """
        response = await self.send(body)
        try:
            content = await response.read(self.settings.max_response_bytes)
        except UpstreamError as exc:
            raise self.upstream_error(exc) from None
        finally:
            response.close()
        return content, response.headers.get("content-type", "application/json")
