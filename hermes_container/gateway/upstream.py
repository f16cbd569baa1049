"""A small HTTP/1.1 client for the relay's one job: POST JSON, read JSON or SSE back.

Why not httpx: measured on the target machine, an httpx request costs ~1.6 ms of
CPU (anyio cancel scopes, h11 in pure Python, model objects) against ~0.15 ms for
an asyncio protocol with the C `httptools` parser, and the relay-overhead budget is
1.5 ms in total. Scope is deliberately narrow: keep-alive pooling, http and https
(system CA store via `ssl`), Content-Length / chunked / read-to-close bodies,
connect and per-read timeouts, and no proxies or redirects: a provider behind a proxy
goes through upstream_httpx.py instead (relay.select_client chooses).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol, cast
from urllib.parse import urlsplit

import httptools

HIGH_WATER = 1024 * 1024  # buffered body bytes before we stop reading the provider
MAX_IDLE = 32

Kind = Literal["connect", "connect_timeout", "read_timeout", "protocol", "aborted", "too_large"]


class UpstreamError(Exception):
    def __init__(self, kind: Kind, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class UpstreamResponse(Protocol):
    """An open response, whichever client made it: what the relay and app.py use.

    Both clients' responses subclass it for `read`, written once over `next_chunk`.
    """

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    async def next_chunk(self) -> bytes | None: ...

    async def read(self, limit: int) -> bytes:
        """The rest of the body, or UpstreamError("too_large") once it passes `limit` bytes.

        A provider's answer is untrusted input: it is read piece by piece and given up
        at the first piece over the limit (at once if its Content-Length says so), so
        no more than `limit` bytes and one piece are held here, besides the client's own
        bounded read-ahead (HIGH_WATER here, one read in httpx). The caller's close()
        then hangs up instead of draining the rest.
        """
        declared = self.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise UpstreamError("too_large", f"Content-Length {declared} is over {limit} bytes")
        parts = []
        size = 0
        while (chunk := await self.next_chunk()) is not None:
            size += len(chunk)
            if size > limit:
                raise UpstreamError("too_large", f"the body is over {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    def take_buffered(self) -> bytes:
        """Body that already arrived, joined, without waiting; b"" where the client
        cannot tell (httpx)."""
        return b""

    def abort(self, reason: str) -> None: ...

    def close(self) -> None: ...


class Upstream(Protocol):
    """A pooled client for one provider URL (this module's, or upstream_httpx's)."""

    @property
    def where(self) -> str:
        """scheme://host[:port] (and the proxy, if any) for messages; never secrets."""
        ...

    async def post(self, headers: bytes, body: bytes) -> UpstreamResponse: ...

    def close(self) -> None: ...


