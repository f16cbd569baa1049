"""Relaying through an HTTP(S) proxy: httpx when a proxy applies, the fast client otherwise.

All traffic stays on 127.0.0.1: ForwardProxy is a small real forward proxy (absolute-form
requests and CONNECT tunnels) that records what it was asked and forwards to the fake
upstream. Gateways are real subprocesses; proxy variables are cleared from the test
environment first so an outer proxy setting can never leak into a test.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from hermes_container.gateway.profile_settings import Settings, env_proxy, load_settings, redact_url
from hermes_container.gateway.relay import select_client
from hermes_container.gateway.upstream import UpstreamClient
from hermes_container.gateway.upstream_httpx import HttpxClient
from tests.conftest import REPO, free_port, run_hermes
from tests.fake_upstream import FakeUpstream
from tests.unit.conftest import GatewayProfile, hang_up_mid_stream, self_signed_cert

HELLO = {"messages": [{"role": "user", "content": "hello"}]}
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@dataclass(frozen=True)
class Seen:
    method: str
    target: str  # absolute URL, or host:port for CONNECT
    headers: dict[str, str]  # lower-case names


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """(head without the blank line, whatever body bytes came with it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        if not more:
            raise ConnectionError("closed before the end of the head")
        data += more
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


class _ProxyHandler(socketserver.BaseRequestHandler):
    server: _ProxyServer

    def handle(self) -> None:
        client: socket.socket = self.request
        head, rest = _read_head(client)
        line, *lines = head.decode("latin-1").split("\r\n")
        method, target, _ = line.split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
        self.server.owner.record(Seen(method, target, headers))
        if method == "CONNECT":
            self._tunnel(client, target, rest)
        else:
            self._forward(client, method, target, lines, rest)

    def _tunnel(self, client: socket.socket, target: str, rest: bytes) -> None:
        host, _, port = target.rpartition(":")
        assert host == "127.0.0.1", target  # nothing leaves the machine
        upstream = socket.create_connection((host, int(port)))
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        if rest:
            upstream.sendall(rest)
        back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
        back.start()
        _pipe(client, upstream)
        back.join(30)

    def _forward(
        self, client: socket.socket, method: str, target: str, lines: list[str], rest: bytes
    ) -> None:
        url = urlsplit(target)
        assert url.hostname == "127.0.0.1", target
        keep = [x for x in lines if not x.lower().startswith(("proxy-", "connection:"))]
        path = url.path + (f"?{url.query}" if url.query else "")
        head = "\r\n".join([f"{method} {path} HTTP/1.1", *keep, "connection: close"])
        try:
            upstream = socket.create_connection((url.hostname, url.port or 80), timeout=2)
        except OSError:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
            return
        upstream.settimeout(None)
        upstream.sendall(head.encode("latin-1") + b"\r\n\r\n" + rest)
        length = next((int(x.split(":")[1]) for x in keep if x.lower().startswith("content-l")), 0)
        while length > len(rest):  # the rest of the request body
            more = client.recv(65536)
            upstream.sendall(more)
            rest += more
        # One request per client connection: tell the client, then relay to the end.
        reply_head, reply_rest = _read_head(upstream)
        client.sendall(reply_head + b"\r\nconnection: close\r\n\r\n" + reply_rest)
        _pipe(upstream, client)


class _ProxyServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: ForwardProxy


class ForwardProxy:
    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self._server = _ProxyServer(("127.0.0.1", 0), _ProxyHandler)
        self._server.owner = self
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def record(self, seen: Seen) -> None:
        self.seen.append(seen)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    p = ForwardProxy()
    yield p
    p.stop()


@pytest.fixture(autouse=True)
def no_outer_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Gateways inherit os.environ: start every test with no proxy variables at all."""
    for name in list(os.environ):
        if name.lower() in PROXY_VARS:
            monkeypatch.delenv(name)


def _chat(profile: GatewayProfile, stream: bool = False) -> httpx.Response:
    with profile.client(headers=profile.auth) as c:
        return c.post("/v1/chat/completions", json={**HELLO, "stream": stream})


def _stream_pieces(profile: GatewayProfile) -> list[str]:
    with (
        profile.client(headers=profile.auth) as c,
        c.stream("POST", "/v1/chat/completions", json={**HELLO, "stream": True}) as r,
    ):
        assert r.status_code == 200
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    deltas = [json.loads(e)["choices"][0]["delta"] for e in events[:-1]]
    return [d["content"] for d in deltas if "content" in d]


def _assert_relayed_through(
    profile: GatewayProfile, proxy: ForwardProxy, upstream: FakeUpstream
) -> None:
    """Non-streaming and streaming exchanges both pass the proxy; persona injected."""
    response = _chat(profile)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "echo: hello"
    target = f"http://127.0.0.1:{upstream.port}/v1/chat/completions"
    assert [(s.method, s.target) for s in proxy.seen] == [("POST", target)]
    soul = (profile.dir / "SOUL.md").read_text().strip()
    assert upstream.requests[-1].body["messages"][0] == {"role": "system", "content": soul}
    pieces = ["one ", "two ", "three ", "four"]
    upstream.set(chunks=pieces, chunk_delay=0.1)
    assert _stream_pieces(profile) == pieces
    assert len(proxy.seen) == 2 and len(upstream.requests) == 2


def test_env_http_proxy_carries_the_relay(
    profile: GatewayProfile,
    proxy: ForwardProxy,
    fake_upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    gateway = profile.start()
    _assert_relayed_through(profile, proxy, fake_upstream)
    assert f"relay via proxy {proxy.url} (HTTP_PROXY)" in gateway.stderr()


def test_model_proxy_in_config_with_credentials_never_logged(
    profile: GatewayProfile, proxy: ForwardProxy, fake_upstream: FakeUpstream
) -> None:
    profile.configure(model={"proxy": f"http://relay-user:s3cret-pw@127.0.0.1:{proxy.port}"})
    gateway = profile.start()
    _assert_relayed_through(profile, proxy, fake_upstream)
    basic = base64.b64encode(b"relay-user:s3cret-pw").decode()
    assert proxy.seen[0].headers["proxy-authorization"] == f"Basic {basic}"
    assert "proxy-authorization" not in fake_upstream.requests[-1].headers
    # The proxy's address is announced; its credentials are not, in any form.
    log = gateway.stderr()
    assert f"relay via proxy {proxy.url} (model.proxy)" in log
    assert "s3cret" not in log and "relay-user" not in log and basic not in log
    gateway.terminate()
    assert "s3cret" not in gateway.stderr()


def test_no_proxy_covering_the_provider_goes_direct(
    profile: GatewayProfile,
    proxy: ForwardProxy,
    fake_upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")  # what the slot run script sets
    gateway = profile.start()
    assert _chat(profile).status_code == 200
    assert _chat(profile, stream=True).status_code == 200
    assert proxy.seen == [] and len(fake_upstream.requests) == 2
    assert f"relay direct to http://127.0.0.1:{fake_upstream.port}" in gateway.stderr()


def test_proxy_down_is_502(profile: GatewayProfile) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    profile.configure(model={"proxy": dead})
    profile.start()
    for stream in (False, True):
        response = _chat(profile, stream)
        assert response.status_code == 502
        error = response.json()["error"]
        assert error["type"] == "upstream_unavailable"
        assert f"via proxy {dead}" in error["message"]


def test_upstream_hanging_behind_the_proxy_is_504(
    profile: GatewayProfile, proxy: ForwardProxy, fake_upstream: FakeUpstream
) -> None:
    profile.configure(model={"proxy": proxy.url, "read_timeout_s": 0.5})
    profile.start()
    fake_upstream.set(delay=30)
    for stream in (False, True):
        started = time.monotonic()
        response = _chat(profile, stream)
        assert response.status_code == 504
        assert response.json()["error"]["type"] == "upstream_timeout"
        assert time.monotonic() - started < 5
    assert len(proxy.seen) == 2


def test_https_provider_through_a_connect_tunnel(
    profile: GatewayProfile,
    proxy: ForwardProxy,
    fake_upstream: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cert, key = self_signed_cert(tmp_path)
    with _TlsFront(cert, key, fake_upstream.port) as front:
        profile.configure(model={"base_url": f"https://127.0.0.1:{front.port}/v1"})
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # not for https
        gateway = profile.start(env={"SSL_CERT_FILE": str(cert)})  # trust the test CA
        assert _chat(profile).json()["choices"][0]["message"]["content"] == "echo: hello"
        assert _stream_pieces(profile) == ["echo: ", "hello "]
    assert {(s.method, s.target) for s in proxy.seen} == {("CONNECT", f"127.0.0.1:{front.port}")}
    assert f"relay via proxy {proxy.url} (HTTPS_PROXY)" in gateway.stderr()


def test_forced_httpx_client_without_a_proxy(
    profile: GatewayProfile, fake_upstream: FakeUpstream
) -> None:
    profile.configure(model={"client": "httpx", "read_timeout_s": 0.5})
    gateway = profile.start()
    assert _chat(profile).json()["choices"][0]["message"]["content"] == "echo: hello"
    fake_upstream.set(chunks=["a ", "b ", "c"], chunk_delay=0.05)
    assert _stream_pieces(profile) == ["a ", "b ", "c"]
    fake_upstream.set(status=429, error="slow down")
    response = _chat(profile)
    assert response.status_code == 429 and "slow down" in response.json()["error"]["message"]
    fake_upstream.set(chunks=["a", "b"], chunk_delay=30)  # a stall mid-stream: in-band 504
    with (
        profile.client(headers=profile.auth) as c,
        c.stream("POST", "/v1/chat/completions", json={**HELLO, "stream": True}) as r,
    ):
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert json.loads(events[1])["error"]["type"] == "upstream_timeout"
    assert "(httpx client: model.client)" in gateway.stderr()
    assert "Traceback" not in gateway.stderr()


def test_httpx_client_hangs_up_when_the_client_does(
    profile: GatewayProfile, fake_upstream: FakeUpstream
) -> None:
    profile.configure(model={"client": "httpx"})
    gateway = profile.start()
    hang_up_mid_stream(profile, fake_upstream)
    assert _chat(profile).status_code == 200  # still serving after the hang-up
    assert "Traceback" not in gateway.stderr()


BAD_PROXY_CONFIGS: dict[str, tuple[dict[str, Any], str]] = {
    "socks": ({"proxy": "socks5://u:hidden-pw@127.0.0.1:1080"}, "must be an http(s) proxy URL"),
    "no scheme": ({"proxy": "127.0.0.1:3128"}, "must be an http(s) proxy URL"),
    "bad port": ({"proxy": "http://127.0.0.1:99999"}, "must be an http(s) proxy URL"),
    "not a string": ({"proxy": 3128}, "model.proxy must be a non-empty string"),
    "proxy with fast": (
        {"proxy": "http://127.0.0.1:3128", "client": "fast"},
        "model.proxy needs model.client auto or httpx",
    ),
    "unknown client": ({"client": "curl"}, "model.client must be auto, fast or httpx"),
}


@pytest.mark.parametrize("case", sorted(BAD_PROXY_CONFIGS))
def test_bad_proxy_config_exits_78_with_one_line(profile: GatewayProfile, case: str) -> None:
    model, expected = BAD_PROXY_CONFIGS[case]
    profile.configure(model=model)
    proc = run_hermes("gateway", "run", "--supervised", env={"HERMES_ALLOW_ROOT_GATEWAY": "1"})
    assert proc.returncode == 78, proc.stderr
    assert proc.stderr.count("\n") == 1 and expected in proc.stderr
    assert "hidden-pw" not in proc.stderr


def test_unusable_env_proxy_exits_78_without_its_password(profile: GatewayProfile) -> None:
    env = {"HERMES_ALLOW_ROOT_GATEWAY": "1", "HTTP_PROXY": "socks5://u:hidden-pw@10.0.0.1:1080"}
    proc = run_hermes("gateway", "run", env=env)
    assert proc.returncode == 78 and proc.stderr.count("\n") == 1
    assert "HTTP_PROXY must be an http(s) proxy URL" in proc.stderr
    assert "socks5://10.0.0.1:1080" in proc.stderr and "hidden-pw" not in proc.stderr
    # model.client: fast ignores the environment's proxy altogether.
    profile.configure(model={"client": "fast"})
    assert load_settings("default", profile.dir, env).proxy is None


# select_client and the proxy rules, without processes


def _settings(**overrides: object) -> Settings:
    base: dict[str, object] = {
        "profile": "t",
        "profile_dir": Path("/nonexistent"),
        "host": "127.0.0.1",
        "port": 1,
        "model_base_url": "https://api.example.com/v1",
        "model_name": "m",
        "soul": None,
    }
    return Settings(**{**base, **overrides})  # type: ignore[arg-type]


def _selected(settings: Settings) -> UpstreamClient | HttpxClient:
    async def pick() -> UpstreamClient | HttpxClient:
        client = select_client(settings)
        assert isinstance(client, UpstreamClient | HttpxClient)
        client.close()
        return client

    return asyncio.run(pick())


def test_select_client_decisions(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "hermes.gateway")
    assert isinstance(_selected(_settings()), UpstreamClient)
    via = _settings(proxy="http://u:pw@proxy.corp:3128", proxy_from="HTTPS_PROXY")
    client = _selected(via)
    assert isinstance(client, HttpxClient)
    assert client.where == "https://api.example.com via proxy http://proxy.corp:3128"
    assert "relay via proxy http://proxy.corp:3128 (HTTPS_PROXY)" in caplog.text
    assert isinstance(_selected(_settings(model_client="httpx")), HttpxClient)
    # fast wins over an environment proxy (load_settings then leaves proxy unset).
    fast = _settings(model_client="fast", proxy_from="HTTPS_PROXY")
    assert isinstance(_selected(fast), UpstreamClient)
    assert "model.client is fast: ignoring the proxy in HTTPS_PROXY" in caplog.text
    assert "pw@" not in caplog.text


P = "http://p:1"


@pytest.mark.parametrize(
    ("env", "url", "expected"),
    [
        ({}, "http://h/v1", None),
        ({"HTTP_PROXY": P}, "http://h/v1", (P, "HTTP_PROXY")),
        ({"HTTP_PROXY": P}, "https://h/v1", None),  # scheme-specific
        ({"HTTPS_PROXY": "p:3128"}, "https://h/v1", ("http://p:3128", "HTTPS_PROXY")),
        ({"ALL_PROXY": P}, "https://h/v1", (P, "ALL_PROXY")),
        ({"ALL_PROXY": "http://a:1", "https_proxy": P}, "https://h/v1", (P, "https_proxy")),
        ({"HTTPS_PROXY": "http://upper:1", "https_proxy": P}, "https://h/v1", (P, "https_proxy")),
        ({"HTTPS_PROXY": "http://upper:1", "https_proxy": ""}, "https://h/v1", None),
        ({"HTTP_PROXY": P, "NO_PROXY": "127.0.0.1,localhost"}, "http://127.0.0.1:9/v1", None),
        ({"HTTP_PROXY": P, "no_proxy": "localhost"}, "http://localhost:9/v1", None),
        ({"HTTPS_PROXY": P, "NO_PROXY": ".example.com"}, "https://api.example.com/v1", None),
        ({"HTTPS_PROXY": P, "NO_PROXY": "example.com"}, "https://example.com/v1", None),
        ({"HTTPS_PROXY": P, "NO_PROXY": "*"}, "https://h/v1", None),
        ({"HTTP_PROXY": P, "NO_PROXY": "::1"}, "http://[::1]:8/v1", None),
        ({"HTTP_PROXY": P, "NO_PROXY": "h:8080"}, "http://h:8080/v1", None),
        ({"HTTP_PROXY": P, "NO_PROXY": "h:8080"}, "http://h:9090/v1", (P, "HTTP_PROXY")),
        ({"HTTPS_PROXY": P, "NO_PROXY": "other.com"}, "https://example.com/v1", (P, "HTTPS_PROXY")),
    ],
)  # fmt: skip
def test_env_proxy_rules(env: dict[str, str], url: str, expected: tuple[str, str] | None) -> None:
    assert env_proxy(url, env) == expected


@pytest.mark.parametrize(
    "env",
    [
        {"HTTP_PROXY": "http://a:1", "http_proxy": "http://b:1"},
        {"HTTPS_PROXY": "http://a:1", "https_proxy": ""},
        {"Https_Proxy": "http://a:1", "ALL_PROXY": "http://c:1", "NO_PROXY": "x"},
    ],
)
def test_env_proxies_read_like_urllib(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from hermes_container.gateway.profile_settings import _env_proxies

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    mine = {scheme: value for scheme, (value, _) in _env_proxies(os.environ).items()}
    assert mine == urllib.request.getproxies_environment()


def test_load_settings_resolves_the_proxy(profile: GatewayProfile) -> None:
    env = {"HTTP_PROXY": "http://env-proxy:3128"}
    s = load_settings("default", profile.dir, env)
    assert (s.proxy, s.proxy_from, s.model_client) == (
        "http://env-proxy:3128",
        "HTTP_PROXY",
        "auto",
    )
    assert load_settings("default", profile.dir, {**env, "NO_PROXY": "127.0.0.1"}).proxy is None
    profile.configure(model={"proxy": "https://u:pw@cfg-proxy:8443", "client": "httpx"})
    s = load_settings("default", profile.dir, env)
    assert (s.proxy, s.proxy_from) == ("https://u:pw@cfg-proxy:8443", "model.proxy")
    assert "pw" not in repr(s) and "cfg-proxy" not in repr(s)
    fast = {"proxy": None, "client": "fast"}
    profile.configure(model=fast)
    s = load_settings("default", profile.dir, env)
    assert (s.proxy, s.proxy_from, s.model_client) == (None, "HTTP_PROXY", "fast")


def test_redact_url() -> None:
    assert redact_url("http://u:p@h:3128/x?y") == "http://h:3128"
    assert redact_url("https://[::1]/") == "https://[::1]"
    assert redact_url("http://u:p@h:notaport") == "<unparseable URL>"


def test_default_gateway_never_imports_httpx_or_urllib_request() -> None:
    code = (
        "import sys, asyncio\n"
        "from hermes_container.gateway.relay import select_client\n"
        "from hermes_container.gateway.profile_settings import Settings\n"
        "s = Settings('t', None, 'h', 1, 'http://127.0.0.1:9/v1', 'm', None)\n"
        "select_client(s).close()\n"
        "print('httpx' in sys.modules, 'urllib.request' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARS}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "False"]


# TLS in front of the fake upstream, for the CONNECT test


class _TlsFront:
    """Terminates TLS on a free port and pipes the plain bytes to the fake upstream."""

    def __init__(self, cert: Path, key: Path, upstream_port: int) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            tls = self.context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        threading.Thread(target=_pipe, args=(upstream, tls), daemon=True).start()
        _pipe(tls, upstream)

    def __enter__(self) -> _TlsFront:
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()
