"""The dashboard in a real browser, against a real supervised tree and a real OIDC provider.

`hermes supervise` runs s6-svscan with a real gateway for profile `alpha`; the
dashboard subprocess finds that tree through the same `get_manager` as the CLI. The
browser logs in through oidc-provider-mock, sees the profiles, presses Stop on
`alpha` and watches its state change; screenshots land in test-artifacts/.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.support import (
    WAIT_MS,
    gateway_status,
    hermes,
    oidc_dashboard,
    sign_in,
    supervised_tree,
)
from tests.conftest import free_port, set_port
from tests.unit.dashboard_support import clean_env, dashboard_process

pytestmark = pytest.mark.browser


def _alpha_started(env: dict[str, str]) -> None:
    assert hermes(env, "profile", "create", "alpha", "--start").returncode == 0
    set_port(Path(env["HERMES_HOME"]) / "profiles" / "alpha")


@pytest.fixture
def supervised() -> Iterator[dict[str, str]]:
    """A `hermes supervise` tree whose profile `alpha` runs a real gateway."""
    with supervised_tree(prepare=_alpha_started, ready="alpha") as env:
        yield env


def test_login_see_profiles_and_stop_a_gateway(
    browser: Any, artifacts: Path, supervised: dict[str, str]
) -> None:
    from playwright.sync_api import expect

    with oidc_dashboard(supervised) as (base_url, issuer):
        context = browser.new_context(viewport={"width": 1200, "height": 800})
        page = context.new_page()
        try:
            sign_in(page, base_url, issuer)

            table = page.locator("#profiles")
            table.wait_for()
            assert page.locator("tr[data-profile]").count() == 2
            alpha = page.locator('tr[data-profile="alpha"] [data-field="gateway_state"]')
            assert alpha.inner_text().strip() == "running"
            assert "alice@example.com" in page.inner_text(".who")
            page.screenshot(path=str(artifacts / "dashboard-overview.png"), full_page=True)

            page.click('a[href="/profiles/alpha"]')
            page.wait_for_url(base_url + "/profiles/alpha")
            state = page.locator("#gateway-state")
            assert state.inner_text().strip() == "running"
            page.click('button[data-action="stop"]')
            # Locator polling, not wait_for_function: our CSP forbids eval in the page.
            expect(state).to_have_text("stopped", timeout=WAIT_MS)
            expect(page.locator("#action-result")).to_have_text("stop: done")
            page.screenshot(path=str(artifacts / "dashboard-profile.png"), full_page=True)
        finally:
            context.close()

    # The real supervisor agrees: the gateway is down and the user's intent recorded.
    status = gateway_status(supervised, "alpha")
    assert status["up"] is False and status["desired_state"] == "stopped"
    audit = Path(supervised["HERMES_HOME"], "logs", "dashboard-auth.log").read_text()
    assert '"event":"gateway_action"' in audit and '"user":"alice@example.com"' in audit


@pytest.fixture
def plain_home(tmp_path: Path) -> dict[str, str]:
    """A home with profile `alpha` and a gateway log, but no supervisor running."""
    env = clean_env(HERMES_HOME=str(tmp_path / "home"), HERMES_GATEWAY_PORT_BASE=str(free_port()))
    assert hermes(env, "profile", "create", "alpha").returncode == 0
    log_dir = tmp_path / "home" / "logs" / "gateways" / "alpha"
    log_dir.mkdir(parents=True)
    (log_dir / "current").write_text("2026-01-01 00:00:00.000000000  hello from alpha\n")
    return env


def test_loopback_token_mode_in_the_browser(browser: Any, plain_home: dict[str, str]) -> None:
    """The page's own scripts send the injected token: live log tail and live refresh."""
    from playwright.sync_api import expect

    with dashboard_process(plain_home) as (port, _proc):
        context = browser.new_context()
        page = context.new_page()
        try:
            page.goto(f"http://127.0.0.1:{port}/profiles/alpha")
            expect(page.locator("#log")).to_contain_text("hello from alpha", timeout=10_000)
            log = Path(plain_home["HERMES_HOME"], "logs", "gateways", "alpha", "current")
            with log.open("a") as fh:
                fh.write("2026-01-01 00:00:01.000000000  a new line\n")
            expect(page.locator("#log")).to_contain_text("a new line", timeout=10_000)

            page.goto(f"http://127.0.0.1:{port}/")
            desired = page.locator('tr[data-profile="alpha"] [data-field="desired_state"]')
            expect(desired).to_have_text("-")
            state_file = Path(plain_home["HERMES_HOME"], "profiles", "alpha", "gateway_state.json")
            state_file.write_text(json.dumps({"desired_state": "running"}))
            expect(desired).to_have_text("running", timeout=10_000)  # polled with the token

            # Profiles made and deleted by the CLI come and go on the open page, in order.
            assert hermes(plain_home, "profile", "create", "beta").returncode == 0
            assert hermes(plain_home, "profile", "create", "aardvark").returncode == 0
            rows = page.locator("#profiles tr[data-profile]")
            expect(rows).to_have_count(4, timeout=10_000)
            order = [rows.nth(i).get_attribute("data-profile") for i in range(4)]
            assert order == ["default", "aardvark", "alpha", "beta"]
            beta = page.locator('tr[data-profile="beta"]')
            # No supervisor here: the state the server-rendered rows show too.
            expect(beta.locator('[data-field="gateway_state"]')).to_have_text("unknown")
            expect(beta.locator("a")).to_have_attribute("href", "/profiles/beta")
            assert hermes(plain_home, "profile", "delete", "beta", "--yes").returncode == 0
            expect(beta).to_have_count(0, timeout=10_000)
            expect(rows).to_have_count(3)
        finally:
            context.close()


def test_denied_user_then_allowed_user_and_logout(
    browser: Any, artifacts: Path, plain_home: dict[str, str]
) -> None:
    from playwright.sync_api import expect

    users = [
        ("alice", {"email": "alice@example.com", "email_verified": True}),
        ("mallory", {"email": "mallory@evil.example", "email_verified": True}),
    ]
    with oidc_dashboard(plain_home, users, host="0.0.0.0") as (base_url, _issuer):
        context = browser.new_context(viewport={"width": 1200, "height": 700})
        page = context.new_page()
        try:
            page.goto(base_url + "/logs/audit")
            page.screenshot(path=str(artifacts / "dashboard-login.png"))
            page.click("#login-oidc")
            page.get_by_role("button", name="mallory").click()
            expect(page.locator("h1")).to_have_text("Access denied")
            page.screenshot(path=str(artifacts / "dashboard-denied.png"))

            page.goto(base_url + "/logs/audit")
            page.click("#login-oidc")
            page.get_by_role("button", name="alice").click()
            page.wait_for_url(base_url + "/logs/audit")
            expect(page.locator("#security-events table")).to_contain_text("login_denied")
            expect(page.locator("#security-events table")).to_contain_text("mallory@evil.example")

            page.goto(base_url + "/profiles/alpha")
            expect(page.locator("#log")).to_contain_text("hello from alpha")
            expect(page.locator('button[data-action="stop"]')).to_be_disabled()

            page.click("#logout")
            page.wait_for_url(base_url + "/login")
            page.goto(base_url + "/")
            assert "/login" in page.url
        finally:
            context.close()
