"""Profile management in the dashboard: create, list a provider's models, edit the
settings and persona (diff first, stale forms refused), rotate the key, delete, and the
client snippets; against real gateways and the fake provider.

The dashboard runs in-process in loopback token mode, driven as its page drives it
(the token header, the page's CSRF token). Gateways are real `hermes gateway run`
processes (make_profile), so a reload is a real SIGHUP and a rotated key is refused by
the real gateway; creating with "start now" runs under a real s6-svscan. When a test
ends, every answer the dashboard gave is searched for every key any profile had during
the test (and the provider keys typed into forms): only a rotation's answer may carry
one, its own new key. The audit log, the ledger and the dashboard's log carry none.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from hermes_container.config import read_port
from hermes_container.dashboard.app import create_app
from hermes_container.dashboard.auth.public_paths import is_public_path
from hermes_container.dashboard.settings import DashboardSettings
from hermes_container.envfile import read_env
from hermes_container.events.ledger import Ledger
from hermes_container.home import HermesHome
from hermes_container.profiles import list_profiles
from hermes_container.state import read_state
from tests.conftest import wait_for
from tests.fake_upstream import FakeUpstream
from tests.unit.conftest import GatewayProfile
from tests.unit.dashboard_client_support import LOCAL, csrf_of, one_line_error, page_client

TOKEN = "profile-admin-test-token"
ROTATE = "/key/rotate"
MakeProfile = Callable[[str], GatewayProfile]
PROVIDER_KEY = "sk-provider-typed-in-the-form-0123456789"
# Top-level parts of a home that record what happened rather than hold a profile.
RECORDS = frozenset({"logs", "events", "kanban", "dashboard", "run"})
WRITES = (
    ("POST", "/api/profiles"),
    ("POST", "/api/provider/models"),
    ("DELETE", "/api/profiles/alpha"),
    ("PUT", "/api/profiles/alpha/settings"),
    ("POST", "/api/profiles/alpha/key/rotate"),
)


# -- the client, and the search for keys in its answers -----------------------------------


class Watch:
    """Every answer the dashboard gave, and every key a profile had meanwhile."""

    def __init__(self, home: HermesHome) -> None:
        self.home = home
        self.answers: list[httpx.Response] = []
        self.keys: set[str] = {PROVIDER_KEY}

    def snapshot(self) -> None:
        for name in list_profiles(self.home):
            env = self.home.profile_dir(name) / ".env"
            if env.exists():
                self.keys |= {v for v in read_env(env).values() if len(v) >= 8}

    def seen(self, response: httpx.Response) -> None:
        self.snapshot()  # the keys right after this answer (a rotation's new one too)
        self.answers.append(response)

    def check(self, log_text: str) -> None:
        self.snapshot()
        for response in self.answers:
            response.read()
            allowed = set()
            if response.request.url.path.endswith(ROTATE) and response.status_code == 200:
                allowed = {response.json()["api_key"]}
            seen = response.text + json.dumps(dict(response.headers))
            for key in self.keys - allowed:
                assert key not in seen, f"a key in the answer to {response.request.url}"
        audit = self.home.auth_log.read_text() if self.home.auth_log.exists() else ""
        ledger = json.dumps([e.to_json() for e in events(self.home)])
        for key in self.keys:
            assert key not in audit and key not in ledger and key not in log_text


def events(home: HermesHome) -> list[Any]:
    ledger = Ledger(home.root)
    try:
        return list(ledger.iterate(0))
    finally:
        ledger.close()


def actions(home: HermesHome) -> list[tuple[str | None, str, str]]:
    """The dashboard's profile actions in the ledger: (profile, action, result)."""
    return [
        (e.profile, e.data["action"], e.data["result"])
        for e in events(home)
        if e.kind == "dashboard.action" and e.data.get("action", "").startswith("profiles.")
    ]