class _Connection(asyncio.Protocol):
    """One keep-alive connection; httptools calls the on_* methods as bytes arrive."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._paused = False
        self.begin()

    def begin(self) -> None:
        """Fresh per-response state (a reused connection starts every exchange clean)."""
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.keep_alive = False
        self.complete = False
        self.received_any = False
        self.error: UpstreamError | None = None
        self.body: deque[bytes] = deque()
        self.buffered = 0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.fail(UpstreamError("protocol", f"invalid HTTP from the provider: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete and self.error is None:
            te = self.headers.get("transfer-encoding", "")
            if self.headers_done and "content-length" not in self.headers and not te:
                self.complete = True  # a read-to-close body ends with the connection
            else:
                self.error = UpstreamError("protocol", "the provider closed the connection")
        self._wake()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()  # only meaningful until the end
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # waiting, from the relay's side
    def fail(self, error: UpstreamError) -> None:
        self.error = error
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _wait(self, timeout: float) -> None:
        # One lazily re-armed timer per connection instead of a timer (or a wait_for
        # task) per read: a stream of many small chunks stays cheap.
        self._deadline = self.loop.time() + timeout
        if self._timer is None:
            self._timer = self.loop.call_at(self._deadline, self._on_timer)
        self._waiter = self.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _on_timer(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # nobody waiting: the next wait arms a fresh timer
        if self.loop.time() >= self._deadline:
            waiter.set_exception(UpstreamError("read_timeout", "no data within the read timeout"))
        else:
            self._timer = self.loop.call_at(self._deadline, self._on_timer)

    def _check(self) -> None:
        if self.error is not None:
            raise self.error
        if self.closed and not self.complete:
            raise UpstreamError("protocol", "the provider closed the connection")

    async def read_head(self, timeout: float) -> None:
        while not self.headers_done:
            self._check()
            await self._wait(timeout)

    async def next_chunk(self, timeout: float) -> bytes | None:
        """The next piece of body as it arrived, or None at the end of the response."""
        while True:
            if self.body:
                chunk = self.body.popleft()
                self.buffered -= len(chunk)
                if self._paused and self.buffered < HIGH_WATER // 2 and self.transport:
                    self._paused = False
                    self.transport.resume_reading()
                return chunk
            if self.complete:
                return None
            self._check()
            await self._wait(timeout)

    def take_buffered(self) -> bytes:
        """Every piece of body that already arrived, joined, without waiting (b"" if none)."""
        if not self.body:
            return b""
        data = b"".join(self.body)
        self.body.clear()
        self.buffered = 0
        if self._paused and self.transport:
            self._paused = False
            self.transport.resume_reading()
        return data

    def reusable(self) -> bool:
        return (
            self.complete
            and not self.closed
            and self.error is None
            and not self.body
            and self.keep_alive
        )

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.transport.close()


@dataclass
class FastResponse(UpstreamResponse):
    client: UpstreamClient
    conn: _Connection

    @property
    def status(self) -> int:
        return self.conn.status

    @property
    def headers(self) -> dict[str, str]:
        return self.conn.headers

    async def next_chunk(self) -> bytes | None:
        return await self.conn.next_chunk(self.client.read_timeout)

    def take_buffered(self) -> bytes:
        """What else already arrived: the ingress relays it in the same write."""
        return self.conn.take_buffered()

    @property
    def at_end(self) -> bool:
        """Whether the body is complete and all of it was taken (next_chunk says None)."""
        return self.conn.complete and not self.conn.body

    def abort(self, reason: str) -> None:
        """Hang up now; a pending or later read raises UpstreamError("aborted")."""
        if not self.conn.complete:
            self.conn.fail(UpstreamError("aborted", reason))

    def close(self) -> None:
        """Back to the pool if the response was read to the end, else hang up."""
        self.client.release(self.conn)


class UpstreamClient:
    def __init__(self, url: str, connect_timeout: float, read_timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        default_port = self.port == (443 if self.tls else 80)
        self.authority = host if default_port else f"{host}:{self.port}"
        self.where = f"{parts.scheme}://{self.authority}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._request_line = f"POST {target} HTTP/1.1\r\nhost: {self.authority}\r\n".encode()
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._ssl: ssl.SSLContext | None = None
        self._idle: list[_Connection] = []

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.tls and self._ssl is None:
            self._ssl = ssl.create_default_context()  # lazily: the CA store costs memory
        return self._ssl

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        context = self._ssl_context()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop),
                    self.host,
                    self.port,
                    ssl=context,
                    server_hostname=self.host if context else None,
                )
        except TimeoutError:
            raise UpstreamError("connect_timeout", "connect timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamError("connect", exc.strerror or str(exc)) from None
        return conn

    def _checkout(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        return None

    async def _exchange(self, conn: _Connection, request: bytes) -> FastResponse:
        conn.begin()
        assert conn.transport is not None
        conn.transport.write(request)  # head and body in one write: one segment, one wake-up
        try:
            await conn.read_head(self.read_timeout)
        except BaseException:
            conn.close()
            raise
        return FastResponse(self, conn)

    async def post(self, headers: bytes, body: bytes) -> FastResponse:
        """POST `body`; `headers` are extra `name: value\\r\\n` lines. Returns at the head."""
        return await self._send(self._request_line, headers, body)

    async def request(self, method: str, target: str, headers: bytes, body: bytes) -> FastResponse:
        """Any method to any path of the same origin (the ingress relays to gateways so)."""
        line = f"{method} {target} HTTP/1.1\r\nhost: {self.authority}\r\n".encode()
        return await self._send(line, headers, body)

    async def _send(self, request_line: bytes, headers: bytes, body: bytes) -> FastResponse:
        request = b"%s%scontent-length: %d\r\n\r\n%s" % (
            request_line,
            headers,
            len(body),
            body,
        )
        conn = self._checkout()
        if conn is not None:
            try:
                return await self._exchange(conn, request)
            except UpstreamError as exc:
                # An idle connection the provider had just closed: retry once on a new one,
                # but only if nothing at all came back (the request was never answered).
                if exc.kind != "protocol" or conn.received_any:
                    raise
        return await self._exchange(await self._connect(), request)

    def release(self, conn: _Connection) -> None:
        if conn.reusable() and len(self._idle) < MAX_IDLE:
            self._idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
