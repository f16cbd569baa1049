"""Fixtures for the gateway tests: a fake upstream and real gateway processes."""

from __future__ import annotations

import difflib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from hermes_container.envfile import read_env
from hermes_container.events import append
from hermes_container.home import HermesHome
from hermes_container.profiles import create_profile, ensure_default_profile
from hermes_container.state import GatewayState, read_state
from tests.conftest import free_port, wait_for
from tests.fake_upstream import FakeUpstream

START_TIMEOUT = 20.0


@pytest.fixture
def forget_ledgers() -> Iterator[None]:
    """record() keeps one open ledger per home for the process: close the ones this test
    opened, so none outlives its home (for modules that record in-process)."""
    yield
    with append._ledgers_lock:
        for ledger in append._ledgers.values():
            ledger.close()
        append._ledgers.clear()


@pytest.fixture
def fake_upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream


class GatewayProc:
    """A real `hermes gateway run` subprocess; stderr goes to a file for inspection."""

    def __init__(self, popen: subprocess.Popen[bytes], log: Path, profile: GatewayProfile) -> None:
        self.popen, self.log, self.profile = popen, log, profile

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = START_TIMEOUT) -> GatewayProc:
        def healthy() -> bool:
            if self.popen.poll() is not None:
                raise AssertionError(f"gateway exited {self.popen.returncode}: {self.stderr()}")
            try:
                response = httpx.get(self.profile.url("/health"), timeout=1, trust_env=False)
                return response.status_code == 200
            except httpx.TransportError:
                return False

        wait_for(healthy, timeout, "the gateway's /health")
        return self

    def terminate(self, timeout: float = 30.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)


class GatewayProfile:
    """A profile wired to the fake upstream on a free port, and gateways started on it."""

    def __init__(self, home: HermesHome, name: str, upstream: FakeUpstream, tmp: Path) -> None:
        self.home, self.name, self.upstream, self.tmp = home, name, upstream, tmp
        self.dir = home.profile_dir(name)
        self.port = free_port()
        self.procs: list[GatewayProc] = []
        self.configure()

    def configure(self, model: dict[str, Any] | None = None, **gateway: Any) -> None:
        """Rewrite config.yaml: our port, the fake upstream, short timeouts, then overrides."""
        data = {
            "model": {
                "base_url": self.upstream.base_url,
                "name": "test-model",
                "connect_timeout_s": 2,
                "read_timeout_s": 5,
                **(model or {}),
            },
            "gateway": {"port": self.port, "shutdown_grace_s": 10, **gateway},
        }
        (self.dir / "config.yaml").write_text(yaml.safe_dump(data))

    @property
    def api_key(self) -> str:
        return read_env(self.dir / ".env")["API_SERVER_KEY"]

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"}

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def state(self) -> GatewayState:
        return read_state(self.dir, warn=False)

    def spawn(
        self, *args: str, env: dict[str, str] | None = None, pass_fds: tuple[int, ...] = ()
    ) -> GatewayProc:
        """Start `hermes -p NAME gateway run ARGS` without waiting for it."""
        log = self.tmp / f"gateway-{len(self.procs)}.log"
        full_env = {**os.environ, "HERMES_ALLOW_ROOT_GATEWAY": "1", **(env or {})}
        with log.open("wb") as err:
            popen = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "hermes_container",
                    "-p",
                    self.name,
                    "gateway",
                    "run",
                    *args,
                ],
                env=full_env,
                stdout=subprocess.DEVNULL,
                stderr=err,
                pass_fds=pass_fds,
            )
        proc = GatewayProc(popen, log, self)
        self.procs.append(proc)
        return proc

    def start(self, *args: str, env: dict[str, str] | None = None) -> GatewayProc:
        return self.spawn(*args, env=env).wait_ready()

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url(""), trust_env=False, timeout=30, **kwargs)

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.kill()
                proc.popen.wait(10)


@pytest.fixture
def make_profile(
    hermes_home: HermesHome, fake_upstream: FakeUpstream, tmp_path: Path
) -> Iterator[Callable[[str], GatewayProfile]]:
    """Factory: `make_profile("name")` gives a configured profile (default: 'default')."""
    made: list[GatewayProfile] = []
    ensure_default_profile(hermes_home)

    def make(name: str = "default") -> GatewayProfile:
        if name != "default":
            create_profile(hermes_home, name)
        profile = GatewayProfile(hermes_home, name, fake_upstream, tmp_path)
        made.append(profile)
        return profile

    yield make
    for profile in made:
        profile.cleanup()


@pytest.fixture
def profile(make_profile: Callable[[str], GatewayProfile]) -> GatewayProfile:
    return make_profile("default")


@pytest.fixture
def gateway(profile: GatewayProfile) -> GatewayProc:
    """A running gateway of the default profile."""
    return profile.start()


@pytest.fixture
def alpha(make_profile: Callable[[str], GatewayProfile]) -> GatewayProfile:
    """Profile `alpha` with a running gateway to the fake provider."""
    profile = make_profile("alpha")
    profile.start()
    return profile


def hang_up_mid_stream(profile: GatewayProfile, fake_upstream: FakeUpstream) -> None:
    """Start a ~10 s streamed reply, hang up after the first chunk, and check the gateway
    stopped relaying at once and recorded the exchange as 499 (client disconnected)."""
    import json
    import sqlite3

    fake_upstream.set(chunks=[f"w{i} " for i in range(40)], chunk_delay=0.25)  # ~10 s
    hello = {"model": "m", "messages": [{"role": "user", "content": "hello"}], "stream": True}
    body = json.dumps(hello).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {profile.api_key}"
        f"\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode()
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", profile.port)) as sock:
        sock.sendall(head + body)
        received = b""
        while b"w0" not in received:
            received += sock.recv(65536)
    db = profile.dir / "sessions.db"

    def recorded() -> tuple[int, str] | None:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT status, error FROM exchanges").fetchone()  # type: ignore[no-any-return]

    status, error = wait_for(lambda: db.exists() and recorded(), what="the aborted exchange")
    assert (status, error) == (499, "client disconnected")
    assert time.monotonic() - started < 5  # not after the whole 10 s stream


def line_diff(before: str, after: str) -> tuple[list[str], list[str]]:
    """(the lines `after` lost, the lines it gained), in order."""
    removed, added = [], []
    for line in difflib.ndiff(before.splitlines(), after.splitlines()):
        if line.startswith("- "):
            removed.append(line[2:])
        elif line.startswith("+ "):
            added.append(line[2:])
    return removed, added


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A one-day certificate and key for 127.0.0.1 (openssl), as (cert.pem, key.pem)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def home(tmp_path: Path) -> HermesHome:
    """A home with the default profile and `alpha` (the dashboard tests')."""
    home = HermesHome(tmp_path / "home")
    ensure_default_profile(home)
    create_profile(home, "alpha")
    return home
