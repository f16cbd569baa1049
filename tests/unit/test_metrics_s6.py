"""Gateway status metrics against a real s6 tree: up, ready, restarts after a kill -9,
desired-vs-observed, and a gateway's counters carried across its restart.

Needs the s6 binaries (skipped without them unless HERMES_REQUIRE_S6=1). As root, the
home belongs to uid 10000 as in the image, so the scrape here runs as a user that is
not the home's owner: it reads the files and never sweeps them.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from hermes_container.config import read_port
from hermes_container.envfile import read_env
from tests.s6.conftest import Tree, booted_tree, wait_for
from tests.unit.metrics_support import Samples, dashboard, scrape, value

pytestmark = pytest.mark.s6


@pytest.fixture
def tree(monkeypatch: pytest.MonkeyPatch) -> Iterator[Tree]:
    with booted_tree() as t:
        monkeypatch.setenv("HERMES_S6_SCANDIR", str(t.scandir))
        monkeypatch.setenv("HERMES_HOME", str(t.home.root))
        yield t


def models(tree: Tree, profile: str, times: int) -> None:
    directory = tree.home.profile_dir(profile)
    key = read_env(directory / ".env")["API_SERVER_KEY"]
    url = f"http://127.0.0.1:{read_port(directory)}/v1/models"
    for _ in range(times):
        response = httpx.get(url, headers={"authorization": f"Bearer {key}"}, trust_env=False)
        assert response.status_code == 200


def test_status_metrics_and_a_restart(tree: Tree) -> None:
    tree.create("alpha")
    tree.create("beta")  # registered, never started: desired unset, down
    tree.ok("-p", "alpha", "gateway", "start")
    pid = tree.status("alpha")["pid"]
    models(tree, "alpha", 3)
    count = "hermes_gateway_requests_total"

    with dashboard(tree.home) as client:

        def counted(n: int) -> Samples | None:
            samples, _, _ = scrape(client)
            got = value(samples, count, profile="alpha", route="/v1/models", status="200")
            return samples if got == n else None

        samples = wait_for(lambda: counted(3), what="three requests counted")
        assert value(samples, "hermes_gateway_up", profile="alpha") == 1
        assert value(samples, "hermes_gateway_ready", profile="alpha") == 1
        assert value(samples, "hermes_gateway_restarts_total", profile="alpha") == 0
        assert value(samples, "hermes_gateway_desired_running", profile="alpha") == 1
        assert value(samples, "hermes_gateway_desired_mismatch", profile="alpha") == 0
        for name in ("beta", "default"):
            assert value(samples, "hermes_gateway_up", profile=name) == 0
            assert value(samples, "hermes_gateway_desired_mismatch", profile=name) == 0
            assert value(samples, "hermes_gateway_parked", profile=name) == 0

        time.sleep(1.1)  # s6 waits a second before respawning a younger run
        os.kill(pid, signal.SIGKILL)
        tree.wait_ready("alpha", old_pid=pid)
        models(tree, "alpha", 2)
        samples = wait_for(lambda: counted(5), what="the counts carried over the restart")
        assert value(samples, "hermes_gateway_restarts_total", profile="alpha") == 1
        assert value(samples, "hermes_gateway_up", profile="alpha") == 1
        assert value(samples, "hermes_gateway_in_flight_requests", profile="alpha") == 0

        tree.ok("-p", "alpha", "gateway", "stop")
        samples, _, _ = scrape(client)
        assert value(samples, "hermes_gateway_up", profile="alpha") == 0
        assert value(samples, "hermes_gateway_desired_running", profile="alpha") == 0
        assert value(samples, "hermes_gateway_desired_mismatch", profile="alpha") == 0
        assert value(samples, count, profile="alpha", route="/v1/models", status="200") == 5
