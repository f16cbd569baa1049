"""The Kanban page in a real browser, with a real gateway, dispatcher and login.

Profile `alpha` runs a real gateway (`hermes gateway run`) wired to the fake provider;
the dashboard runs as a subprocess in OAuth mode against a real OIDC provider. Alice
logs in, creates a task for alpha in the page, opens its card, previews the next tick,
and then `hermes kanban daemon` is started: the card must reach `done` with the
provider's answer, in the board and in the open card view, without the page ever
navigating (the live stream did it). Screenshots land in test-artifacts/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hermes_container.home import HermesHome
from hermes_container.kanban.store import open_store
from hermes_container.profiles import ensure_default_profile
from tests.browser.support import WAIT_MS, kanban_daemon, oidc_dashboard, running_alpha, sign_in
from tests.unit.conftest import GatewayProfile
from tests.unit.dashboard_support import clean_env

pytestmark = pytest.mark.browser
ANSWER = "Forty-two, said the fake provider."


@pytest.fixture
def alpha(hermes_home: HermesHome, tmp_path: Path) -> Iterator[GatewayProfile]:
    """Profile `alpha` with a running gateway to the fake provider; per-profile cap 2."""
    ensure_default_profile(hermes_home)
    config = hermes_home.root / "config.yaml"
    data = yaml.safe_load(config.read_text()) or {}
    data["kanban"] = {"max_in_progress_per_profile": 2}
    config.write_text(yaml.safe_dump(data))
    with running_alpha(hermes_home, tmp_path, reply=ANSWER) as profile:
        yield profile


def test_a_task_created_in_the_page_reaches_done_live(
    browser: Any,
    artifacts: Path,
    hermes_home: HermesHome,
    alpha: GatewayProfile,
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    env = clean_env(HERMES_HOME=str(hermes_home.root))
    with oidc_dashboard(env) as (base_url, issuer):
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        try:
            # The real login: the page is gated, the provider vouches for alice.
            sign_in(page, base_url, issuer, "/kanban")
            expect(page.locator("#kanban-live")).to_have_text("live", timeout=WAIT_MS)
            caps = page.locator('#kanban-caps tr[data-profile="alpha"]')
            expect(caps.locator('[data-field="cap"]')).to_have_text("2")
            expect(caps.locator('[data-field="running"]')).to_have_text("0")

            # From here on the page must never load again: every change is live.
            loads: list[str] = []
            page.on("domcontentloaded", lambda p: loads.append(p.url))

            page.fill("#kanban-title", "Ask alpha the question")
            page.fill("#kanban-body", "What is six times seven?")
            page.select_option("#kanban-assignee", "alpha")
            page.fill("#kanban-priority", "3")
            page.click("#kanban-create-submit")
            expect(page.locator("#kanban-create-result")).to_have_text(
                "created #1 (ready)", timeout=WAIT_MS
            )
            card = page.locator('#kanban-board [data-status="ready"] [data-task-id="1"]')
            expect(card).to_contain_text("Ask alpha the question")
            expect(card.locator(".kcard-assignee")).to_have_text("alpha")
            expect(card.locator(".kcard-priority")).to_have_text("P3")
            expect(card.locator(".kcard-attempts")).to_have_text("0 attempts")

            card.click()
            dialog = page.locator("#kanban-task")
            expect(dialog).to_be_visible()
            expect(dialog.locator('[data-field="status"]')).to_have_text("ready")
            expect(page.locator("#kanban-task-body")).to_have_text("What is six times seven?")
            expect(page.locator("#kanban-task-answer")).to_have_text("(no result yet)")
            expect(dialog.locator('[data-task-action="reclaim"]')).to_be_disabled()
            dialog.locator("#kanban-task-close").click()
            expect(dialog).to_be_hidden()

            page.click("#kanban-preview-button")
            expect(page.locator("#kanban-preview")).to_contain_text(
                "Would spawn: #1 (alpha)", timeout=WAIT_MS
            )
            page.screenshot(path=str(artifacts / "kanban-ready.png"), full_page=True)

            card.click()
            expect(dialog.locator('[data-field="status"]')).to_have_text("ready")
            with kanban_daemon(tmp_path / "daemon.log"):
                # The open card view and the board both follow the dispatcher.
                expect(dialog.locator('[data-field="status"]')).to_have_text(
                    "done", timeout=WAIT_MS
                )
                expect(page.locator("#kanban-task-answer")).to_have_text(ANSWER)
                runs = page.locator("#kanban-task-runs tbody tr")
                expect(runs).to_have_count(1)
                expect(runs.first).to_contain_text("completed")
                expect(page.locator("#kanban-task-events")).to_contain_text("completed")
                done = page.locator('#kanban-board [data-status="done"] [data-task-id="1"]')
                expect(done).to_contain_text("Ask alpha the question")
                expect(done.locator(".kcard-attempts")).to_have_text("1 attempt")
                expect(
                    page.locator('#kanban-board [data-status="ready"] [data-task-id]')
                ).to_have_count(0)
            page.screenshot(path=str(artifacts / "kanban-done.png"), full_page=True)

            # The run's token, the holder's secret, is nowhere in the page.
            store = open_store(hermes_home)
            try:
                (run,) = store.runs_of(1)
                assert run.outcome == "completed"
                assert store.get_task(1).result == ANSWER
            finally:
                store.close()
            assert run.token not in page.content()

            # Archive from the card view: the card moves to the collapsed column.
            dialog.locator('[data-task-action="archive"]').click()
            expect(page.locator("#kanban-task-result")).to_have_text("archive: done (archived)")
            expect(dialog.locator('[data-field="status"]')).to_have_text("archived")
            archived = page.locator('#kanban-board [data-status="archived"]')
            expect(archived.locator("[data-count]")).to_have_text("1")
            expect(page.locator('#kanban-board [data-status="done"] [data-task-id]')).to_have_count(
                0
            )
            assert loads == [], f"the page navigated: {loads}"
        finally:
            context.close()

    # The provider really answered the prompt built from the task, through alpha's gateway.
    asked = [r for r in alpha.upstream.requests if r.path.endswith("/chat/completions")]
    assert len(asked) == 1
    assert "What is six times seven?" in str(asked[0].body)
    audit = hermes_home.auth_log.read_text()
    assert '"event":"kanban_action"' in audit and '"user":"alice@example.com"' in audit
