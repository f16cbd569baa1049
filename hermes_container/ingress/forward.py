"""Relay one request to a profile's gateway and its answer back, as it arrives.

The gateway's own client (gateway/upstream.py: keep-alive pool, httptools parser) does
the HTTP; one pool per gateway address. Bodies are passed on piece by piece: a chunk
is read from the gateway only once the previous one was handed to the client's socket
(uvicorn's send waits while the socket's buffer is full), and the gateway connection
stops being read past upstream.HIGH_WATER, so a slow client slows the gateway down
instead of filling memory. A client that hangs up cancels the exchange: the gateway
connection is closed, and the gateway in turn hangs up on its model provider.
"""

from __future__ import annotations

import asyncio
import json

from starlette.types import Receive, Send

from hermes_container.gateway.upstream import (
    FastResponse,
    UpstreamClient,
    UpstreamError,
)

CONNECT_TIMEOUT_S = 2.0  # a gateway is local: a slow connect means it is not there
# Each gateway enforces its provider's timeouts; this only ends a gateway that hangs.
READ_TIMEOUT_S = 3600.0
# Hop-by-hop headers belong to one connection; uvicorn frames the body itself.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}
)
DOWN_KINDS = frozenset({"connect", "connect_timeout"})
CLIENT_GONE = 499


class GatewayUnreachable(Exception):
    """Nothing accepted the connection: the gateway is not serving."""


class Pools:
    """One pooled client per gateway address, kept for the ingress's lifetime."""

    def __init__(self) -> None:
        self._clients: dict[tuple[str, int], UpstreamClient] = {}

    def client(self, host: str, port: int) -> UpstreamClient:
        found = self._clients.get((host, port))
        if found is None:
            authority = f"[{host}]" if ":" in host else host
            url = f"http://{authority}:{port}/v1/chat/completions"
            found = UpstreamClient(url, CONNECT_TIMEOUT_S, READ_TIMEOUT_S)
            self._clients[(host, port)] = found
        return found

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()


def _head(response: FastResponse) -> list[tuple[bytes, bytes]]:
    return [
        (name.encode("latin-1"), value.encode("latin-1"))
        for name, value in response.headers.items()
        if name not in HOP_BY_HOP
    ]


async def relay(
    receive: Receive,
    send: Send,
    client: UpstreamClient,
    method: str,
    target: str | None,  # None: the client's own chat completions path (precomputed)
    headers: bytes,
    body: bytes,
) -> int:
    """Relay the exchange; returns the status sent, or 499 if the client hung up.

    Raises GatewayUnreachable (nothing sent yet) when the gateway does not accept the
    connection, UpstreamError when it fails before its answer began.
    """
    task = asyncio.current_task()
    assert task is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        gone = True
        task.cancel()  # wherever the exchange waits: for the head, a chunk or the client

    watcher = asyncio.ensure_future(watch())
    response: FastResponse | None = None
    try:
        try:
            if target is None:
                response = await client.post(headers, body)
            else:
                response = await client.request(method, target, headers, body)
        except UpstreamError as exc:
            if exc.kind in DOWN_KINDS:
                raise GatewayUnreachable(exc.detail) from None
            raise
        status = response.status
        await send({"type": "http.response.start", "status": status, "headers": _head(response)})
        try:
            while (chunk := await response.next_chunk()) is not None:
                # Pieces that arrived together leave together, with the end of the body
                # when it came too: one write to the client, one wake-up.
                chunk += response.take_buffered()
                last = response.at_end
                await send({"type": "http.response.body", "body": chunk, "more_body": not last})
                if last:
                    return status
        except UpstreamError as exc:
            # The head is gone already: an event stream gets the failure in-band (as the
            # gateway reports its provider's); other bodies end short, and uvicorn closes
            # the connection so the client sees the truncation.
            if "event-stream" in response.headers.get("content-type", ""):
                await send({"type": "http.response.body", "body": _sse_error(exc)})
            return 502
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return status
    except asyncio.CancelledError:
        if not gone:
            raise  # shutdown, not the client
        task.uncancel()
        return CLIENT_GONE
    finally:
        watcher.cancel()
        if response is not None:
            response.close()  # pooled when read to the end, else the connection is closed


def _sse_error(exc: UpstreamError) -> bytes:
    err = {
        "error": {
            "message": f"the gateway broke the stream: {exc.detail}",
            "type": "upstream_error",
            "code": None,
        }
    }
    return b"data: " + json.dumps(err).encode() + b"\n\ndata: [DONE]\n\n"
