"""The playground and the sessions browser in a real browser, with a real gateway.

Profile `alpha` runs a real gateway (`hermes gateway run`) wired to the fake provider,
which streams its answers in paced pieces; the dashboard runs as a subprocess in OAuth
mode against a real OIDC provider. Alice logs in, chats with alpha in the playground
(the answer grows in the page while the provider is still sending, then a second
message goes on in the same session), opens that session in the sessions browser,
reads its transcript, searches for a word from it, exports it and deletes it through
the confirmation dialog; then Stop ends an answer half-way. No answer the page receives
carries the profile's key.
Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hermes_container.home import SESSIONS_DB, HermesHome
from tests.browser.support import WAIT_MS, oidc_dashboard, running_alpha, sign_in
from tests.conftest import wait_for
from tests.unit.conftest import GatewayProfile
from tests.unit.dashboard_support import clean_env

pytestmark = pytest.mark.browser
PIECES = ["The ", "lighthouse ", "keeper ", "waved ", "at ", "the ", "passing ", "ships."]
ANSWER = "".join(PIECES)


@pytest.fixture
def alpha(hermes_home: HermesHome, tmp_path: Path) -> Iterator[GatewayProfile]:
    """Profile `alpha` with a running gateway to a fake provider that streams slowly."""
    # about 3 s from the first piece to the last
    with running_alpha(hermes_home, tmp_path, chunks=PIECES, chunk_delay=0.4) as profile:
        yield profile


def _rows(profile: GatewayProfile, session: str) -> int:
    with sqlite3.connect(profile.dir / SESSIONS_DB) as conn:
        count: int = conn.execute(
            "SELECT COUNT(*) FROM exchanges WHERE session_id = ?", (session,)
        ).fetchone()[0]
    return count


def _status(profile: GatewayProfile, session: str) -> int | None:
    with sqlite3.connect(profile.dir / SESSIONS_DB) as conn:
        row = conn.execute(
            "SELECT status FROM exchanges WHERE session_id = ?", (session,)
        ).fetchone()
    return None if row is None else int(row[0])


def test_chat_in_the_playground_then_find_search_export_and_delete_the_session(
    browser: Any, artifacts: Path, hermes_home: HermesHome, alpha: GatewayProfile
) -> None:
    from playwright.sync_api import expect

    key = alpha.api_key
    env = clean_env(HERMES_HOME=str(hermes_home.root))
    with oidc_dashboard(env) as (base_url, issuer):
        context = browser.new_context(
            viewport={"width": 1400, "height": 1000}, accept_downloads=True
        )
        page = context.new_page()
        answers: list[Any] = []
        page.on("response", lambda response: answers.append(response))
        try:
            # The real login: the page is gated, the provider vouches for alice.
            sign_in(page, base_url, issuer, "/playground")

            # The playground: pick alpha, a new session, ask; the answer grows in place.
            page.select_option("#pg-profile", "alpha")
            expect(page.locator("#pg-session")).to_have_value("")
            page.fill("#pg-input", "Tell me about the lighthouse")
            page.click("#pg-send")
            streaming = page.locator(".pg-msg.pg-assistant.pg-streaming")
            expect(streaming).to_contain_text("lighthouse", timeout=WAIT_MS)
            # Still streaming, so the provider has not sent its last piece yet.
            assert "ships." not in (streaming.text_content() or "")
            page.screenshot(path=str(artifacts / "playground-streaming.png"), full_page=True)
            answer = page.locator(".pg-msg.pg-assistant").first
            expect(answer).to_contain_text(ANSWER, timeout=WAIT_MS)
            expect(page.locator(".pg-streaming")).to_have_count(0)
            expect(page.locator("#pg-state")).to_have_text("ready")
            session = page.locator("#pg-session").input_value()
            assert session, "the new session is picked once the gateway named it"
            assert f"session={session}" in page.url

            # A second message goes on in the same session, with the conversation so far.
            page.fill("#pg-input", "And then?")
            page.click("#pg-send")
            expect(page.locator(".pg-msg.pg-assistant")).to_have_count(2)
            expect(page.locator(".pg-msg.pg-assistant").nth(1)).to_contain_text(
                ANSWER, timeout=WAIT_MS
            )
            expect(page.locator(".pg-streaming")).to_have_count(0, timeout=WAIT_MS)
            sent = alpha.upstream.requests[-1].body["messages"]
            assert [m["content"] for m in sent if m["role"] != "system"] == [
                "Tell me about the lighthouse",
                ANSWER,
                "And then?",
            ]
            page.screenshot(path=str(artifacts / "playground-done.png"), full_page=True)

            # The sessions browser, opened from the playground on that session.
            page.click("#pg-to-sessions")
            page.wait_for_url(f"{base_url}/sessions?profile=alpha&session={session}")
            row = page.locator(f'#sessions-table tr[data-session="{session}"]')
            expect(row).to_contain_text("Tell me about the lighthouse")
            expect(row.locator("td").nth(2)).to_have_text("2")
            transcript = page.locator("#sessions-messages li")
            expect(transcript).to_have_count(4)
            expect(transcript.nth(0)).to_contain_text("Tell me about the lighthouse")
            expect(transcript.nth(1)).to_contain_text(ANSWER)
            expect(transcript.nth(2)).to_contain_text("And then?")
            expect(page.locator("#sessions-facts")).to_contain_text("test-model")
            page.screenshot(path=str(artifacts / "sessions-transcript.png"), full_page=True)

            # Search: a word of the answer finds the session and marks the word.
            page.fill("#sessions-q", "KEEPER")
            page.click("#sessions-search")
            expect(page.locator("#sessions-heading")).to_have_text("Sessions containing “KEEPER”")
            expect(row).to_be_visible()
            expect(row.locator("mark").first).to_have_text("keeper")
            expect(page.locator("#sessions-messages mark").first).to_have_text("keeper")
            page.fill("#sessions-q", "albatross")
            page.click("#sessions-search")
            expect(page.locator("#sessions-empty")).to_contain_text("albatross")
            expect(row).to_have_count(0)
            page.click("#sessions-clear")
            expect(row).to_be_visible()

            # Export: a JSON download of the whole session.
            with page.expect_download() as download_info:
                page.click("#sessions-export")
            download = download_info.value
            assert download.suggested_filename == f"hermes-alpha-{session}.json"
            exported = json.loads(Path(download.path()).read_text())
            assert exported["session_id"] == session and len(exported["exchanges"]) == 2
            assert exported["messages"][1]["content"] == ANSWER

            # Delete, behind the confirmation dialog: Cancel keeps it, Delete removes it.
            page.click("#sessions-delete")
            dialog = page.locator("#sessions-confirm")
            expect(dialog).to_be_visible()
            expect(page.locator("#sessions-confirm-id")).to_have_text(session)
            expect(page.locator("#sessions-confirm-count")).to_have_text("2")
            page.screenshot(path=str(artifacts / "sessions-delete.png"), full_page=True)
            page.click("#sessions-confirm-cancel")
            expect(dialog).to_be_hidden()
            assert _rows(alpha, session) == 2
            page.click("#sessions-delete")
            page.click("#sessions-confirm-delete")
            expect(page.locator("#sessions-result")).to_have_text(
                f"deleted session {session} (2 exchanges)"
            )
            expect(page.locator("#sessions-transcript")).to_be_hidden()
            expect(row).to_have_count(0)
            expect(page.locator("#sessions-empty")).to_be_visible()
            assert _rows(alpha, session) == 0
            assert "session=" not in page.url

            # Stop, mid-answer: the page keeps what came, the gateway ends the exchange.
            page.goto(base_url + "/playground?profile=alpha")
            page.fill("#pg-input", "One more story")
            page.click("#pg-send")
            expect(page.locator(".pg-streaming")).to_contain_text("lighthouse", timeout=WAIT_MS)
            page.click("#pg-stop")
            expect(page.locator(".pg-msg.pg-assistant .pg-note")).to_have_text("(stopped)")
            expect(page.locator("#pg-state")).to_have_text("stopped")
            stopped = page.locator("#pg-session").input_value()
            assert stopped and stopped != session
            wait_for(lambda: _status(alpha, stopped) == 499, what="the stopped exchange")

            # No answer the browser got carries the profile's key.
            assert key not in page.content()
            for response in answers:
                try:
                    body = response.text()
                except Exception:  # a download or an aborted body: nothing to read
                    body = ""
                assert key not in body and key not in json.dumps(response.headers)
        finally:
            context.close()

    audit = [json.loads(line) for line in hermes_home.auth_log.read_text().splitlines()]
    mine = [
        (r["event"], r["action"], r["result"], r.get("session"))
        for r in audit
        if r["event"] in ("playground_action", "sessions_action")
    ]
    assert mine == [
        ("playground_action", "chat", "ok", session),
        ("playground_action", "chat", "ok", session),
        ("sessions_action", "delete", "ok", session),
        ("playground_action", "chat", "ok", stopped),
    ]
    assert all(r["user"] == "alice@example.com" for r in audit if r["event"].endswith("_action"))
    assert key not in hermes_home.auth_log.read_text()
