"""The ledger's views in a real browser: the Events page, a profile's timeline and
charts, and the overview's restarts, against a real supervised gateway.

`hermes supervise` runs s6-svscan with a real gateway for profile `alpha`, wired to the
fake provider; the dashboard runs as a subprocess in OAuth mode against a real OIDC
provider. Requests go through alpha's gateway (one of them refused by the provider);
with the Events page open, the gateway is killed with SIGKILL once: s6 runs the real
finish script (`hermes _slot-finish`), which records the exit and the restart, and the
new gateway records that it is ready. The page must show those three live; the
profile page must show them in its timeline and chart exactly the requests made; the
overview must count the restart. Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.browser.support import (
    WAIT,
    WAIT_MS,
    gateway_status,
    hermes,
    oidc_dashboard,
    sign_in,
    supervised_tree,
)
from tests.conftest import free_port, wait_for
from tests.fake_upstream import FakeUpstream
from tests.s6.support import gateway_key

pytestmark = pytest.mark.browser
USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


@dataclass
class Supervised:
    env: dict[str, str]
    home: Path
    port: int
    upstream: FakeUpstream

    @property
    def api_key(self) -> str:
        return gateway_key(self.home / "profiles" / "alpha")


@pytest.fixture
def supervised() -> Iterator[Supervised]:
    """A `hermes supervise` tree whose profile `alpha` runs a real gateway to the fake
    provider."""
    port = free_port()
    with FakeUpstream() as upstream:

        def alpha_on_the_fake_provider(env: dict[str, str]) -> None:
            created = hermes(env, "profile", "create", "alpha", "--start")
            assert created.returncode == 0, created.stderr
            config = Path(env["HERMES_HOME"]) / "profiles" / "alpha" / "config.yaml"
            data = yaml.safe_load(config.read_text())
            data["model"] = {
                "base_url": upstream.base_url,
                "name": "test-model",
                "connect_timeout_s": 2,
                "read_timeout_s": 5,
            }
            data["gateway"] = {"port": port, "shutdown_grace_s": 10}
            config.write_text(yaml.safe_dump(data))

        upstream.set(usage=dict(USAGE))
        with supervised_tree(prepare=alpha_on_the_fake_provider, ready="alpha") as env:
            yield Supervised(env, Path(env["HERMES_HOME"]), port, upstream)


def _clear_of_a_minute_boundary(margin: float = 3.0) -> None:
    """Wait until a burst of requests starting now ends in the minute it starts in, so
    each burst lands in one known 1-minute bucket."""
    left = 60.0 - time.time() % 60.0
    if left < margin:
        time.sleep(left + 0.2)


def _burst(tree: Supervised, statuses: list[int]) -> dict[float, int]:
    """One chat completion per entry through alpha's gateway (the provider answering
    with that status); the requests per 1-minute bucket, by the test's own clock."""
    _clear_of_a_minute_boundary()
    made: dict[float, int] = {}
    headers = {"authorization": f"Bearer {tree.api_key}"}
    body = {"model": "alpha", "messages": [{"role": "user", "content": "hello"}]}
    with httpx.Client(base_url=f"http://127.0.0.1:{tree.port}", timeout=30, trust_env=False) as c:
        for status in statuses:
            tree.upstream.set(status=status, usage=dict(USAGE))
            before = time.time()
            response = c.post("/v1/chat/completions", json=body, headers=headers)
            after = time.time()
            assert (response.status_code == 200) == (status == 200), response.text
            bucket = math.floor(before / 60) * 60
            assert math.floor(after / 60) * 60 == bucket, "a burst crossed a minute boundary"
            made[bucket] = made.get(bucket, 0) + 1
    tree.upstream.set(status=200, usage=dict(USAGE))
    return made


def _recorded(tree: Supervised) -> int:
    db = tree.home / "profiles" / "alpha" / "sessions.db"
    if not db.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM exchanges").fetchone()[0])


def _points(page: Any, chart: str) -> dict[str, Any]:
    raw = page.locator(f'#charts figure[data-chart="{chart}"]').get_attribute("data-points")
    assert raw, f"the {chart} chart has no data"
    data: dict[str, Any] = json.loads(raw)
    return data


