"""The ingress: a real `hermes ingress run` in front of real gateways, driven by the
`openai` SDK as a chat client would drive it.

Two profiles whose personas (SOUL.md) differ share one fake provider, so which profile
served a request shows in the system message the provider received.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from hermes_container.home import HermesHome
from tests.conftest import free_port, run_hermes, wait_for
from tests.fake_upstream import FakeUpstream
from tests.unit.conftest import GatewayProfile

SOULS = {
    "alpha": "You are Alpha, who answers in haiku.",
    "beta": "You are Beta, a terse ship's computer.",
}
HERMES = (sys.executable, "-m", "hermes_container")
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]


class Ingress:
    def __init__(self, popen: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.popen, self.port, self.log = popen, port, log
        self.url = f"http://127.0.0.1:{port}"

    def key(self) -> str:
        result = run_hermes("ingress", "key")
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def openai(self, key: str, base: str = "/v1") -> openai.OpenAI:
        # No retries: a 503 must reach the test, not be retried after its Retry-After.
        return openai.OpenAI(
            api_key=key,
            base_url=self.url + base,
            max_retries=0,
            timeout=30,
            http_client=openai.DefaultHttpxClient(trust_env=False),
        )

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(30)


@pytest.fixture
def ingress(hermes_home: HermesHome, tmp_path: Path) -> Iterator[Ingress]:
    port = free_port()
    log = tmp_path / "ingress.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERMES_INGRESS_")}
    with log.open("wb") as err:
        popen = subprocess.Popen(
            [*HERMES, "ingress", "run", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    ingress = Ingress(popen, port, log)

    def healthy() -> bool:
        if popen.poll() is not None:
            raise AssertionError(f"ingress exited {popen.returncode}: {log.read_text()}")
        try:
            return httpx.get(ingress.url + "/health", timeout=1, trust_env=False).is_success
        except httpx.TransportError:
            return False

    wait_for(healthy, 20, "the ingress's /health")
    yield ingress
    assert ingress.stop() == 0, log.read_text()


@pytest.fixture
def two(make_profile: Callable[[str], GatewayProfile]) -> dict[str, GatewayProfile]:
    """alpha and beta, each with its own persona and a running gateway."""
    profiles = {}
    for name, soul in SOULS.items():
        profile = make_profile(name)
        (profile.dir / "SOUL.md").write_text(soul + "\n")
        profile.start()
        profiles[name] = profile
    return profiles


def _persona(upstream: FakeUpstream) -> str:
    return str(upstream.requests[-1].body["messages"][0]["content"])


def test_models_lists_what_the_key_opens(ingress: Ingress, two: dict[str, GatewayProfile]) -> None:
    every = [m.id for m in ingress.openai(ingress.key()).models.list()]
    assert every == ["default", "alpha", "beta"]
    assert [m.id for m in ingress.openai(two["alpha"].api_key).models.list()] == ["alpha"]
    assert [m.id for m in ingress.openai(two["beta"].api_key).models.list()] == ["beta"]
    with pytest.raises(openai.AuthenticationError) as info:
        ingress.openai("hk-not-a-key").models.list()
    assert info.value.status_code == 401


def test_chat_goes_to_the_profile_named_by_model(
    ingress: Ingress, two: dict[str, GatewayProfile], fake_upstream: FakeUpstream
) -> None:
    client = ingress.openai(ingress.key())
    for name in ("alpha", "beta", "alpha"):
        reply = client.chat.completions.create(model=name, messages=HELLO)
        assert reply.choices[0].message.content == "echo: hello there"
        assert _persona(fake_upstream) == SOULS[name]
    # A profile's own key reaches its own profile the same way.
    own = ingress.openai(two["beta"].api_key)
    own.chat.completions.create(model="beta", messages=HELLO)
    assert _persona(fake_upstream) == SOULS["beta"]


def test_stream_passes_through_as_it_arrives(
    ingress: Ingress, two: dict[str, GatewayProfile], fake_upstream: FakeUpstream
) -> None:
    fake_upstream.set(chunks=["one ", "two ", "three"], chunk_delay=0.4)
    client = ingress.openai(two["alpha"].api_key)
    started = time.monotonic()
    arrivals, text = [], ""
    stream = client.chat.completions.create(model="alpha", messages=HELLO, stream=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - started)
            text += chunk.choices[0].delta.content
    assert text == "one two three"
    assert _persona(fake_upstream) == SOULS["alpha"]
    # Unbuffered: the first piece arrived long before the last was even produced.
    assert len(arrivals) == 3
    assert arrivals[-1] - arrivals[0] > 0.6, arrivals


def test_unknown_and_forbidden_models_are_the_same_404(
    ingress: Ingress, two: dict[str, GatewayProfile]
) -> None:
    alpha = ingress.openai(two["alpha"].api_key)
    for model in ("nosuch", "beta"):  # beta exists, but alpha's key does not open it
        with pytest.raises(openai.NotFoundError) as info:
            alpha.chat.completions.create(model=model, messages=HELLO)
        assert info.value.code == "model_not_found"
        assert "exist" in str(info.value)
    with pytest.raises(openai.NotFoundError) as info:
        ingress.openai(ingress.key()).chat.completions.create(model="nosuch", messages=HELLO)
    assert info.value.code == "model_not_found"
    # A key that opens nothing is a 401, whatever the model.
    with pytest.raises(openai.AuthenticationError):
        ingress.openai("wrong").chat.completions.create(model="alpha", messages=HELLO)
    response = httpx.post(
        ingress.url + "/v1/chat/completions",
        json={"model": "alpha", "messages": HELLO},
        trust_env=False,
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_profile_path_for_clients_that_cannot_choose(
    ingress: Ingress, two: dict[str, GatewayProfile], fake_upstream: FakeUpstream
) -> None:
    # The ingress key opens every profile's path; the gateway answers as itself.
    for name in ("alpha", "beta"):
        client = ingress.openai(ingress.key(), base=f"/p/{name}/v1")
        assert [m.id for m in client.models.list()] == ["test-model"]  # the gateway's own
        client.chat.completions.create(model="anything", messages=HELLO)
        assert _persona(fake_upstream) == SOULS[name]
    # A profile key opens its own path only.
    beta_by_alpha = ingress.openai(two["alpha"].api_key, base="/p/beta/v1")
    with pytest.raises(openai.NotFoundError) as info:
        beta_by_alpha.chat.completions.create(model="x", messages=HELLO)
    assert info.value.code == "model_not_found"
    own = ingress.openai(two["beta"].api_key, base="/p/beta/v1")
    own.chat.completions.create(model="x", messages=HELLO)
    assert _persona(fake_upstream) == SOULS["beta"]


def test_a_profile_path_cannot_smuggle_a_request_to_the_gateway(
    ingress: Ingress, two: dict[str, GatewayProfile]
) -> None:
    """A decoded CR LF in the path stays inside the path the gateway gets: its 404."""
    auth = {"authorization": f"Bearer {ingress.key()}"}
    with httpx.Client(base_url=ingress.url, headers=auth, trust_env=False) as client:
        smuggled = client.get("/p/alpha/v1/models%0D%0AX-Injected:%201%20x")
        assert smuggled.status_code == 404
        assert smuggled.json()["error"]["message"] == "not found"  # the gateway's answer
        assert client.get("/p/alpha/v1/models").json()["data"][0]["id"] == "test-model"


def test_a_stopped_gateway_is_503_with_its_state(
    ingress: Ingress, two: dict[str, GatewayProfile]
) -> None:
    assert two["beta"].procs[0].terminate() == 0
    response = httpx.post(
        ingress.url + "/v1/chat/completions",
        json={"model": "beta", "messages": HELLO},
        headers={"authorization": f"Bearer {ingress.key()}"},
        trust_env=False,
    )
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) > 0
    error = response.json()["error"]
    assert error["code"] == "profile_unavailable"
    assert (error["profile"], error["gateway_state"]) == ("beta", "stopped")
    with pytest.raises(openai.InternalServerError) as info:
        ingress.openai(two["beta"].api_key).chat.completions.create(model="beta", messages=HELLO)
    assert info.value.status_code == 503
    # The other profile is untouched.
    alpha = ingress.openai(two["alpha"].api_key)
    alpha.chat.completions.create(model="alpha", messages=HELLO)


def test_profiles_come_and_go_while_a_stream_is_in_flight(
    ingress: Ingress,
    two: dict[str, GatewayProfile],
    make_profile: Callable[[str], GatewayProfile],
    fake_upstream: FakeUpstream,
) -> None:
    key = ingress.key()
    client = ingress.openai(key)
    fake_upstream.set(chunks=[f"w{i} " for i in range(12)], chunk_delay=0.25)
    stream = client.chat.completions.create(model="alpha", messages=HELLO, stream=True)
    pieces = iter(stream)
    text = next(pieces).choices[0].delta.content or ""
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gamma", messages=HELLO)
    gamma = make_profile("gamma")
    (gamma.dir / "SOUL.md").write_text("You are Gamma.\n")
    gamma.start()
    fake_upstream.set()  # gamma's answer comes at once
    reply = client.chat.completions.create(model="gamma", messages=HELLO)
    assert reply.choices[0].message.content == "echo: hello there"
    assert _persona(fake_upstream) == "You are Gamma."
    assert "gamma" in [m.id for m in client.models.list()]
    gamma.procs[0].terminate()
    deleted = run_hermes("profile", "delete", "--yes", "gamma")
    assert deleted.returncode == 0, deleted.stderr
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gamma", messages=HELLO)
    assert "gamma" not in [m.id for m in client.models.list()]
    # The stream that was in flight all along arrives whole.
    for chunk in pieces:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
    assert text == "".join(f"w{i} " for i in range(12))


def test_a_client_hanging_up_cancels_the_gateway_request(
    ingress: Ingress, two: dict[str, GatewayProfile], fake_upstream: FakeUpstream
) -> None:
    alpha = two["alpha"]
    fake_upstream.set(chunks=[f"w{i} " for i in range(40)], chunk_delay=0.25)  # ~10 s
    body = json.dumps({"model": "alpha", "messages": HELLO, "stream": True}).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer "
        f"{alpha.api_key}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", ingress.port)) as sock:
        sock.sendall(head + body)
        received = b""
        while b"w0" not in received:
            received += sock.recv(65536)

    def recorded() -> tuple[int, str] | None:
        with sqlite3.connect(alpha.dir / "sessions.db") as conn:
            return conn.execute("SELECT status, error FROM exchanges").fetchone()  # type: ignore[no-any-return]

    # The gateway saw its client (the ingress) leave and stopped relaying at once.
    status, error = wait_for(recorded, 5, "the exchange to be recorded")
    assert (status, error) == (499, "client disconnected")
    assert time.monotonic() - started < 5


def test_the_key_file_is_generated_once_private_and_rotates_live(
    ingress: Ingress, hermes_home: HermesHome, two: dict[str, GatewayProfile]
) -> None:
    key = ingress.key()
    assert key == ingress.key()  # generated once
    path = hermes_home.root / "ingress" / "key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    shown = json.loads(run_hermes("ingress", "key", "--json").stdout)
    assert shown == {"key": key, "source": "generated", "file": str(path), "rotated": False}
    rotated = run_hermes("ingress", "key", "--rotate", "--json")
    assert rotated.returncode == 0, rotated.stderr
    new = json.loads(rotated.stdout)["key"]
    assert new != key and new == ingress.key()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # The running ingress takes the new key and refuses the old one, without a restart.
    assert [m.id for m in ingress.openai(new).models.list()] == ["default", "alpha", "beta"]
    with pytest.raises(openai.AuthenticationError):
        ingress.openai(key).models.list()
    ingress.stop()
    log = ingress.log.read_text()
    for secret in (key, new, two["alpha"].api_key, two["beta"].api_key):
        assert secret not in log  # never logged


def test_a_key_from_the_environment_wins_and_cannot_be_rotated(
    hermes_home: HermesHome, tmp_path: Path
) -> None:
    assert run_hermes("ingress", "key", env={"HERMES_INGRESS_KEY": "hik-mine"}).stdout == (
        "hik-mine\n"
    )
    refused = run_hermes("ingress", "key", "--rotate", env={"HERMES_INGRESS_KEY": "hik-mine"})
    assert refused.returncode == 1
    assert "HERMES_INGRESS_KEY" in refused.stderr
    keyfile = tmp_path / "ingress.key"
    keyfile.write_text("hik-from-file\n")
    shown = run_hermes("ingress", "key", env={"HERMES_INGRESS_KEY_FILE": str(keyfile)})
    assert shown.stdout == "hik-from-file\n"
    missing = run_hermes("ingress", "key", env={"HERMES_INGRESS_KEY_FILE": str(tmp_path / "no")})
    assert missing.returncode == 78
    assert not (hermes_home.root / "ingress").exists()  # nothing generated meanwhile


class FloodingGateway:
    """Stands in for a gateway that streams faster than its client reads: one connection,
    an endless event stream of numbered 64 KiB pieces, blocking writes, and a count of
    what the kernel accepted. With backpressure that count stops growing while nobody
    reads at the far end; without it the ingress would take everything into memory."""

    PIECE = 64 * 1024
    LIMIT = 512 * 1024 * 1024  # far beyond every buffer between the two ends

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.written = 0
        self.finished = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @classmethod
    def piece(cls, index: int) -> bytes:
        head = b"data: %08d " % index
        return head + b"x" * (cls.PIECE - len(head) - 2) + b"\n\n"

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        try:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
            )
            index = 0
            while self.written < self.LIMIT:
                conn.sendall(b"%x\r\n%s\r\n" % (self.PIECE, self.piece(index)))
                self.written += self.PIECE
                index += 1
        except OSError:
            pass  # the ingress hung up on us: what a client leaving must cause
        finally:
            conn.close()
            self.listener.close()
            self.finished.set()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_slow_client_slows_the_gateway_instead_of_filling_memory(
    ingress: Ingress, hermes_home: HermesHome
) -> None:
    from hermes_container.profiles import create_profile

    flood = FloodingGateway()
    config = create_profile(hermes_home, "flood") / "config.yaml"
    port_line = next(line for line in config.read_text().splitlines() if "port:" in line)
    config.write_text(config.read_text().replace(port_line, f"  port: {flood.port}"))
    rss_before = _rss_mb(ingress.popen.pid)
    body = {"model": "flood", "messages": HELLO, "stream": True}
    auth = {"authorization": f"Bearer {ingress.key()}"}
    with (
        httpx.Client(trust_env=False, timeout=30) as client,
        client.stream("POST", ingress.url + "/v1/chat/completions", json=body, headers=auth) as r,
    ):
        assert r.status_code == 200
        pieces = r.iter_raw(FloodingGateway.PIECE)
        received = next(pieces)
        # Nobody reads now: the gateway's writes must stall once the buffers on the way
        # (the kernel's, on both connections, and the ingress's bounded read-ahead) fill.
        stalled = wait_for(
            lambda: _stalled(flood), 20, "the flooding gateway's writes to stall", interval=0.5
        )
        assert stalled < 96 * 1024 * 1024, f"{stalled / 2**20:.0f} MiB went out unread"
        assert _rss_mb(ingress.popen.pid) - rss_before < 48
        # Reading again lets it flow again, every piece in order.
        while len(received) < stalled + 8 * FloodingGateway.PIECE:
            received += next(pieces)
        assert flood.written > stalled
        whole = len(received) // FloodingGateway.PIECE
        expected = b"".join(FloodingGateway.piece(i) for i in range(whole))
        assert received[: len(expected)] == expected
    # The client hung up: the ingress closes the gateway connection, the flood ends early.
    assert flood.finished.wait(10), "the gateway connection was never closed"
    assert flood.written < FloodingGateway.LIMIT


def _stalled(flood: FloodingGateway) -> int | None:
    """The gateway's byte count once it stopped growing for a second, else None."""
    before = flood.written
    time.sleep(1.0)
    return before if flood.written == before and before > 0 else None