def audit_records(home: HermesHome) -> list[dict[str, Any]]:
    lines = home.auth_log.read_text().splitlines() if home.auth_log.exists() else []
    return [r for r in map(json.loads, lines) if r["event"] == "profiles_action"]


@pytest.fixture
def watch(hermes_home: HermesHome, caplog: pytest.LogCaptureFixture) -> Iterator[Watch]:
    caplog.set_level(logging.DEBUG)
    seen = Watch(hermes_home)
    yield seen
    seen.check(caplog.text)


@pytest.fixture
def dashboard(hermes_home: HermesHome, watch: Watch) -> Iterator[TestClient]:
    """No supervisor: gateways here are the tests' own foreground processes."""
    app = create_app(DashboardSettings(session_token=TOKEN), home=hermes_home, manager=None)
    with page_client(app, TOKEN, "/", watch.seen) as client:
        yield client


def field_errors(response: httpx.Response) -> dict[str, str]:
    one_line_error(response, 400, "invalid")
    fields: dict[str, str] = response.json()["fields"]
    assert all(text and "\n" not in text for text in fields.values()), fields
    return fields


def home_files(home: HermesHome) -> dict[str, tuple[int, bytes]]:
    """Every file of every profile, with its mode and bytes (records left out)."""
    found = {}
    for root, dirs, files in os.walk(home.root):
        if Path(root) == home.root:
            dirs[:] = [d for d in dirs if d not in RECORDS]
        for name in files:
            path = Path(root, name)
            found[str(path.relative_to(home.root))] = (path.lstat().st_mode, path.read_bytes())
    return found


def chat(profile: GatewayProfile, key: str | None = None) -> httpx.Response:
    auth = {"authorization": f"Bearer {key or profile.api_key}"}
    with profile.client(headers=auth) as client:
        return client.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}
        )


def form_of(dashboard: TestClient, name: str) -> dict[str, Any]:
    response = dashboard.get(f"/api/profiles/{name}/settings")
    assert response.status_code == 200, response.text
    form: dict[str, Any] = response.json()
    return form


