"""HERMES_DASHBOARD_AUTH=token in Chromium: open the sign-in link the dashboard printed,
land signed in on the overview, with the token gone from the address bar. And the basic
login's form (HERMES_DASHBOARD_BASIC_*): a wrong password is refused, the right one
lands on the page asked for.

The real `hermes dashboard` runs as a subprocess; the link is read from its own output,
as an operator reads it from `docker logs`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from hermes_container.home import HermesHome
from hermes_container.profiles import create_profile, ensure_default_profile
from tests.unit.dashboard_support import clean_env, dashboard_process

pytestmark = pytest.mark.browser
SIGN_IN = re.compile(r"sign in at (\S+/login#token=[A-Za-z0-9_-]+)$")
WAIT_MS = 15_000


def test_the_printed_link_signs_in_and_shows_the_overview(
    browser: Any, artifacts: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    home = HermesHome(tmp_path / "home")
    ensure_default_profile(home)
    create_profile(home, "alpha")
    env = clean_env(HERMES_HOME=str(home.root), HERMES_DASHBOARD_AUTH="token")
    with dashboard_process(env) as (port, proc):
        assert proc.stderr is not None
        link = None
        while link is None:  # logged before the port opened: already in the pipe
            line = proc.stderr.readline()
            assert line, "the dashboard ended without printing a sign-in link"
            match = SIGN_IN.search(line.strip())
            link = match.group(1) if match else None
        base = f"http://127.0.0.1:{port}"
        assert link.startswith(base + "/login#token=")
        token = link.rpartition("=")[2]

        # Without the token: the login page, not the overview
        stranger = browser.new_context()
        try:
            page = stranger.new_page()
            page.goto(base + "/")
            expect(page.locator("#token-login")).to_be_visible(timeout=WAIT_MS)
            assert page.url.startswith(base + "/login")
            page.goto(base + "/login#token=" + "x" * 43)
            expect(page.locator("#token-error")).to_be_visible(timeout=WAIT_MS)
            assert page.url.startswith(base + "/login")
            assert page.locator("#profiles").count() == 0
        finally:
            stranger.close()

        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(link)
            page.wait_for_url(base + "/", timeout=WAIT_MS)
            expect(page.locator("#profiles")).to_be_visible(timeout=WAIT_MS)
            expect(page.locator("tr[data-profile]")).to_have_count(2)
            expect(page.locator('tr[data-profile="alpha"]')).to_be_visible()
            expect(page.locator(".who .user")).to_have_text("operator")
            assert token not in page.url
            page.screenshot(path=str(artifacts / "token-login-overview.png"))
            # the session cookie carries on: a reload stays signed in
            page.reload()
            expect(page.locator("#profiles")).to_be_visible(timeout=WAIT_MS)
            assert page.url == base + "/"
        finally:
            context.close()


def test_the_basic_form_signs_in(browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    from hermes_container.dashboard.auth.basic_login import hash_password

    home = HermesHome(tmp_path / "home")
    ensure_default_profile(home)
    env = clean_env(
        HERMES_HOME=str(home.root),
        HERMES_DASHBOARD_BASIC_USER="admin",
        HERMES_DASHBOARD_BASIC_PASSWORD_HASH=hash_password("s3cret pass"),
    )
    with dashboard_process(env) as (port, _proc):
        base = f"http://127.0.0.1:{port}"
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(base + "/kanban")
            page.fill("#basic-user", "admin")
            page.fill("#basic-password", "not it")
            page.click("#basic-submit")
            expect(page.locator("#basic-error")).to_be_visible(timeout=WAIT_MS)
            page.fill("#basic-password", "s3cret pass")
            page.click("#basic-submit")
            page.wait_for_url(base + "/kanban", timeout=WAIT_MS)
            expect(page.locator(".who .user")).to_have_text("admin")
        finally:
            context.close()
