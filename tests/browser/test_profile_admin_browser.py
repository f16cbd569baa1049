"""Profile management in a real browser, against a real supervised tree.

`hermes supervise` runs s6-svscan; the dashboard runs as a subprocess in OAuth mode
against a real OIDC provider and finds that tree as the CLI does. Alice signs in,
creates profile `scribe` from the overview (the dashboard lists the provider's models;
she picks one, types the provider key and a persona, "start now"), chats with it in
the playground, changes its persona on its page (Review changes, the diff, Save) and
sees the next answer change while the gateway keeps its pid, rotates its key (the new
key shown once, the old one refused at once) and deletes the profile by typing its
name. The provider here names the persona it was given in every answer, so a persona
change shows in the page.
Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import fake_upstream
from tests.browser.support import (
    WAIT,
    WAIT_MS,
    gateway_status,
    hermes,
    oidc_dashboard,
    sign_in,
    supervised_tree,
)
from tests.s6.support import chat, gateway_key

pytestmark = pytest.mark.browser
PROVIDER_KEY = "sk-browser-provider-key-0123456789"


class _PersonaHandler(fake_upstream._Handler):
    """Answers `[<the persona's first line>] echo: <the last user message>`."""

    def _stream(self, body: Any, b: fake_upstream.Behaviour) -> None:
        system = [m["content"] for m in body.get("messages", []) if m.get("role") == "system"]
        persona = system[0].splitlines()[0] if system else "no persona"
        reply = f"[{persona}] echo: {fake_upstream._last_user_text(body)}"
        super()._stream(body, dataclasses.replace(b, reply=reply))


class PersonaUpstream(fake_upstream.FakeUpstream):
    def __init__(self) -> None:
        super().__init__()
        self._server.RequestHandlerClass = _PersonaHandler


@pytest.fixture
def supervised() -> Iterator[dict[str, str]]:
    """A `hermes supervise` tree (host mode) with only the default profile."""
    with supervised_tree() as env:
        yield env


def test_create_chat_change_the_persona_and_rotate_the_key(
    browser: Any, artifacts: Path, supervised: dict[str, str]
) -> None:
    from playwright.sync_api import expect

    home = Path(supervised["HERMES_HOME"])
    with PersonaUpstream() as upstream, oidc_dashboard(supervised) as (base_url, issuer):
        context = browser.new_context(viewport={"width": 1300, "height": 1000})
        page = context.new_page()
        answers: list[Any] = []
        page.on("response", lambda response: answers.append(response))
        try:
            sign_in(page, base_url, issuer)

            # Create: the dashboard lists the provider's models; Alice picks one.
            page.click("#new-profile > summary")
            page.fill("#np-name", "scribe")
            page.fill("#np-base-url", upstream.base_url)
            page.fill("#np-api-key", PROVIDER_KEY)
            page.click("#np-list-models")
            expect(page.locator("#np-models")).to_be_visible(timeout=WAIT_MS)
            expect(page.locator("#np-models-status")).to_contain_text("lists 1 model")
            page.select_option("#np-models", "fake-model")
            expect(page.locator("#np-model")).to_have_value("fake-model")
            page.fill("#np-persona", "You are Scribe.\nYou write things down.")
            expect(page.locator("#np-start")).to_be_checked()
            page.click("#np-create")
            expect(page.locator("#np-result")).to_contain_text("running on port", timeout=WAIT_MS)
            expect(page.locator('tr[data-profile="scribe"]')).to_have_count(1)
            expect(page.locator("#np-api-key")).to_have_value("")
            page.screenshot(path=str(artifacts / "profile-admin-created.png"), full_page=True)
            assert upstream.requests[0].headers["authorization"] == f"Bearer {PROVIDER_KEY}"
            status = gateway_status(supervised, "scribe")
            assert status["ready"] and status["desired_state"] == "running"
            pid = status["pid"]

            # Chat with it in the playground.
            page.click("#np-chat")
            page.wait_for_url(base_url + "/playground?profile=scribe")
            page.fill("#pg-input", "hello")
            page.click("#pg-send")
            first = page.locator(".pg-msg.pg-assistant").first
            expect(first).to_contain_text("[You are Scribe.] echo: hello", timeout=WAIT_MS)

            # Change the persona: review the diff, save, no restart.
            page.goto(base_url + "/profiles/scribe")
            persona = page.locator("#pa-persona")
            expect(persona).to_have_value("You are Scribe.\nYou write things down.\n")
            expect(page.locator('[data-key="model.name"]')).to_have_value("fake-model")
            persona.fill("You are Quill.\nYou write things down.")
            page.click("#pa-review")
            diff = page.locator("#pa-persona-diff")
            expect(diff).to_contain_text("-You are Scribe.")
            expect(diff).to_contain_text("+You are Quill.")
            expect(page.locator("#pa-config-diff")).to_be_hidden()
            page.screenshot(path=str(artifacts / "profile-admin-review.png"), full_page=True)
            page.click("#pa-save")
            expect(page.locator("#pa-result")).to_have_text(
                "Saved: applied without restart.", timeout=WAIT_MS
            )
            assert (home / "profiles/scribe/SOUL.md").read_text().startswith("You are Quill.")
            page.goto(base_url + "/playground?profile=scribe")
            page.fill("#pg-input", "hello again")
            page.click("#pg-send")
            answer = page.locator(".pg-msg.pg-assistant").last
            expect(answer).to_contain_text("[You are Quill.] echo: hello again", timeout=WAIT_MS)
            after = gateway_status(supervised, "scribe")
            assert after["pid"] == pid and after["restarts"] == status["restarts"]

            # Rotate the key: shown once, the old one refused at once.
            profile_dir = home / "profiles/scribe"
            old = gateway_key(profile_dir)
            gateway_port = after["port"]
            assert chat(gateway_port, old, timeout=WAIT).status_code == 200
            page.goto(base_url + "/profiles/scribe")
            snippet = page.locator("#snippet-curl-own")
            expect(snippet).to_contain_text(f":{gateway_port}/v1/chat/completions")
            expect(snippet).to_contain_text("$HERMES_API_KEY")
            page.once("dialog", lambda dialog: dialog.accept())
            page.click("#pa-rotate")
            shown = page.locator("#pa-key-value")
            expect(shown).to_be_visible(timeout=WAIT_MS)
            expect(page.locator("#pa-rotate-result")).to_have_text(
                "Rotated: the gateway refuses the old key from now on."
            )
            new = shown.inner_text().strip()
            assert new == gateway_key(profile_dir) != old
            assert chat(gateway_port, old, timeout=WAIT).status_code == 401
            assert chat(gateway_port, new, timeout=WAIT).status_code == 200
            page.screenshot(path=str(artifacts / "profile-admin-rotated.png"), full_page=True)
            page.reload()
            expect(page.locator("#pa-new-key")).to_be_hidden()
            assert new not in page.content()

            # Only the rotation's answer carried a key, and only the new one.
            for response in answers:
                body = ""
                # The live log tail never ends; a chat stream holds the model's words.
                if "event-stream" not in response.headers.get("content-type", ""):
                    with contextlib.suppress(Exception):  # a redirect has no body to read
                        body = response.text()
                seen = body + json.dumps(response.headers)
                assert old not in seen and PROVIDER_KEY not in seen
                if not response.url.endswith("/key/rotate"):
                    assert new not in seen, response.url
            assert gateway_status(supervised, "scribe")["pid"] == pid

            # Delete: only the exact name enables the button; then slot and files go.
            assert (home / "run/service/gateway-scribe").is_dir()
            page.fill("#pa-confirm", "Scribe")
            expect(page.locator("#pa-delete")).to_be_disabled()
            page.fill("#pa-confirm", "scribe")
            page.click("#pa-delete")
            page.wait_for_url(base_url + "/")
            expect(page.locator('tr[data-profile="scribe"]')).to_have_count(0)
            assert not profile_dir.exists()
            assert not (home / "run/service/gateway-scribe").exists()  # the slot went first
            gone = hermes(supervised, "-p", "scribe", "gateway", "status")
            assert gone.returncode != 0 and "does not exist" in gone.stderr
        finally:
            context.close()

    audit = [
        json.loads(line) for line in (home / "logs/dashboard-auth.log").read_text().splitlines()
    ]
    mine = [(r["action"], r["result"]) for r in audit if r["event"] == "profiles_action"]
    assert mine == [
        ("list_models", "ok"),
        ("create", "ok"),
        ("edit", "ok"),
        ("rotate_key", "ok"),
        ("delete", "ok"),
    ]
    assert all(r["user"] == "alice@example.com" for r in audit if r["event"] == "profiles_action")
    log_text = (home / "logs/dashboard-auth.log").read_text()
    assert PROVIDER_KEY not in log_text and old not in log_text and new not in log_text