def edit(form: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A body as the page sends it: the versions, every field's text, the persona."""
    values = {field["key"]: field["value"] for field in form["fields"]}
    values.update(changes.pop("values", {}))
    return {
        "config_version": form["config_version"],
        "persona_version": form["persona_version"],
        "values": values,
        "persona": changes.pop("persona", form["persona"]),
        **changes,
    }


# -- the gate -----------------------------------------------------------------------------


def test_nothing_of_profile_management_is_public() -> None:
    paths = [p for _, p in WRITES] + [
        "/api/profiles/alpha/settings",
        "/api/profiles/alpha/settings/review",
        "/api/profiles/alpha/client",
    ]
    for path in paths:
        assert not is_public_path(path), path


def test_without_the_token_or_the_csrf_token_nothing_changes(
    hermes_home: HermesHome, make_profile: MakeProfile, fake_upstream: FakeUpstream
) -> None:
    make_profile("alpha")
    before = home_files(hermes_home)
    body = {"name": "beta", "base_url": fake_upstream.base_url, "model": "m", "confirm": "alpha"}
    app = create_app(DashboardSettings(session_token=TOKEN), home=hermes_home, manager=None)
    with TestClient(app, base_url=LOCAL) as client:
        for method, path in WRITES:
            one_line_error(client.request(method, path, json=body), 401, "unauthenticated")
        assert client.get("/api/profiles/alpha/settings").status_code == 401
        client.headers["X-Hermes-Session-Token"] = TOKEN
        csrf = csrf_of(client.get("/"))
        for method, path in WRITES:
            one_line_error(client.request(method, path, json=body), 403, "csrf_failed")
            wrong = client.request(method, path, json=body, headers={"X-CSRF-Token": "x" * 40})
            one_line_error(wrong, 403, "csrf_failed")
            cross = client.request(
                method,
                path,
                json=body,
                headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"},
            )
            one_line_error(cross, 403, "csrf_failed")
    assert home_files(hermes_home) == before
    assert fake_upstream.requests == []  # not even the model list was asked for
    assert audit_records(hermes_home) == []


# -- create -------------------------------------------------------------------------------


def test_bad_fields_come_back_one_line_each_and_nothing_is_created(
    hermes_home: HermesHome, dashboard: TestClient, make_profile: MakeProfile
) -> None:
    make_profile("alpha")
    before = home_files(hermes_home)
    good = {"name": "beta", "base_url": "http://127.0.0.1:9/v1", "model": "m", "start": False}
    cases: list[tuple[dict[str, Any], dict[str, str]]] = [
        ({"name": "Beta"}, {"name": "uppercase"}),
        ({"name": "../x"}, {"name": "invalid profile name"}),
        ({"name": ""}, {"name": "empty"}),
        ({"name": "x" * 64}, {"name": "longer than 63"}),
        ({"name": "alpha"}, {"name": "already exists"}),
        ({"name": "default"}, {"name": "already exists"}),
        ({"base_url": "ftp://models.example"}, {"base_url": "http(s) URL"}),
        ({"base_url": "not a url"}, {"base_url": "http(s) URL"}),
        ({"base_url": ""}, {"base_url": "required"}),
        ({"model": "  "}, {"model": "required"}),
        ({"api_key": "two words"}, {"api_key": "not allowed in a key"}),
        ({"persona": 7}, {"persona": "must be text"}),
        ({"start": "yes"}, {"start": "true or false"}),
        ({"name": 5, "model": ["m"]}, {"name": "must be text", "model": "must be text"}),
    ]
    for change, expected in cases:
        fields = field_errors(dashboard.post("/api/profiles", json={**good, **change}))
        assert set(fields) == set(expected), (change, fields)
        for name, words in expected.items():
            assert words in fields[name], (change, fields)
    # Every bad field at once: each gets its own line.
    everything = {"name": "B", "base_url": "x", "model": "", "api_key": "a b", "start": 1}
    fields = field_errors(dashboard.post("/api/profiles", json=everything))
    assert set(fields) == {"name", "base_url", "model", "api_key", "start"}
    for raw in (b"not json", b"[1]", b'"name"'):
        sent = dashboard.post(
            "/api/profiles", content=raw, headers={"content-type": "application/json"}
        )
        one_line_error(sent, 400, "bad_request")
    assert home_files(hermes_home) == before
    assert list_profiles(hermes_home) == ["default", "alpha"]
    assert {r["result"] for r in audit_records(hermes_home)} == {"invalid", "bad_request"}


def test_the_dashboard_asks_the_provider_for_its_models_with_the_typed_key(
    hermes_home: HermesHome, dashboard: TestClient, fake_upstream: FakeUpstream
) -> None:
    listed = dashboard.post(
        "/api/provider/models", json={"base_url": fake_upstream.base_url, "api_key": PROVIDER_KEY}
    )
    assert listed.status_code == 200, listed.text
    assert listed.json() == {"models": ["fake-model"]}
    asked = fake_upstream.requests[-1]
    assert (asked.method, asked.path) == ("GET", "/v1/models")
    assert asked.headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    # Without a key: none is sent.
    assert dashboard.post(
        "/api/provider/models", json={"base_url": fake_upstream.base_url}
    ).json() == {"models": ["fake-model"]}
    assert "authorization" not in fake_upstream.requests[-1].headers
    # Nothing listens there: one line, on the URL's field.
    down = dashboard.post(
        "/api/provider/models", json={"base_url": "http://127.0.0.1:9/v1", "api_key": PROVIDER_KEY}
    )
    detail = one_line_error(down, 502, "provider_error")
    assert "cannot reach the provider at http://127.0.0.1:9" in detail
    assert set(down.json()["fields"]) == {"base_url"}
    bad = dashboard.post("/api/provider/models", json={"base_url": "file:///etc/passwd"})
    assert set(field_errors(bad)) == {"base_url"}
    assert [r["result"] for r in audit_records(hermes_home)] == [
        "ok",
        "ok",
        "provider_error",
        "invalid",
    ]


def test_a_profile_created_without_a_supervisor_waits_for_one(
    hermes_home: HermesHome, dashboard: TestClient, fake_upstream: FakeUpstream
) -> None:
    created = dashboard.post(
        "/api/profiles",
        json={
            "name": "scribe",
            "base_url": fake_upstream.base_url,
            "model": "fake-model",
            "api_key": PROVIDER_KEY,
            "persona": "You are a scribe.\r\nYou write things down.",
            "start": True,
        },
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["ok"] and body["profile"] == "scribe" and body["started"] is False
    assert "hermes supervise" in body["detail"]
    profile_dir = hermes_home.profile_dir("scribe")
    config = (profile_dir / "config.yaml").read_text()
    assert f"base_url: {fake_upstream.base_url}" in config and "name: fake-model" in config
    assert config.startswith("# Hermes profile configuration.")  # the file's comments kept
    env_file = profile_dir / ".env"
    assert read_env(env_file)["HERMES_MODEL_API_KEY"] == PROVIDER_KEY
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert (profile_dir / "SOUL.md").read_text() == "You are a scribe.\nYou write things down.\n"
    assert read_state(profile_dir).desired_state == "running"  # the next supervisor starts it
    assert ("scribe", "profiles.create", "ok") in actions(hermes_home)
    assert "profile.created" in {e.kind for e in events(hermes_home) if e.profile == "scribe"}
    page = dashboard.get("/")
    assert 'id="new-profile"' in page.text and 'type="password"' in page.text


def test_create_and_start_under_s6_then_chat_and_delete(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.s6.conftest import booted_tree, gateway_pids
    from tests.s6.support import chat as s6_chat
    from tests.s6.support import gateway_key

    with FakeUpstream() as upstream, booted_tree(drop=False) as tree:
        for name in ("HERMES_HOME", "HERMES_S6_SCANDIR", "HERMES_GATEWAY_PORT_BASE"):
            monkeypatch.setenv(name, tree.env[name])
        watch = Watch(tree.home)
        app = create_app(DashboardSettings(session_token=TOKEN), home=tree.home)  # finds s6
        with page_client(app, TOKEN, "/", watch.seen) as dashboard:
            created = dashboard.post(
                "/api/profiles",
                json={
                    "name": "fresh",
                    "base_url": upstream.base_url,
                    "model": "fake-model",
                    "api_key": PROVIDER_KEY,
                    "persona": "You are fresh.",
                    "start": True,
                },
            )
            assert created.status_code == 201, created.text
            assert created.json()["started"] is True, created.json()
            status = tree.status("fresh")
            assert status["ready"] and status["pid"] in gateway_pids("fresh", tree.base)
            # A real client of the new gateway, with the key the profile was given.
            profile_dir = tree.home.profile_dir("fresh")
            answer = s6_chat(status["port"], gateway_key(profile_dir), "hello")
            assert answer.status_code == 200, answer.text
            assert answer.json()["choices"][0]["message"]["content"] == "echo: hello"
            sent = upstream.requests[-1]
            assert sent.headers["authorization"] == f"Bearer {PROVIDER_KEY}"
            assert sent.body["model"] == "fake-model"
            assert sent.body["messages"][0] == {"role": "system", "content": "You are fresh."}
            # And from the dashboard's playground.
            streamed = dashboard.post("/api/playground/fresh/chat", json={"message": "again"})
            assert streamed.status_code == 200 and "echo: " in streamed.text

            deleted = dashboard.request("DELETE", "/api/profiles/fresh", json={"confirm": "fresh"})
            assert deleted.status_code == 200, deleted.text
            assert not tree.slot("fresh").exists()
            assert not profile_dir.exists()
            wait_for(lambda: not gateway_pids("fresh", tree.base), 20, "the gateway to end")
        watch.check(caplog.text)
        kinds = [(e.kind, e.actor) for e in events(tree.home) if e.profile == "fresh"]
        assert ("profile.created", "dashboard:local") in kinds
        assert ("profile.deleted", "dashboard:local") in kinds
        assert [a for _, a, _ in actions(tree.home)] == ["profiles.create", "profiles.delete"]


# -- edit ---------------------------------------------------------------------------------


def test_a_persona_edit_is_reviewed_saved_and_answered_without_a_restart(
    hermes_home: HermesHome,
    dashboard: TestClient,
    alpha: GatewayProfile,
    fake_upstream: FakeUpstream,
) -> None:
    pid = alpha.procs[-1].pid
    (alpha.dir / "SOUL.md").write_text("You are persona one.\nBe brief.\n")
    form = form_of(dashboard, "alpha")
    assert form["persona"] == "You are persona one.\nBe brief.\n"
    body = edit(form, persona="You are persona two.\nBe brief.")
    review = dashboard.post("/api/profiles/alpha/settings/review", json=body)
    assert review.status_code == 200, review.text
    shown = review.json()
    assert shown["changed"] == ["SOUL.md"] and shown["config_diff"] == ""
    assert shown["persona_diff"].splitlines() == [
        "--- SOUL.md (now)",
        "+++ SOUL.md (after saving)",
        "@@ -1,2 +1,2 @@",
        "-You are persona one.",
        "+You are persona two.",
        " Be brief.",
    ]
    assert (alpha.dir / "SOUL.md").read_text() == "You are persona one.\nBe brief.\n"

    saved = dashboard.put("/api/profiles/alpha/settings", json=body)
    assert saved.status_code == 200, saved.text
    assert saved.json()["reload"] == {"applied": True, "detail": "applied without restart"}
    assert (alpha.dir / "SOUL.md").read_text() == "You are persona two.\nBe brief.\n"
    assert chat(alpha).status_code == 200
    system = fake_upstream.requests[-1].body["messages"][0]
    assert system == {"role": "system", "content": "You are persona two.\nBe brief."}
    assert alpha.procs[-1].popen.poll() is None and alpha.state().pid == pid  # no restart
    assert ("alpha", "profiles.edit", "ok") in actions(hermes_home)
    # The form now shows the new versions; the old form is stale.
    assert form_of(dashboard, "alpha")["persona_version"] == saved.json()["persona_version"]
    one_line_error(dashboard.put("/api/profiles/alpha/settings", json=body), 409, "stale")


def test_a_settings_edit_keeps_comments_and_writes_exactly_the_diff_shown(
    dashboard: TestClient, alpha: GatewayProfile, fake_upstream: FakeUpstream
) -> None:
    config = alpha.dir / "config.yaml"
    config.write_text(
        "# Reviewed by ops.\n" + config.read_text().replace("model:", "model:  # ours")
    )
    form = form_of(dashboard, "alpha")
    shown = {field["key"]: field["value"] for field in form["fields"]}
    assert shown["model.read_timeout_s"] == "5" and shown["gateway.persona"] == ""
    assert "model.api_key" not in shown and "model.proxy" not in shown  # secrets: never here
    body = edit(
        form,
        values={
            "model.read_timeout_s": "7.5",
            "model.name": "second-model",
            "gateway.persona": "unless-client-system",
        },
    )
    review = dashboard.post("/api/profiles/alpha/settings/review", json=body).json()
    assert review["changed"] == ["gateway.persona", "model.name", "model.read_timeout_s"]
    assert review["restart"] == []
    before = config.read_text()
    saved = dashboard.put("/api/profiles/alpha/settings", json=body)
    assert saved.status_code == 200, saved.text
    assert saved.json()["reload"]["applied"] is True
    after = config.read_text()
    written = "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            "config.yaml (now)",
            "config.yaml (after saving)",
        )
    )
    assert written == review["config_diff"]
    assert after.startswith("# Reviewed by ops.\n") and "model:  # ours\n" in after
    answer = chat(alpha)
    assert answer.status_code == 200 and answer.json()["model"] == "second-model"


def test_a_port_change_says_it_needs_a_restart(
    dashboard: TestClient, alpha: GatewayProfile
) -> None:
    from tests.conftest import free_port

    port = free_port()
    body = edit(form_of(dashboard, "alpha"), values={"gateway.port": str(port)})
    review = dashboard.post("/api/profiles/alpha/settings/review", json=body).json()
    assert review["restart"] == ["gateway.port"]
    saved = dashboard.put("/api/profiles/alpha/settings", json=body).json()
    # Nothing a running gateway can apply changed: no reload, the restart is the user's.
    assert saved["restart"] == ["gateway.port"] and saved["reload"] is None
    assert read_port(alpha.dir) == port
    assert chat(alpha).status_code == 200  # still serving on the old port


def test_bad_values_come_back_per_field_and_nothing_is_written(
    hermes_home: HermesHome, dashboard: TestClient, make_profile: MakeProfile
) -> None:
    make_profile("alpha")
    before = home_files(hermes_home)
    form = form_of(dashboard, "alpha")
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"model.read_timeout_s": "-1"}, "model.read_timeout_s", "positive number"),
        ({"model.read_timeout_s": "soon"}, "model.read_timeout_s", "positive number"),
        ({"model.base_url": "ftp://x"}, "model.base_url", "http(s) URL"),
        ({"model.base_url": ""}, "model.base_url", "cannot be left empty"),
        ({"gateway.port": "70000"}, "gateway.port", "port number"),
        ({"gateway.persona": "sometimes"}, "gateway.persona", "always or unless"),
        ({"model.api_key": "sk-x"}, "model.api_key", "not a setting this form edits"),
        ({"kanban.max_in_progress": "3"}, "kanban.max_in_progress", "not a setting"),
        ({"model.name": 5}, "model.name", "must be text"),
    ]
    for values, field, words in cases:
        for route in ("/settings/review", "/settings"):
            method = "POST" if route.endswith("review") else "PUT"
            sent = dashboard.request(
                method, f"/api/profiles/alpha{route}", json=edit(form, values=values)
            )
            fields = field_errors(sent)
            assert list(fields) == [field] and words in fields[field], (values, fields)
    empty = dashboard.put("/api/profiles/alpha/settings", json=edit(form, persona="  \n"))
    assert list(field_errors(empty)) == ["persona"]
    assert home_files(hermes_home) == before
    # Another profile's port: refused when saving (config_edit's check), one line.
    taken_port = str(read_port(hermes_home.root))
    taken = dashboard.put(
        "/api/profiles/alpha/settings", json=edit(form, values={"gateway.port": taken_port})
    )
    assert "already the port of profile 'default'" in field_errors(taken)["gateway.port"]
    assert home_files(hermes_home) == before