def test_events_page_timeline_and_charts_show_a_killed_gateway(
    browser: Any, artifacts: Path, supervised: Supervised
) -> None:
    from playwright.sync_api import expect

    tree = supervised
    first = _burst(tree, [200, 200, 500, 200, 200])  # one refused by the provider
    with oidc_dashboard(tree.env) as (base_url, issuer):
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        try:
            # The Events page is gated: the real login first.
            sign_in(page, base_url, issuer, "/events")
            expect(page.locator("#events-live")).to_have_text("live", timeout=WAIT_MS)
            # A link with filters (the profile page's "all events") fills the form.
            page.goto(base_url + "/events?profile=alpha")
            expect(page.locator("#events-live")).to_have_text("live", timeout=WAIT_MS)
            expect(page.locator("#events-profile")).to_have_value("alpha")
            rows = page.locator("#events-body tr")
            ready = page.locator('#events-body tr[data-kind="gateway.ready"]')
            expect(ready).to_have_count(1, timeout=WAIT_MS)
            assert (
                page.locator("#events-body tr td:nth-child(4)").all_inner_texts()
                == ["alpha"] * rows.count()
            )

            # Kill the gateway once, with the page open: the rows arrive live.
            loads: list[str] = []
            page.on("domcontentloaded", lambda p: loads.append(p.url))
            old_pid = gateway_status(tree.env, "alpha")["pid"]
            time.sleep(1.1)  # s6 waits a second before respawning a younger run
            os.kill(old_pid, signal.SIGKILL)
            exited = page.locator('#events-body tr[data-kind="gateway.exited"]')
            expect(exited).to_have_count(1, timeout=WAIT_MS)
            expect(exited).to_contain_text("Crashed")
            expect(exited).to_contain_text("killed by SIGKILL")
            expect(exited).to_contain_text("supervisor")
            restarted = page.locator('#events-body tr[data-kind="gateway.restarted"]')
            expect(restarted).to_have_count(1, timeout=WAIT_MS)
            expect(ready).to_have_count(2, timeout=WAIT_MS)
            # Newest first: ready (new), restarted, exited, ..., ready (old).
            kinds = [r.get_attribute("data-kind") for r in rows.all()]
            assert kinds.index("gateway.ready") < kinds.index("gateway.restarted")
            assert kinds.index("gateway.restarted") < kinds.index("gateway.exited")
            page.screenshot(path=str(artifacts / "events-live.png"), full_page=True)
            assert loads == [], f"the page navigated: {loads}"

            # A kind filter: only the restart.
            page.select_option("#events-kind", "gateway.restarted")
            expect(rows).to_have_count(1, timeout=WAIT_MS)
            expect(rows.first).to_have_attribute("data-kind", "gateway.restarted")
            assert "kind=gateway.restarted" in page.url
            # A layer prefix and a time window together.
            page.select_option("#events-kind", "gateway.")
            page.fill("#events-since", "1h")
            page.click("#events-apply")
            expect(rows.first).to_have_attribute("data-kind", "gateway.ready", timeout=WAIT_MS)
            gateway_kinds = {r.get_attribute("data-kind") for r in rows.all()}
            assert gateway_kinds <= {
                "gateway.starting",
                "gateway.ready",
                "gateway.exited",
                "gateway.restarted",
            }, gateway_kinds
            page.screenshot(path=str(artifacts / "events-filtered.png"), full_page=True)

            status = wait_for(
                lambda: (
                    (s := gateway_status(tree.env, "alpha"))["ready"] and s["pid"] != old_pid and s
                ),
                WAIT,
                "the restarted gateway",
            )
            second = _burst(tree, [200, 200, 200])
            made = dict(first)
            for bucket, count in second.items():
                made[bucket] = made.get(bucket, 0) + count
            wait_for(lambda: _recorded(tree) == 8, WAIT, "the 8 exchanges in sessions.db")

            # The profile page: the timeline and the charts.
            page.goto(base_url + "/profiles/alpha")
            totals = page.locator("#chart-totals")
            expect(totals).to_have_attribute("data-requests", "8", timeout=WAIT_MS)
            expect(totals).to_contain_text("8 requests, 1 errors, 49 tokens in / 21 out")
            rate = _points(page, "rate")
            per_bucket = dict(zip(rate["t"], rate["series"]["requests_per_min"], strict=True))
            assert {t: n for t, n in per_bucket.items() if n} == made
            errors = _points(page, "errors")["series"]["error_pct"]
            error_at = dict(zip(rate["t"], errors, strict=True))
            first_bucket = next(iter(first))
            if first_bucket in second:  # both bursts in one minute: 1 error of 8
                assert error_at[first_bucket] == 12.5
            else:
                assert error_at[first_bucket] == 20.0
                assert error_at[next(iter(second))] == 0.0
            assert all(error_at[t] is None for t in rate["t"] if t not in made)
            latency = _points(page, "latency")["series"]
            for t, p50, p99 in zip(rate["t"], latency["p50_ms"], latency["p99_ms"], strict=True):
                if t in made:
                    assert p50 is not None and p99 is not None and 0 < p50 <= p99 < 30_000
                else:
                    assert p50 is None and p99 is None
            tokens = _points(page, "tokens")["series"]
            assert sum(tokens["tokens_in"]) == 7 * 7 and sum(tokens["tokens_out"]) == 3 * 7
            for chart in ("rate", "latency", "errors", "tokens"):
                plot = page.locator(f'#charts figure[data-chart="{chart}"] canvas')
                expect(plot.first).to_be_visible()
            table = page.locator("#chart-table tbody tr")
            expect(table).to_have_count(len(made))

            timeline = page.locator("#timeline li")
            crashed = page.locator('#timeline li[data-kind="gateway.exited"]')
            expect(crashed).to_have_count(1, timeout=WAIT_MS)
            expect(crashed).to_contain_text("Crashed")
            expect(crashed).to_contain_text("killed by SIGKILL")
            expect(page.locator('#timeline li[data-kind="gateway.restarted"]')).to_contain_text(
                "Restarted by the supervisor"
            )
            expect(page.locator('#timeline li[data-kind="desired.changed"]')).to_contain_text(
                "→ running"
            )
            order = [li.get_attribute("data-kind") for li in timeline.all()]
            assert order.index("gateway.ready") < order.index("gateway.restarted")
            assert order.index("gateway.restarted") < order.index("gateway.exited")
            assert not any(k and k.startswith("kanban.") for k in order)
            page.screenshot(path=str(artifacts / "events-profile.png"), full_page=True)

            # The day window: 15-minute buckets, the same 8 requests.
            page.click('#charts button[data-window="day"]')
            expect(page.locator("#chart-totals")).to_contain_text(
                "in the last day", timeout=WAIT_MS
            )
            day = _points(page, "rate")
            assert len(day["t"]) == 96 and day["t"][1] - day["t"][0] == 900
            assert round(sum(day["series"]["requests_per_min"]) * 15) == 8

            # The overview: one restart of alpha in the last day, none of default.
            page.goto(base_url + "/")
            cell = page.locator('tr[data-profile="alpha"] [data-activity="restarts"]')
            expect(cell).to_have_text("1", timeout=WAIT_MS)
            expect(
                page.locator('tr[data-profile="default"] [data-activity="restarts"]')
            ).to_have_text("0")
            expect(page.locator("#throughput-total")).to_have_attribute("data-total", "0")
            throughput = page.locator('#activity figure[data-chart="throughput"]')
            expect(throughput.locator("canvas").first).to_be_visible()
            page.screenshot(path=str(artifacts / "events-overview.png"), full_page=True)
        finally:
            context.close()

    # What the pages showed is what the ledger holds (read by the CLI).
    out = hermes(tree.env, "events", "--json", "--profile", "alpha", "--kind", "gateway.")
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    kinds = [e["kind"] for e in events]
    assert kinds.count("gateway.exited") == 1 and kinds.count("gateway.restarted") == 1
    exited_event = events[kinds.index("gateway.exited")]
    assert exited_event["data"]["signal"] == 9 and exited_event["data"]["expected"] is False
    assert status["pid"] == [e for e in events if e["kind"] == "gateway.ready"][-1]["data"]["pid"]
    # The provider saw exactly the 8 requests the charts count.
    chats = [r for r in tree.upstream.requests if r.path.endswith("/chat/completions")]
    assert len(chats) == 8
