"""The relay's HTTP/1.1 client against real sockets: framing, keep-alive, failures, TLS."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from hermes_container.gateway.upstream import UpstreamClient, UpstreamError
from tests.conftest import free_port
from tests.fake_upstream import FakeUpstream
from tests.unit.conftest import self_signed_cert

BODY = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()
JSON = b"content-type: application/json\r\n"
LIMIT = 1 << 20  # read() always takes a cap (gateway.max_response_bytes)

Reply = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.startswith(b"content-length")
    )
    return head + await reader.readexactly(length)


async def _with_server(reply: Reply, test: Callable[[str], Awaitable[None]]) -> None:
    server = await asyncio.start_server(reply, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        await test(f"http://127.0.0.1:{port}/v1/chat/completions")


def test_keep_alive_reuses_one_connection(fake_upstream: FakeUpstream) -> None:
    async def run() -> None:
        client = UpstreamClient(fake_upstream.base_url + "/chat/completions", 2, 2)
        conns = set()
        for _ in range(5):
            response = await client.post(JSON, BODY)
            assert response.status == 200
            assert (
                json.loads(await response.read(LIMIT))["choices"][0]["message"]["content"]
                == "echo: hi"
            )
            conns.add(id(response.conn))
            response.close()
        client.close()
        assert len(conns) == 1

    asyncio.run(run())
    sent = fake_upstream.requests[-1]
    assert sent.headers["host"] == f"127.0.0.1:{fake_upstream.port}"
    assert sent.headers["content-type"] == "application/json" and sent.body["messages"]


def test_chunked_body_arrives_piece_by_piece() -> None:
    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for piece in (b"data: 1\n\n", b"data: 2\n\n"):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.05)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def test(url: str) -> None:
        client = UpstreamClient(url, 2, 2)
        response = await client.post(JSON, BODY)
        pieces = []
        while (chunk := await response.next_chunk()) is not None:
            pieces.append(chunk)
        assert pieces == [b"data: 1\n\n", b"data: 2\n\n"]
        response.close()
        client.close()

    asyncio.run(_with_server(reply, test))


def test_read_to_close_body_and_no_reuse() -> None:
    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")
        await writer.drain()
        writer.close()

    async def test(url: str) -> None:
        client = UpstreamClient(url, 2, 2)
        response = await client.post(JSON, BODY)
        assert await response.read(LIMIT) == b"all of it"
        assert not response.conn.reusable()
        response.close()
        assert client._checkout() is None

    asyncio.run(_with_server(reply, test))


def test_stale_idle_connection_is_retried_once() -> None:
    served = []

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        served.append(1)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # closes the kept-alive connection behind the client's back

    async def test(url: str) -> None:
        client = UpstreamClient(url, 2, 2)
        for _ in range(3):
            response = await client.post(JSON, BODY)
            assert await response.read(LIMIT) == b"ok"
            response.close()
        assert len(served) == 3

    asyncio.run(_with_server(reply, test))


def test_truncated_body_is_a_protocol_error() -> None:
    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort")
        await writer.drain()
        writer.close()

    async def test(url: str) -> None:
        response = await UpstreamClient(url, 2, 2).post(JSON, BODY)
        with pytest.raises(UpstreamError) as info:
            await response.read(LIMIT)
        assert info.value.kind == "protocol"

    asyncio.run(_with_server(reply, test))


def test_garbage_is_a_protocol_error() -> None:
    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()

    async def test(url: str) -> None:
        with pytest.raises(UpstreamError) as info:
            await UpstreamClient(url, 2, 2).post(JSON, BODY)
        assert info.value.kind == "protocol"

    asyncio.run(_with_server(reply, test))


def test_read_timeout_between_chunks() -> None:
    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    async def test(url: str) -> None:
        response = await UpstreamClient(url, 2, 0.3).post(JSON, BODY)
        assert await response.next_chunk() == b"abc"
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(UpstreamError) as info:
            await response.next_chunk()
        assert info.value.kind == "read_timeout" and loop.time() - started < 2
        response.close()

    asyncio.run(_with_server(reply, test))


def test_connection_refused_is_a_connect_error() -> None:
    async def run() -> None:
        with pytest.raises(UpstreamError) as info:
            await UpstreamClient(f"http://127.0.0.1:{free_port()}/v1", 2, 2).post(JSON, BODY)
        assert info.value.kind == "connect"

    asyncio.run(run())


def test_https_with_a_trusted_certificate(tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    cert, key = self_signed_cert(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)

    # A TLS front for the fake upstream: terminate TLS, pipe bytes both ways.
    async def front(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", fake_upstream.port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def run() -> None:
        server = await asyncio.start_server(front, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        async with server:
            client = UpstreamClient(f"https://127.0.0.1:{port}/v1/chat/completions", 5, 5)
            # Untrusted by the system store: the handshake fails as a connect error.
            with pytest.raises(UpstreamError) as info:
                await client.post(JSON, BODY)
            assert info.value.kind == "connect"
            client._ssl = ssl.create_default_context(cafile=str(cert))
            response = await client.post(JSON, BODY)
            assert (
                json.loads(await response.read(LIMIT))["choices"][0]["message"]["content"]
                == "echo: hi"
            )
            response.close()
            client.close()

    asyncio.run(run())
    assert fake_upstream.requests[-1].headers["host"].startswith("127.0.0.1:")


def test_client_rejects_non_http_urls() -> None:
    with pytest.raises(ValueError):
        UpstreamClient("ftp://example.org/x", 1, 1)
