"""`hermes -p P chat "message"`: the tiny client of a profile's own gateway."""

from __future__ import annotations

from collections.abc import Callable

from tests.conftest import run_hermes
from tests.fake_upstream import FakeUpstream
from tests.unit.conftest import GatewayProfile

# A proxy that does not exist: loopback traffic must never be sent to it.
DEAD_PROXY = {"http_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}


def test_chat_prints_the_reply(
    make_profile: Callable[[str], GatewayProfile], fake_upstream: FakeUpstream
) -> None:
    make_profile("default")
    coder = make_profile("coder")
    coder.start()
    proc = run_hermes("-p", "coder", "chat", "hello there", "--session", "cli-1", env=DEAD_PROXY)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "echo: hello there\n"
    sent = fake_upstream.requests[-1]
    assert sent.body["messages"][-1] == {"role": "user", "content": "hello there"}


def test_chat_with_the_gateway_down_says_so(profile: GatewayProfile) -> None:
    proc = run_hermes("chat", "anyone?")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert f"not reachable on 127.0.0.1:{profile.port}" in proc.stderr
    assert "hermes -p default gateway start" in proc.stderr


def test_chat_reports_gateway_errors(profile: GatewayProfile, fake_upstream: FakeUpstream) -> None:
    profile.start()
    fake_upstream.set(status=500, error="model melted")
    proc = run_hermes("chat", "hi")
    assert proc.returncode == 1
    assert "HTTP 502" in proc.stderr and "model melted" in proc.stderr
