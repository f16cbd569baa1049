"""The public-path corpus against a LIVE `hermes dashboard` over raw HTTP, in both modes.

The corpus (500+ variants) and its oracle come from tests/unit/test_dashboard_paths.py,
which drives them through the middlewares in-process. Here each target goes onto the
wire byte-for-byte (raw socket, keep-alive, no client-side normalisation) to a real
uvicorn subprocess on 127.0.0.1: the loopback token mode, and the OAuth gate with a
real OIDC provider configured. Only allowlisted paths may be served without
credentials; everything else gets 400/401/403/404 or a redirect to the login page,
and no unauthenticated body ever carries profile data or the session token.

Two things differ on the wire from the in-process scope: the HTTP parser drops a
`#fragment` and leading spaces before the target, so `/api/status#` and ` /` are
served as `/api/status` and `/` (the server never sees anything else); `wire_form`
applies exactly that before asking the oracle.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from hermes_container.home import HermesHome
from hermes_container.profiles import create_profile, ensure_default_profile
from tests.unit.dashboard_support import clean_env, dashboard_process, oidc_provider
from tests.unit.test_dashboard_paths import CORPUS, TOKEN_PAGES, expected_public

TOKEN = "live-corpus-token-5f0c1e9a7b"
MARKER = "quokka7"  # a profile name that no corpus target contains
USER = ("alice", {"email": "alice@example.com", "email_verified": True})
# Served with 200 unauthenticated in both modes (the login page only in OAuth mode).
MUST_SERVE = {"/api/status", "/api/auth/providers", "/static/app.js", "/static/app.css"}
DENIED = {400, 401, 403, 404}
REDIRECTS = {301, 302, 303, 307, 308}
BUDGET_S = 30.0  # per mode; a keep-alive pass takes about a second


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class Wire:
    """A minimal HTTP/1.1 client that sends the request target verbatim over keep-alive."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.buf = b""
        self.connections = 0

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self.buf = b""

    def _recv(self) -> bytes:
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the server")
        return chunk

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            self.buf += self._recv()
        head, _, self.buf = self.buf.partition(marker)
        return head

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self.buf += self._recv()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _read_response(self) -> Response:
        head = self._until(b"\r\n\r\n")
        status_line, *lines = head.split(b"\r\n")
        version, status, *_ = status_line.split(b" ", 2)
        headers: dict[str, str] = {}
        for line in lines:
            key, _, value = line.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while size := int(self._until(b"\r\n").split(b";")[0], 16):
                parts.append(self._exactly(size))
                self._exactly(2)
            self._until(b"\r\n")  # no trailers expected
            body = b"".join(parts)
        elif "content-length" in headers:
            body = self._exactly(int(headers["content-length"]))
        else:
            body = self.buf
            try:
                while True:
                    body += self._recv()
            except ConnectionError:
                pass
            self.close()
        if headers.get("connection", "").lower() == "close" or version == b"HTTP/1.0":
            self.close()
        return Response(int(status), headers, body)

    def get(self, target: bytes, headers: dict[str, str] | None = None) -> Response:
        lines = [b"GET " + target + b" HTTP/1.1", f"Host: 127.0.0.1:{self.port}".encode()]
        lines += [f"{k}: {v}".encode() for k, v in (headers or {}).items()]
        request = b"\r\n".join([*lines, b"", b""])
        for attempt in range(2):
            fresh = self.sock is None
            if fresh:
                self.sock = socket.create_connection(("127.0.0.1", self.port), 5)
                self.connections += 1
            assert self.sock is not None
            try:
                self.sock.sendall(request)
                return self._read_response()
            except (ConnectionError, OSError):
                self.close()
                if fresh or attempt:  # a fresh connection dropped: that is the answer
                    return Response(0, {}, b"")
        raise AssertionError("unreachable")


def wire_form(target: str) -> str:
    """What the server's HTTP parser makes of the target: fragment and leading spaces go."""
    return target.lstrip(" ").split("#", 1)[0]


def secrets_in(resp: Response) -> list[str]:
    """Profile data, or the session token outside an HTML page.

    Loopback mode injects the token into every page it renders (its 404 page too), by
    design: same-origin policy and the Host check are what keep it from other sites.
    """
    html = resp.headers.get("content-type", "").startswith("text/html")
    watched = (MARKER, '"profiles":[') if html else (MARKER, '"profiles":[', TOKEN)
    return [s for s in watched if s.encode() in resp.body]


@pytest.fixture
def home(tmp_path: Path) -> HermesHome:
    home = HermesHome(tmp_path / "home")
    ensure_default_profile(home)
    create_profile(home, "alpha")
    create_profile(home, MARKER)
    return home


@pytest.fixture(scope="module")
def issuer() -> Iterator[str]:
    with oidc_provider([USER]) as url:
        yield url


