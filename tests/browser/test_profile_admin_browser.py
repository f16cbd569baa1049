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
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hermes_container.envfile import read_env
from tests import fake_upstream
from tests.browser.conftest import require_s6
from tests.conftest import free_port, wait_for
from tests.unit.dashboard_support import clean_env, dashboard_process, oidc_provider

pytestmark = pytest.mark.browser
WAIT = 30.0
WAIT_MS = 30_000
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


def hermes(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hermes_container", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def gateway_status(env: dict[str, str], profile: str) -> dict[str, Any]:
    proc = hermes(env, "-p", profile, "gateway", "status", "--json")
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


@pytest.fixture
def supervised() -> Iterator[dict[str, str]]:
    """A `hermes supervise` tree (host mode) with only the default profile."""
    require_s6()
    base = Path(tempfile.mkdtemp(prefix="hermes-browser-admin-"))
    base.chmod(0o755)
    env = clean_env(
        HERMES_HOME=str(base / "home"),
        HERMES_GATEWAY_PORT_BASE=str(free_port()),
        HERMES_INGRESS_PORT=str(free_port()),
        HERMES_GATEWAY_STAGGER="0",
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.pop("HERMES_S6_SCANDIR", None)  # host mode: $HERMES_HOME/run/service
    env.pop("HERMES_PROFILE", None)
    if os.geteuid() == 0:
        env["HERMES_ALLOW_ROOT_GATEWAY"] = "1"
    output = (base / "supervise.log").open("wb")  # a file: the tree never blocks on a pipe
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "hermes_container", "supervise"],
        env=env,
        cwd=base,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        try:
            wait_for(lambda: gateway_status(env, "default")["registered"], WAIT, "the tree")
        except AssertionError:
            print((base / "supervise.log").read_text(errors="replace")[-4000:])
            raise
        yield env
    finally:
        supervisor.send_signal(signal.SIGTERM)
        try:
            supervisor.wait(timeout=90)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(supervisor.pid, signal.SIGKILL)
            supervisor.wait(timeout=10)
        output.close()
        shutil.rmtree(base, ignore_errors=True)


def _oidc_env(issuer: str) -> dict[str, str]:
    return {
        "HERMES_DASHBOARD_OIDC_ISSUER": issuer,
        "HERMES_DASHBOARD_OIDC_CLIENT_ID": "hermes-dashboard",
        "HERMES_DASHBOARD_OIDC_CLIENT_SECRET": "browser-test-secret",
        "HERMES_DASHBOARD_ALLOWED_EMAILS": "alice@example.com",
    }


def _chat(port: int, key: str) -> int:
    return httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {key}"},
        trust_env=False,
        timeout=WAIT,
    ).status_code


def test_create_chat_change_the_persona_and_rotate_the_key(
    browser: Any, artifacts: Path, supervised: dict[str, str]
) -> None:
    from playwright.sync_api import expect

    users = [("alice", {"email": "alice@example.com", "email_verified": True, "name": "Alice"})]
    home = Path(supervised["HERMES_HOME"])
    with (
        PersonaUpstream() as upstream,
        oidc_provider(users) as issuer,
        dashboard_process({**supervised, **_oidc_env(issuer)}) as (port, _proc),
    ):
        base_url = f"http://127.0.0.1:{port}"
        context = browser.new_context(viewport={"width": 1300, "height": 1000})
        page = context.new_page()
        answers: list[Any] = []
        page.on("response", lambda response: answers.append(response))
        try:
            page.goto(base_url + "/")
            assert "/login" in page.url
            page.click("#login-oidc")
            page.wait_for_url(issuer + "/oauth2/authorize*")
            page.get_by_role("button", name="alice").click()
            page.wait_for_url(base_url + "/")

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
            old = read_env(profile_dir / ".env")["API_SERVER_KEY"]
            gateway_port = after["port"]
            assert _chat(gateway_port, old) == 200
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
            assert new == read_env(profile_dir / ".env")["API_SERVER_KEY"] != old
            assert _chat(gateway_port, old) == 401
            assert _chat(gateway_port, new) == 200
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
