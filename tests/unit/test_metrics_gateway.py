"""Gateway metrics end to end: real gateway processes, the fake provider, and the real
dashboard app's GET /metrics, parsed with prometheus_client's own parser."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from hermes_container.home import HermesHome
from hermes_container.metrics import files
from hermes_container.metrics.gateway import FLUSH_PERIOD_S
from tests.conftest import free_port, wait_for
from tests.fake_upstream import FakeUpstream
from tests.unit.conftest import GatewayProfile
from tests.unit.metrics_support import Samples, dashboard, scrape, total, value

CHAT = "/v1/chat/completions"
HELLO = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
STREAM = {**HELLO, "stream": True}
REQUESTS = "hermes_gateway_requests_total"


def requests(samples: Samples, profile: str, route: str, status: int) -> float:
    return value(samples, REQUESTS, profile=profile, route=route, status=str(status)) or 0.0


def settled(client: Any, check: Callable[[Samples], bool], what: str) -> Samples:
    """Scrape until `check` holds: a gateway hands its counts over every half second."""

    def attempt() -> Samples | None:
        samples, _, _ = scrape(client)
        return samples if check(samples) else None

    result: Samples = wait_for(attempt, 10, what)
    return result


def test_counters_equal_the_requests_made(
    make_profile: Callable[[str], GatewayProfile],
    fake_upstream: FakeUpstream,
    hermes_home: HermesHome,
) -> None:
    alpha, beta = make_profile("alpha"), make_profile("beta")
    alpha.start()
    beta.start()
    fake_upstream.set(usage={"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16})
    with dashboard(hermes_home) as dash:
        # start() waited for /health: those probes are counted too, within a flush.
        settled(dash, lambda s: requests(s, "alpha", "/health", 200) >= 1, "the probes")
        time.sleep(FLUSH_PERIOD_S + 0.2)
        before, _, _ = scrape(dash)
        with alpha.client(headers=alpha.auth) as c:
            for _ in range(5):
                assert c.post(CHAT, json=HELLO).status_code == 200
            for _ in range(2):
                reply = c.post(CHAT, json=STREAM)
                assert reply.status_code == 200 and "[DONE]" in reply.text
            for _ in range(3):
                assert c.get("/v1/models").status_code == 200
            for _ in range(2):
                wrong = c.post(CHAT, json=HELLO, headers={"authorization": "Bearer wrong"})
                assert wrong.status_code == 401
            assert c.get("/no/such/path").status_code == 404
            for _ in range(4):
                assert c.get("/health").status_code == 200
        with beta.client(headers=beta.auth) as c:
            for _ in range(3):
                assert c.post(CHAT, json=HELLO).status_code == 200
            fake_upstream.set(status=500)
            for _ in range(2):
                assert c.post(CHAT, json=HELLO).status_code == 502
            fake_upstream.set(status=429, headers={"retry-after": "1"})
            assert c.post(CHAT, json=HELLO).status_code == 429
        fake_upstream.set()

        samples = settled(
            dash,
            lambda s: (
                requests(s, "beta", CHAT, 429) == 1
                and value(s, "hermes_gateway_tokens_total", profile="beta", type="input") == 33
            ),
            "every request counted",
        )
        assert requests(samples, "alpha", CHAT, 200) == 7
        assert requests(samples, "alpha", CHAT, 401) == 2
        assert requests(samples, "alpha", "/v1/models", 200) == 3
        assert requests(samples, "alpha", "other", 404) == 1
        health = requests(samples, "alpha", "/health", 200)
        assert health - requests(before, "alpha", "/health", 200) == 4
        assert requests(samples, "beta", CHAT, 200) == 3
        assert requests(samples, "beta", CHAT, 502) == 2
        assert requests(samples, "beta", CHAT, 429) == 1
        assert total(samples, REQUESTS, profile="alpha") == 7 + 2 + 3 + 1 + health
        # Tokens: what the provider's usage said, for each answered exchange (streams too).
        tokens = "hermes_gateway_tokens_total"
        assert value(samples, tokens, profile="alpha", type="input") == 7 * 11
        assert value(samples, tokens, profile="alpha", type="output") == 7 * 5
        assert value(samples, tokens, profile="beta", type="input") == 3 * 11
        assert value(samples, tokens, profile="beta", type="output") == 3 * 5
        # Every chat completion is timed by the gateway; the provider only for those
        # that reached it (failures included).
        duration = "hermes_gateway_request_duration_seconds_count"
        assert value(samples, duration, profile="alpha") == 9
        assert value(samples, duration, profile="beta") == 6
        upstream = "hermes_gateway_upstream_duration_seconds_count"
        assert value(samples, upstream, profile="alpha") == 7
        assert value(samples, upstream, profile="beta") == 6
        errors = "hermes_gateway_upstream_errors_total"
        assert value(samples, errors, profile="beta", kind="server_error") == 2
        assert value(samples, errors, profile="beta", kind="rate_limited") == 1
        assert total(samples, errors, profile="alpha") == 0
        for name in ("alpha", "beta"):
            assert value(samples, "hermes_gateway_in_flight_requests", profile=name) == 0
            assert value(samples, "hermes_gateway_up", profile=name) == 1
            assert value(samples, "hermes_gateway_ready", profile=name) == 1
            assert value(samples, "hermes_gateway_desired_mismatch", profile=name) == 0
        assert value(samples, "hermes_gateway_up", profile="default") == 0
        assert value(samples, "hermes_gateway_desired_mismatch", profile="default") == 1


def test_upstream_transport_errors_by_kind(
    make_profile: Callable[[str], GatewayProfile],
    fake_upstream: FakeUpstream,
    hermes_home: HermesHome,
) -> None:
    alpha = make_profile("alpha")
    alpha.configure(model={"base_url": f"http://127.0.0.1:{free_port()}/v1"})  # nobody there
    alpha.start()
    beta = make_profile("beta")
    beta.configure(model={"read_timeout_s": 0.5})
    beta.start()
    fake_upstream.set(delay=5)
    with alpha.client(headers=alpha.auth) as c:
        assert c.post(CHAT, json=HELLO).status_code == 502
    with beta.client(headers=beta.auth) as c:
        assert c.post(CHAT, json=HELLO).status_code == 504
    with dashboard(hermes_home) as dash:
        errors = "hermes_gateway_upstream_errors_total"
        samples = settled(
            dash,
            lambda s: requests(s, "beta", CHAT, 504) == 1 and requests(s, "alpha", CHAT, 502) == 1,
            "both requests counted",
        )
        assert value(samples, errors, profile="alpha", kind="connect") == 1
        assert value(samples, errors, profile="beta", kind="read_timeout") == 1


def test_a_killed_gateway_leaves_no_stale_series(
    make_profile: Callable[[str], GatewayProfile],
    fake_upstream: FakeUpstream,
    hermes_home: HermesHome,
) -> None:
    alpha = make_profile("alpha")
    first = alpha.start()
    with dashboard(hermes_home) as dash:
        with alpha.client(headers=alpha.auth) as c:
            for _ in range(3):
                assert c.post(CHAT, json=HELLO).status_code == 200
        # A long stream holds one request in flight while the gateway is killed.
        fake_upstream.set(chunks=[f"w{i} " for i in range(40)], chunk_delay=0.25)
        started = threading.Event()

        def stream() -> None:
            try:
                with (
                    httpx.Client(trust_env=False, timeout=30) as client,
                    client.stream("POST", alpha.url(CHAT), json=STREAM, headers=alpha.auth) as r,
                ):
                    for _ in r.iter_bytes():
                        started.set()
            except httpx.HTTPError:
                pass  # the gateway died under it

        reader = threading.Thread(target=stream, daemon=True)
        reader.start()
        assert started.wait(10)
        in_flight = "hermes_gateway_in_flight_requests"
        settled(
            dash,
            lambda s: (
                value(s, in_flight, profile="alpha") == 1 and requests(s, "alpha", CHAT, 200) == 3
            ),
            "one request in flight, three done",
        )
        first.popen.kill()
        first.popen.wait(10)
        reader.join(10)
        fake_upstream.set()

        second = alpha.start()
        assert second.pid != first.pid
        with alpha.client(headers=alpha.auth) as c:
            for _ in range(2):
                assert c.post(CHAT, json=HELLO).status_code == 200
        samples = settled(
            dash, lambda s: requests(s, "alpha", CHAT, 200) == 5, "the new gateway's requests"
        )
        for _ in range(2):  # and again: archived once, never counted twice
            assert requests(samples, "alpha", CHAT, 200) == 5  # the killed stream never ended
            assert value(samples, in_flight, profile="alpha") == 0  # the dead one's 1 is gone
            assert (
                value(samples, "hermes_gateway_request_duration_seconds_count", profile="alpha")
                == 5
            )
            samples, _, _ = scrape(dash)
        directory = files.generation_dir(hermes_home.root)
        assert not list(directory.glob(f"*_{first.pid}.db"))
        assert not (directory / f"{first.pid}.lock").exists()
        assert (directory / f"{second.pid}.lock").exists()


def test_a_gateway_that_cannot_write_metrics_still_serves(
    make_profile: Callable[[str], GatewayProfile], hermes_home: HermesHome
) -> None:
    alpha = make_profile("alpha")
    run = hermes_home.root / "run"
    run.mkdir(exist_ok=True)
    (run / "metrics").write_text("in the way")
    gateway = alpha.start()
    with alpha.client(headers=alpha.auth) as c:
        for _ in range(3):
            assert c.post(CHAT, json=HELLO).status_code == 200
    assert "writes no metrics" in gateway.stderr()
    with dashboard(hermes_home) as dash:
        samples, _, _ = scrape(dash)
    assert total(samples, REQUESTS) == 0
    assert value(samples, "hermes_gateway_up", profile="alpha") == 1  # status still reported
    assert value(samples, "hermes_metrics_collector_up", collector="files") == 1


def test_metrics_off_in_a_gateway(
    make_profile: Callable[[str], GatewayProfile], hermes_home: HermesHome
) -> None:
    alpha = make_profile("alpha")
    alpha.start(env={"HERMES_METRICS": "0"})
    with alpha.client(headers=alpha.auth) as c:
        assert c.post(CHAT, json=HELLO).status_code == 200
    assert not (hermes_home.root / "run" / "metrics").exists()