def test_a_stale_form_is_refused_with_a_clear_message(
    hermes_home: HermesHome, dashboard: TestClient, make_profile: MakeProfile
) -> None:
    make_profile("alpha")
    form = form_of(dashboard, "alpha")
    # Someone else changes the file after the page loaded it: the CLI, here.
    done = subprocess.run(
        [sys.executable, "-m", "hermes_container", "-p", "alpha", "config", "set",
         "model.read_timeout_s", "9"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    config = (hermes_home.profile_dir("alpha") / "config.yaml").read_bytes()
    body = edit(form, values={"model.name": "mine"})
    for method, route in (("POST", "/settings/review"), ("PUT", "/settings")):
        sent = dashboard.request(method, f"/api/profiles/alpha{route}", json=body)
        detail = one_line_error(sent, 409, "stale")
        assert "config.yaml has changed since this form was loaded" in detail
        assert "reload the page" in detail
    assert (hermes_home.profile_dir("alpha") / "config.yaml").read_bytes() == config
    # The persona too: a form loaded before SOUL.md changed cannot overwrite it.
    form = form_of(dashboard, "alpha")
    (hermes_home.profile_dir("alpha") / "SOUL.md").write_text("Written by hand.\n")
    sent = dashboard.put("/api/profiles/alpha/settings", json=edit(form, persona="Mine.\n"))
    assert "SOUL.md has changed" in one_line_error(sent, 409, "stale")
    assert (hermes_home.profile_dir("alpha") / "SOUL.md").read_text() == "Written by hand.\n"
    assert sent.json()["error"] == "stale"
    assert ("alpha", "profiles.edit", "stale") in actions(hermes_home)


def test_secrets_in_the_file_never_show_in_a_diff(
    dashboard: TestClient, make_profile: MakeProfile
) -> None:
    alpha = make_profile("alpha")
    secret = "sk-in-the-yaml-abcdef0123456789"
    proxy_password = "proxy-pass-0123456789"
    alpha.configure(
        model={"api_key": secret, "proxy": f"http://ops:{proxy_password}@proxy.example:3128"}
    )
    form = form_of(dashboard, "alpha")
    body = edit(form, values={"model.connect_timeout_s": "3", "model.read_timeout_s": "6"})
    review = dashboard.post("/api/profiles/alpha/settings/review", json=body)
    assert review.status_code == 200, review.text
    diff = review.json()["config_diff"]
    assert "api_key: ***" in diff and "http://ops:***@proxy.example:3128" in diff
    for answer in (review, dashboard.get("/api/profiles/alpha/settings")):
        assert secret not in answer.text and proxy_password not in answer.text


# -- rotate -------------------------------------------------------------------------------


def test_a_rotated_key_is_shown_once_and_the_old_one_is_refused_at_once(
    hermes_home: HermesHome, dashboard: TestClient, alpha: GatewayProfile
) -> None:
    old = alpha.api_key
    pid = alpha.procs[-1].pid
    assert chat(alpha, old).status_code == 200
    rotated = dashboard.post("/api/profiles/alpha/key/rotate")
    assert rotated.status_code == 200, rotated.text
    assert rotated.headers["cache-control"] == "no-store"
    body = rotated.json()
    new = body["api_key"]
    assert new != old and new.startswith("hk-")
    assert body["reload"] == {"applied": True, "detail": "applied without restart"}
    env_file = alpha.dir / ".env"
    assert read_env(env_file)["API_SERVER_KEY"] == new
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert chat(alpha, old).status_code == 401  # at once: no wait, no restart
    assert chat(alpha, new).status_code == 200
    assert alpha.state().pid == pid and alpha.procs[-1].popen.poll() is None
    # Never again: not in the form, the page, the profile's status or the snippets.
    for target in (
        "/profiles/alpha",
        "/api/profiles/alpha",
        "/api/profiles/alpha/settings",
        "/api/profiles/alpha/client",
    ):
        answer = dashboard.get(target)
        assert answer.status_code == 200 and new not in answer.text, target
    assert ("alpha", "profiles.rotate_key", "ok") in actions(hermes_home)
    one_line_error(dashboard.post("/api/profiles/nope/key/rotate"), 404, "not_found")


def test_rotating_the_key_of_a_stopped_gateway_says_so(
    dashboard: TestClient, make_profile: MakeProfile
) -> None:
    alpha = make_profile("alpha")
    old = alpha.api_key
    body = dashboard.post("/api/profiles/alpha/key/rotate").json()
    assert (
        body["api_key"] != old and read_env(alpha.dir / ".env")["API_SERVER_KEY"] == body["api_key"]
    )
    assert body["reload"]["applied"] is False
    assert "no gateway of profile 'alpha' is running" in body["reload"]["detail"]


# -- delete -------------------------------------------------------------------------------


def test_delete_needs_the_exact_name(
    hermes_home: HermesHome, dashboard: TestClient, make_profile: MakeProfile
) -> None:
    make_profile("beta")
    before = home_files(hermes_home)
    for confirm in (None, "", "Beta", "bet", "beta ", ["beta"]):
        sent = dashboard.request("DELETE", "/api/profiles/beta", json={"confirm": confirm})
        assert "type the profile's name, 'beta'" in field_errors(sent)["confirm"]
    sent = dashboard.request("DELETE", "/api/profiles/default", json={"confirm": "default"})
    assert "cannot be deleted" in field_errors(sent)["confirm"]
    one_line_error(dashboard.request("DELETE", "/api/profiles/nope", json={"confirm": "nope"}), 404)
    assert home_files(hermes_home) == before
    done = dashboard.request("DELETE", "/api/profiles/beta", json={"confirm": "beta"})
    assert done.status_code == 200, done.text
    assert not hermes_home.profile_dir("beta").exists()
    assert list_profiles(hermes_home) == ["default"]
    assert "profile.deleted" in {e.kind for e in events(hermes_home) if e.profile == "beta"}
    assert [r for _, _, r in actions(hermes_home)] == ["invalid"] * 7 + ["not_found", "ok"]
    profile_page = dashboard.get("/profiles/default")
    assert 'id="delete-profile"' not in profile_page.text


# -- client snippets ----------------------------------------------------------------------


def test_the_snippets_work_as_pasted_with_the_key_in_a_variable(
    dashboard: TestClient, alpha: GatewayProfile
) -> None:
    answer = dashboard.get("/api/profiles/alpha/client")
    assert answer.status_code == 200, answer.text
    snippets = {s["id"]: s for s in answer.json()["snippets"]}
    assert set(snippets) == {
        "curl-own",
        "python-own",
        "curl-ingress",
        "python-ingress",
        "python-path",
    }
    for snippet in snippets.values():
        assert (
            "$HERMES_API_KEY" in snippet["text"]
            or 'os.environ["HERMES_API_KEY"]' in snippet["text"]
        )
    assert f"http://127.0.0.1:{alpha.port}/v1" in snippets["curl-own"]["text"]
    assert "http://127.0.0.1:8640/v1" in snippets["python-ingress"]["text"]
    assert 'model="alpha"' in snippets["python-ingress"]["text"]
    assert "http://127.0.0.1:8640/p/alpha/v1" in snippets["python-path"]["text"]
    # Pasted as they are, with the key in the environment: they reach the gateway.
    env = {**os.environ, "HERMES_API_KEY": alpha.api_key, "NO_PROXY": "*", "no_proxy": "*"}
    curl = subprocess.run(
        ["sh", "-c", snippets["curl-own"]["text"].rstrip("\n") + " --silent --show-error"],
        capture_output=True, text=True, env=env, timeout=30, check=False,
    )  # fmt: skip
    assert curl.returncode == 0, curl.stderr
    assert json.loads(curl.stdout)["choices"][0]["message"]["content"] == "echo: Hello!"
    sdk = subprocess.run(
        [sys.executable, "-c", snippets["python-own"]["text"]],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert sdk.returncode == 0, sdk.stderr
    assert sdk.stdout.strip() == "echo: Hello!"


def test_the_pages_carry_the_forms(dashboard: TestClient, make_profile: MakeProfile) -> None:
    make_profile("alpha")
    page = dashboard.get("/profiles/alpha").text
    for marker in ('id="pa-form"', 'id="pa-review"', 'id="pa-rotate"', 'id="pa-snippets"'):
        assert marker in page
    assert 'id="delete-profile"' in page and "/static/profile_admin.js" in page
    script = dashboard.get("/static/profile_admin.js")
    assert script.status_code == 200 and "/api/profiles" in script.text
