"""The relay's client when the provider is reached through an HTTP(S) proxy: httpx.

upstream.py is the fast path and speaks no proxy protocol; httpx does (absolute-form
requests for http://, CONNECT tunnels for https://, proxy credentials from the URL)
at ~1.6 ms of CPU per request, a price only proxied profiles pay. relay.select_client
imports this module only when it is chosen, so a default gateway never loads httpx.
It offers what upstream.Upstream promises and raises the same UpstreamError kinds,
so the relay's 502/504 mapping does not care which client is in use.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Coroutine, Mapping
from typing import Any

import httpx

from hermes_container.gateway.profile_settings import redact_url
from hermes_container.gateway.upstream import MAX_IDLE, Kind, UpstreamError, UpstreamResponse


def _kind(exc: httpx.HTTPError) -> Kind:
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return "connect_timeout"
    if isinstance(exc, httpx.TimeoutException):  # read, or a write the provider stalled
        return "read_timeout"
    if isinstance(exc, httpx.ConnectError | httpx.ProxyError | httpx.UnsupportedProtocol):
        return "connect"
    return "protocol"


class HttpxResponse(UpstreamResponse):
    """An open streamed response; close() hands the connection back to httpx's pool."""

    def __init__(self, client: HttpxClient, response: httpx.Response) -> None:
        self.client = client
        self.response = response
        self._chunks: AsyncIterator[bytes] = response.aiter_bytes()
        self._reading: asyncio.Future[bytes] | None = None
        self._aborted: str | None = None

    @property
    def status(self) -> int:
        return self.response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self.response.headers

    async def next_chunk(self) -> bytes | None:
        """The next piece of body as it arrived, or None at the end of the response."""
        while True:
            if self._aborted is not None:
                raise UpstreamError("aborted", self._aborted)
            # Each read runs as its own future so abort(), called from another task,
            # can cancel just the read (httpx cannot close a response another task reads).
            self._reading = asyncio.ensure_future(anext(self._chunks, b""))
            try:
                chunk = await self._reading
            except asyncio.CancelledError:
                if self._aborted is None or _cancelling():
                    raise  # we were cancelled ourselves (shutdown), not aborted
                continue
            except httpx.HTTPError as exc:
                raise self.client.error(exc) from None
            finally:
                self._reading = None
            if not chunk:
                return None  # aiter_bytes never yields b"": the body is complete
            return chunk

    def abort(self, reason: str) -> None:
        """Hang up now; a pending or later read raises UpstreamError("aborted")."""
        if self._aborted is None and not self.response.is_closed:
            self._aborted = reason
            if self._reading is not None:
                self._reading.cancel()

    def close(self) -> None:
        """Release the connection: pooled if read to the end, else closed."""
        if not self.response.is_closed:
            self.client.spawn(self.response.aclose())


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class HttpxClient:
    """One shared httpx.AsyncClient for the provider URL, optionally via a proxy."""

    def __init__(
        self, url: str, connect_timeout: float, read_timeout: float, proxy: str | None
    ) -> None:
        self.url = httpx.URL(url)
        host = self.url.host
        authority = f"[{host}]" if ":" in host else host
        port = f":{self.url.port}" if self.url.port is not None else ""
        self.where = f"{self.url.scheme}://{authority}{port}"
        if proxy is not None:
            self.where += f" via proxy {redact_url(proxy)}"
        # The system CA store, as the fast client uses (httpx would pick certifi's):
        # a corporate TLS-inspecting proxy's CA is installed there, not in certifi.
        context = ssl.create_default_context()
        self._secrets = _userinfo(proxy)
        self._client = httpx.AsyncClient(
            # trust_env=False: the proxy is chosen once, by select_client, and nothing
            # else in the environment (netrc, SSL_CERT_*) changes httpx's behaviour.
            trust_env=False,
            proxy=_proxy(proxy, context),
            verify=context,
            timeout=httpx.Timeout(
                connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout
            ),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=MAX_IDLE),
            # Bodies are relayed as they come, without content-encoding: ask for none.
            headers={"accept-encoding": "identity"},
        )
        self._raw_headers = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def _parse(self, headers: bytes) -> list[tuple[bytes, bytes]]:
        # The relay passes the same pre-encoded `name: value\r\n` block every time.
        if headers is not self._raw_headers:
            pairs = (line.partition(b":") for line in headers.split(b"\r\n") if line)
            self._headers = [(name.strip(), value.strip()) for name, _, value in pairs]
            self._raw_headers = headers
        return self._headers

    def error(self, exc: httpx.HTTPError) -> UpstreamError:
        detail = str(exc) or type(exc).__name__
        for secret in self._secrets:  # httpx messages should not carry them; be sure
            detail = detail.replace(secret, "***")
        return UpstreamError(_kind(exc), detail)

    async def post(self, headers: bytes, body: bytes) -> HttpxResponse:
        """POST `body`; `headers` are extra `name: value\\r\\n` lines. Returns at the head."""
        request = self._client.build_request(
            "POST", self.url, headers=self._parse(headers), content=body
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self.error(exc) from None
        return HttpxResponse(self, response)

    def spawn(self, closing: Coroutine[Any, Any, None]) -> None:
        """Run an aclose() in the background: the relay's close() is synchronous."""
        task = asyncio.ensure_future(closing)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        self.spawn(self._client.aclose())


def _proxy(url: str | None, context: ssl.SSLContext) -> httpx.Proxy | None:
    if url is None:
        return None
    # TLS to an https proxy also trusts the system store (httpcore only allows a
    # context for https proxies).
    return httpx.Proxy(url, ssl_context=context if url.startswith("https:") else None)


def _userinfo(proxy: str | None) -> list[str]:
    if proxy is None:
        return []
    url = httpx.URL(proxy)
    return [s for s in (url.userinfo.decode(), url.username, url.password) if len(s) > 2]
