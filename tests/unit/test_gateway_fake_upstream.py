"""The shared fake provider behaves as documented (other test tiers rely on it)."""

from __future__ import annotations

import json
import threading
import time

import httpx

from tests.fake_upstream import FakeUpstream

HI = {"model": "m", "messages": [{"role": "user", "content": "hi there"}]}


def _client(upstream: FakeUpstream) -> httpx.Client:
    return httpx.Client(base_url=upstream.base_url, trust_env=False, timeout=10)


def test_echo_and_recorded_requests(fake_upstream: FakeUpstream) -> None:
    with _client(fake_upstream) as c:
        reply = c.post("/chat/completions", json=HI, headers={"authorization": "Bearer k"})
    assert reply.json()["choices"][0]["message"]["content"] == "echo: hi there"
    assert reply.json()["usage"]["total_tokens"] == 10
    (seen,) = fake_upstream.wait_for_requests(1)
    assert (seen.method, seen.path, seen.body) == ("POST", "/v1/chat/completions", HI)
    assert seen.headers["authorization"] == "Bearer k"


def test_stream_chunks_with_delay(fake_upstream: FakeUpstream) -> None:
    fake_upstream.set(chunks=["a", "b", "c"], chunk_delay=0.1, usage=None)
    started = time.monotonic()
    with (
        _client(fake_upstream) as c,
        c.stream("POST", "/chat/completions", json={**HI, "stream": True}) as r,
    ):
        lines = [ln[6:] for ln in r.iter_lines() if ln.startswith("data: ")]
    assert time.monotonic() - started >= 0.2
    assert lines[-1] == "[DONE]"
    events = [json.loads(x) for x in lines[:-1]]
    assert [e["choices"][0]["delta"].get("content") for e in events] == ["a", "b", "c", None]
    assert events[-1]["choices"][0]["finish_reason"] == "stop" and "usage" not in events[-1]


def test_errors_and_reset(fake_upstream: FakeUpstream) -> None:
    fake_upstream.set(status=503, error="overloaded")
    with _client(fake_upstream) as c:
        failed = c.post("/chat/completions", json=HI)
        assert failed.status_code == 503
        assert failed.json()["error"]["message"] == "overloaded"
        fake_upstream.set(reply="fixed")  # every other field back to its default
        assert c.post("/chat/completions", json=HI).json()["choices"][0]["message"]["content"] == (
            "fixed"
        )
        assert c.get("/models").json()["data"][0]["id"] == "fake-model"


def test_stop_ends_a_hang_at_once() -> None:
    upstream = FakeUpstream().start()
    upstream.set(delay=60)
    client = httpx.Client(base_url=upstream.base_url, trust_env=False, timeout=10)
    outcome: list[object] = []

    def ask() -> None:
        try:
            outcome.append(client.post("/chat/completions", json=HI))
        except httpx.HTTPError as exc:
            outcome.append(exc)

    asker = threading.Thread(target=ask)
    asker.start()
    upstream.wait_for_requests(1)
    started = time.monotonic()
    upstream.stop()
    asker.join(10)
    assert time.monotonic() - started < 5 and isinstance(outcome[0], httpx.HTTPError)
    client.close()
