"""The Jobs page in a real browser, with a real gateway, dispatcher, login and webhook.

Profile `alpha` runs a real gateway (`hermes gateway run`) wired to the fake provider,
which fails at first; the dashboard runs as a subprocess in OAuth mode against a real
OIDC provider, and `hermes kanban daemon` runs the jobs. Alice logs in, types a bad
cron expression (the preview says why) and a good one (the preview shows the next five
slots), adds the job with a delivery URL (the secret is shown once), pauses and resumes
it, and presses Run now: the run fails, lands in the dead-letter queue, and once the
provider recovers, Retry makes it complete and deliver a result signed with the secret
the page showed. The page never navigates: the jobs' live stream does it all.
Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from hermes_container.events.ledger import Ledger
from hermes_container.home import HermesHome
from hermes_container.kanban.jobs.api import Jobs
from hermes_container.kanban.jobs.delivery import SIGNATURE_HEADER, verify
from hermes_container.kanban.store import open_store
from tests.browser.support import WAIT_MS, kanban_daemon, oidc_dashboard, running_alpha, sign_in
from tests.conftest import wait_for
from tests.unit.conftest import GatewayProfile
from tests.unit.dashboard_support import clean_env

pytestmark = pytest.mark.browser
ANSWER = "The night was quiet, said the fake provider."
PROMPT = "Summarise the night."
JOB = "nightly-report"


@pytest.fixture
def alpha(hermes_home: HermesHome, tmp_path: Path) -> Iterator[GatewayProfile]:
    """Profile `alpha` with a running gateway to a fake provider that fails (HTTP 500)."""
    with running_alpha(hermes_home, tmp_path, status=500, error="provider on fire") as profile:
        yield profile


@contextlib.contextmanager
def webhook() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    """A receiver on loopback that answers 204 and keeps what it got: (url, received)."""
    received: list[tuple[dict[str, str], bytes]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hooks/hermes", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_job_added_in_the_page_is_paused_run_dead_lettered_and_retried(
    browser: Any,
    artifacts: Path,
    hermes_home: HermesHome,
    alpha: GatewayProfile,
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    with (
        webhook() as (hook_url, received),
        oidc_dashboard(clean_env(HERMES_HOME=str(hermes_home.root))) as (base_url, issuer),
    ):
        context = browser.new_context(viewport={"width": 1400, "height": 1100})
        page = context.new_page()
        store = open_store(hermes_home)
        jobs = Jobs(store)
        try:
            # The real login: the page is gated, the provider vouches for alice.
            sign_in(page, base_url, issuer, "/jobs")
            expect(page.locator("#jobs-live")).to_have_text("live", timeout=WAIT_MS)
            expect(page.locator("#jobs-empty")).to_be_visible()
            expect(page.locator("#jobs-dead-count")).to_have_text("dead letters: 0")

            # From here on the page must never load again: every change is live.
            loads: list[str] = []
            page.on("domcontentloaded", lambda p: loads.append(p.url))

            # The preview follows the schedule as it is typed: an error, then five slots.
            page.fill("#jobs-name", JOB)
            page.select_option("#jobs-profile", "alpha")
            page.fill("#jobs-prompt", PROMPT)
            page.fill("#jobs-when", "61 * * * *")
            expect(page.locator("#jobs-preview")).to_contain_text(
                "bad cron expression '61 * * * *'", timeout=WAIT_MS
            )
            page.fill("#jobs-timezone", "Europe/Berlin")
            page.fill("#jobs-when", "30 2 * * *")
            preview = page.locator("#jobs-preview li")
            expect(page.locator("#jobs-preview")).to_contain_text(
                "cron 30 2 * * * (Europe/Berlin): the next 5 slots", timeout=WAIT_MS
            )
            expect(preview).to_have_count(5)
            for index in range(5):
                expect(preview.nth(index)).to_contain_text(":30:00 CE")  # CET or CEST
            first_previewed = float(preview.first.get_attribute("data-slot") or "nan")
            page.screenshot(path=str(artifacts / "jobs-preview.png"), full_page=True)

            page.click(".jobs-advanced summary")
            page.fill("#jobs-max-retries", "0")
            page.fill("#jobs-deliver", hook_url)
            page.click("#jobs-add-submit")
            expect(page.locator("#jobs-add-result")).to_contain_text(
                f"added {JOB}: cron 30 2 * * * (Europe/Berlin), next slot", timeout=WAIT_MS
            )
            stored = jobs.get(JOB)
            assert stored.next_slot == first_previewed  # the preview showed what was stored
            assert stored.spec.deliver == hook_url and stored.spec.max_retries == 0

            # The secret, once: in the page now, gone from it when dismissed.
            expect(page.locator("#jobs-secret")).to_be_visible()
            secret = page.locator("#jobs-secret-value").text_content() or ""
            assert len(secret) >= 32
            row = page.locator(f'#jobs-table tr[data-job="{JOB}"]')
            expect(row.locator('[data-field="schedule"]')).to_have_text(
                "cron 30 2 * * * (Europe/Berlin)"
            )
            expect(row.locator('[data-field="last"]')).to_have_text("no runs yet")
            page.click("#jobs-secret-dismiss")
            expect(page.locator("#jobs-secret")).to_be_hidden()
            assert secret not in page.content()

            # Pause and resume.
            row.locator('[data-job-action="pause"]').click()
            expect(page.locator("#jobs-result")).to_have_text(f"{JOB}: paused")
            expect(row.locator('[data-field="next"]')).to_have_text("paused")
            assert jobs.get(JOB).paused is True
            row.locator('[data-job-action="resume"]').click()
            expect(page.locator("#jobs-result")).to_contain_text(f"{JOB}: resumed, next slot")
            expect(row.locator('[data-field="next"]')).to_contain_text("in ")
            assert jobs.get(JOB).paused is False

            with kanban_daemon(tmp_path / "daemon.log"):
                # Run now: the provider fails, max_retries 0 -> the dead-letter queue.
                row.locator('[data-job-action="run"]').click()
                expect(page.locator("#jobs-result")).to_have_text(f"{JOB}: run 1 active")
                strip = row.locator('[data-field="history"] .jobs-square')
                expect(strip).to_have_count(1)
                expect(strip.first).to_have_attribute(
                    "data-state", "dead_lettered", timeout=WAIT_MS
                )
                expect(row.locator('[data-field="last"]')).to_have_text("dead-lettered")
                dead = page.locator('#jobs-dead-runs tr[data-run-id="1"]')
                expect(dead).to_contain_text(JOB)
                expect(dead.locator('[data-field="error"]')).to_contain_text("provider on fire")
                expect(dead).to_contain_text(PROMPT)
                expect(page.locator("#jobs-dead-count")).to_have_text("dead letters: 1")
                page.screenshot(path=str(artifacts / "jobs-dead-letter.png"), full_page=True)

                # The provider recovers; Retry: the same run completes and delivers.
                alpha.upstream.set(reply=ANSWER)
                dead.locator("[data-retry]").click()
                expect(page.locator("#jobs-dead-result")).to_have_text(
                    f"run 1 of {JOB}: run retried (active)"
                )
                expect(strip.first).to_have_attribute("data-state", "completed", timeout=WAIT_MS)
                expect(strip).to_have_count(1)
                expect(row.locator('[data-field="last"]')).to_have_text("completed")
                expect(page.locator("#jobs-dead-runs-empty")).to_be_visible()
                expect(page.locator("#jobs-dead-count")).to_have_text("dead letters: 0")
                wait_for(lambda: received, timeout=30, what="the delivery")

            # The job view: the run with both attempts, and the next five slots.
            row.locator(".jobs-name").click()
            dialog = page.locator("#jobs-detail")
            expect(dialog).to_be_visible()
            run_row = dialog.locator('#jobs-detail-runs tr[data-run-id="1"]')
            expect(run_row).to_contain_text("completed")
            expect(run_row.locator("td").nth(3)).to_have_text("2")
            expect(dialog.locator("#jobs-detail-slots li")).to_have_count(5)
            expect(dialog.locator("#jobs-detail-steps")).to_contain_text(PROMPT)
            page.screenshot(path=str(artifacts / "jobs-done.png"), full_page=True)
            assert loads == [], f"the page navigated: {loads}"
            assert secret not in page.content()
        finally:
            context.close()
            store.close()

    # The webhook got the run's result, signed with the secret the page showed once.
    (headers, body) = received[0]
    assert verify(secret, body, headers[SIGNATURE_HEADER.lower()])
    delivered = json.loads(body)
    assert (delivered["job"], delivered["run_id"], delivered["result"]) == (JOB, 1, ANSWER)
    asked = [r for r in alpha.upstream.requests if r.path.endswith("/chat/completions")]
    assert len(asked) == 2 and all(PROMPT in str(r.body) for r in asked)

    audit = [json.loads(line) for line in hermes_home.auth_log.read_text().splitlines()]
    actions = [(r["action"], r["result"]) for r in audit if r["event"] == "jobs_action"]
    assert actions == [("add", "ok"), ("pause", "ok"), ("resume", "ok"), ("run", "ok"),
                       ("retry", "ok")]  # fmt: skip
    assert all(r["user"] == "alice@example.com" for r in audit if r["event"] == "jobs_action")
    ledger = Ledger(hermes_home.root)
    try:
        recorded = [
            (e.actor, e.data["action"]) for e in ledger.iterate(0) if e.kind == "dashboard.action"
        ]
    finally:
        ledger.close()
    assert recorded == [
        ("dashboard:alice@example.com", f"jobs.{what}")
        for what in ("add", "pause", "resume", "run", "retry")
    ]
    assert secret not in hermes_home.auth_log.read_text()