def oauth_env(issuer: str) -> dict[str, str]:
    return {
        "HERMES_DASHBOARD_OIDC_ISSUER": issuer,
        "HERMES_DASHBOARD_OIDC_CLIENT_ID": "hermes-dashboard",
        "HERMES_DASHBOARD_OIDC_CLIENT_SECRET": "live-corpus-client-secret",
        "HERMES_DASHBOARD_ALLOWED_EMAILS": "alice@example.com",
    }


def check_corpus(wire: Wire, mode: str) -> dict[str, int]:
    """Send every corpus target; assert per target; returns counts by outcome."""
    counts = {"served": 0, "denied": 0, "redirected": 0}
    failures: list[str] = []
    for target in CORPUS:
        effective = wire_form(target)
        token_page = mode == "token" and effective in TOKEN_PAGES
        public = expected_public(effective)
        resp = wire.get(target.encode("utf-8"))
        status = resp.status
        why = ""
        if status >= 500 or status == 0:
            why = "server error or dropped connection"
        elif not token_page and secrets_in(resp):
            why = f"unauthenticated body carries {secrets_in(resp)}"
        elif token_page:
            if status != 200:
                why = "a loopback page should be served"
        elif public:
            must = MUST_SERVE | ({"/login"} if mode == "oauth" else set())
            if effective.split("?", 1)[0] in must and status != 200:
                why = "an allowlisted path was not served"
            elif status not in {200, *DENIED, *REDIRECTS}:
                why = "unexpected status for a public path"
        elif status == 200:
            why = "a gated target was served without credentials"
        elif status in REDIRECTS:
            location = urlsplit(resp.headers.get("location", ""))
            if mode != "oauth" or location.netloc or not location.path.startswith("/login"):
                why = f"redirect elsewhere than the login page: {location.geturl()!r}"
        elif status not in DENIED:
            why = "unexpected status for a gated target"
        if why:
            failures.append(f"{mode} {target!r} (wire {effective!r}) -> {status}: {why}")
            continue
        if status == 200:
            counts["served"] += 1
        elif status in REDIRECTS:
            counts["redirected"] += 1
        else:
            counts["denied"] += 1
    assert not failures, "\n".join(failures)
    return counts


def test_corpus_live_token_mode(home: HermesHome) -> None:
    env = clean_env(HERMES_HOME=str(home.root), HERMES_DASHBOARD_SESSION_TOKEN=TOKEN)
    with dashboard_process(env) as (port, _proc):
        wire = Wire(port)
        started = time.monotonic()
        status = wire.get(b"/api/status")
        assert status.status == 200 and b'"auth_mode":"token"' in status.body
        counts = check_corpus(wire, "token")
        # The same connection, with the token: the gated content is there and visible.
        authed = wire.get(b"/api/profiles", {"X-Hermes-Session-Token": TOKEN})
        assert authed.status == 200 and MARKER.encode() in authed.body
        wrong = wire.get(b"/api/profiles", {"X-Hermes-Session-Token": TOKEN[:-1]})
        assert wrong.status == 401 and not secrets_in(wrong)
        elapsed = time.monotonic() - started
        wire.close()
    print(f"token mode: {counts}, {wire.connections} connections, {elapsed:.2f}s")
    assert counts["denied"] >= 400, counts
    assert wire.connections < len(CORPUS) // 3, wire.connections  # keep-alive mostly held
    assert elapsed < BUDGET_S, elapsed


def test_corpus_live_oauth_mode(home: HermesHome, issuer: str) -> None:
    import httpx

    env = clean_env(HERMES_HOME=str(home.root), **oauth_env(issuer))
    with dashboard_process(env) as (port, _proc):
        wire = Wire(port)
        started = time.monotonic()
        status = wire.get(b"/api/status")
        assert status.status == 200 and b'"auth_required":true' in status.body
        counts = check_corpus(wire, "oauth")
        login = wire.get(b"/auth/login/oidc")
        assert login.status == 302 and login.headers["location"].startswith(issuer)
        elapsed = time.monotonic() - started
        wire.close()
        # A real login: the gated content the corpus never saw is really there.
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10) as browser:
            start = browser.get("/auth/login/oidc")
            idp = httpx.post(start.headers["location"], data={"sub": USER[0]}, timeout=10)
            done = browser.get(idp.headers["location"].removeprefix(base))
            assert done.status_code == 303, done.text
            profiles = browser.get("/api/profiles")
            assert profiles.status_code == 200 and MARKER in profiles.text
    print(f"oauth mode: {counts}, {wire.connections} connections, {elapsed:.2f}s")
    assert counts["denied"] + counts["redirected"] >= 400, counts
    assert wire.connections < len(CORPUS) // 3, wire.connections
    assert elapsed < BUDGET_S, elapsed
