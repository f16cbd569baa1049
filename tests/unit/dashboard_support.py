"""Helpers for the dashboard tests: a fake manager, a real OIDC provider, ASGI drivers."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from hermes_container.supervision.service_status import ServiceStatus
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
DASHBOARD_ENV_PREFIX = "HERMES_DASHBOARD_"


class FakeManager:
    """In-memory stand-in for the s6 manager (unit tests only; the browser test uses s6)."""

    name = "fake"

    def __init__(self, profiles: list[str]) -> None:
        self.running = dict.fromkeys(profiles, True)
        self.calls: list[tuple[str, str]] = []
        self.actors: list[str | None] = []

    def register(self, profile: str, *, start: bool = False) -> None:
        self.running.setdefault(profile, start)

    def unregister(self, profile: str) -> None:
        self.running.pop(profile, None)

    def _do(self, action: str, profile: str, up: bool) -> ServiceStatus:
        from hermes_container.events.append import ACTOR

        self.calls.append((action, profile))
        self.actors.append(ACTOR.get())  # who the ledger would name as acting
        self.running[profile] = up
        return self.status(profile)

    def start(self, profile: str, *, wait: float | None = None) -> ServiceStatus:
        return self._do("start", profile, True)

    def stop(self, profile: str, *, wait: float | None = None) -> ServiceStatus:
        return self._do("stop", profile, False)

    def restart(self, profile: str, *, wait: float | None = None) -> ServiceStatus:
        return self._do("restart", profile, True)

    def status(self, profile: str) -> ServiceStatus:
        up = self.running.get(profile, False)
        return ServiceStatus(
            profile=profile,
            registered=True,
            up=up,
            ready=up,
            pid=4242 if up else None,
            uptime_s=12.0 if up else None,
            restarts=0,
            port=8642,
            desired_state="running" if up else "stopped",
            gateway_state="running" if up else "stopped",
        )


def clean_env(**extra: str) -> dict[str, str]:
    """os.environ without any HERMES_DASHBOARD_* (so the host's settings never leak in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(DASHBOARD_ENV_PREFIX)}
    env.update(extra)
    return env


@contextlib.contextmanager
def oidc_provider(users: list[tuple[str, dict[str, Any]]] = ()) -> Iterator[str]:  # type: ignore[assignment]
    """A real OIDC provider (oidc-provider-mock, authlib inside) on 127.0.0.1; yields issuer."""
    import werkzeug.serving
    from oidc_provider_mock import User, app

    wsgi = app(
        require_nonce=True, user_claims=[User(sub=sub, claims=claims) for sub, claims in users]
    )
    server = werkzeug.serving.make_server("127.0.0.1", 0, wsgi, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def wait_port(port: int, proc: subprocess.Popen[str] | None = None, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"dashboard exited early: {proc.stderr.read() if proc.stderr else ''}"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


def _any_set(env: dict[str, str], *keys: str) -> bool:
    names = [DASHBOARD_ENV_PREFIX + key + suffix for key in keys for suffix in ("", "_FILE")]
    return any(env.get(name) for name in names)


@contextlib.contextmanager
def dashboard_process(
    env: dict[str, str], host: str = "127.0.0.1", port: int | None = None
) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """The real `hermes dashboard` as a subprocess; yields (port, process).

    With a login provider configured and no PUBLIC_URL / ALLOWED_HOSTS, the public URL
    is set to where the tests reach it (OAuth mode requires one), as a deployment would.
    """
    port = port or free_port()
    if _any_set(env, "OIDC_ISSUER", "GITHUB_CLIENT_ID") and not _any_set(
        env, "PUBLIC_URL", "ALLOWED_HOSTS"
    ):
        env = {**env, DASHBOARD_ENV_PREFIX + "PUBLIC_URL": f"http://127.0.0.1:{port}"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hermes_container",
            "dashboard",
            "--host",
            host,
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_port(port, proc)
        yield port, proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def raw_request(
    port: int, target: bytes, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """Send a request line byte-for-byte (no client-side normalisation); (status, body)."""
    lines = [b"GET " + target + b" HTTP/1.1", f"Host: 127.0.0.1:{port}".encode()]
    lines += [f"{k}: {v}".encode() for k, v in (headers or {}).items()]
    lines += [b"Connection: close", b"", b""]
    with socket.create_connection(("127.0.0.1", port), 5) as sock:
        sock.sendall(b"\r\n".join(lines))
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    data = b"".join(chunks)
    if not data:
        return 0, b""
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


def scope_for(
    target: str, *, method: str = "GET", headers: list[tuple[bytes, bytes]] = ()
) -> dict[str, Any]:  # type: ignore[assignment]
    """An ASGI scope as uvicorn builds it: raw_path as sent, path percent-decoded."""
    raw_target = target.encode("utf-8", "surrogateescape")
    raw_path, _, query = raw_target.partition(b"?")
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(raw_path.decode("latin-1")),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": list(headers),
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 9119),
    }


async def call_asgi(
    app: Any, scope: dict[str, Any], body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    messages: list[dict[str, Any]] = []
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    headers = {k.decode().lower(): v.decode("latin-1") for k, v in start.get("headers", [])}
    payload = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return start["status"], headers, payload


class Sentinel:
    """The app behind a middleware under test: records whether a request got through."""

    def __init__(self) -> None:
        self.reached: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"REACHED"})
