"""Every metric of a full scrape follows Prometheus naming, and the catalogue is complete."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from hermes_container.home import HermesHome
from hermes_container.metrics import names
from tests.conftest import wait_for
from tests.fake_upstream import FakeUpstream
from tests.unit.conftest import GatewayProfile
from tests.unit.metrics_support import REPO, dashboard, scrape
from tests.unit.test_metrics_board import fill

NAME = re.compile(r"hermes_[a-z][a-z0-9_]*")
LABEL = re.compile(r"[a-z][a-z0-9_]*")
UNITS = ("_seconds", "_bytes")
FORBIDDEN = ("_ms", "_millis", "milliseconds", "_us_", "_kb", "_mb", "_percent")


def test_every_metric_is_named_by_the_conventions(
    make_profile: Callable[[str], GatewayProfile],
    fake_upstream: FakeUpstream,
    hermes_home: HermesHome,
) -> None:
    alpha = make_profile("alpha")
    alpha.start()
    fill(hermes_home)
    subprocess.run(
        [sys.executable, "-c", "from hermes_container.metrics.dispatch import *; "
         "observe_tick(0.01, 'default'); count_job_event('default', 'scheduled'); "
         "observe_slot_lag(0.2, 'default')"],
        cwd=REPO,
        env={**os.environ, "HERMES_HOME": str(hermes_home.root)},
        check=True,
        timeout=60,
    )  # fmt: skip
    with alpha.client(headers=alpha.auth) as c:
        assert (
            c.post(
                "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}
            ).status_code
            == 200
        )
        fake_upstream.set(status=503)
        assert (
            c.post(
                "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}
            ).status_code
            == 502
        )
    with dashboard(hermes_home) as client:
        audit = client.app.state.hermes.audit  # type: ignore[attr-defined]
        audit.write("login_success", provider="github", user="a")
        audit.client_event("login_denied", "127.0.0.1", security=True, provider="github")
        audit.client_event("login_failure", "127.0.0.1", provider="github", reason="access_denied")

        def complete() -> str | None:
            _, _, text = scrape(client)
            return (
                text
                if "hermes_gateway_upstream_errors_total" in text
                and "hermes_gateway_requests_total{" in text
                else None
            )

        text = wait_for(complete, 10, "the gateway's counts")
    families = list(text_string_to_metric_families(text))
    seen: dict[str, str] = {}
    for family in families:
        exported = family.name + "_total" if family.type == "counter" else family.name
        seen[exported] = family.type
        assert NAME.fullmatch(exported), exported
        assert family.documentation.strip(), f"{exported} has no help text"
        assert not any(word in exported for word in FORBIDDEN), exported
        if family.type == "counter":
            assert all(
                s.name == exported for s in family.samples if not s.name.endswith("_created")
            )
        else:
            assert not exported.endswith("_total"), exported
        if family.type == "histogram":
            assert exported.endswith(UNITS), f"{exported}: a histogram names its base unit"
        if "duration" in exported or "age" in exported or "latency" in exported:
            assert exported.endswith("_seconds"), exported
        for sample in family.samples:
            assert sample.value == sample.value  # no NaN
            for label in sample.labels:
                assert LABEL.fullmatch(label) and not label.startswith("__"), label
                if label == "le":
                    assert family.type == "histogram" and sample.name.endswith("_bucket")
    assert seen == names.CATALOGUE  # nothing unlisted, and every listed metric was exported
