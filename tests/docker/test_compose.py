"""README's first command, for real: `docker compose up -d --build` with the repository's
compose.yaml, as a new user runs it.

The only addition is an override file with what an offline build needs: the s6-overlay
mirror and the wheels as build arguments, and the host network for the build, which
fetches them from 127.0.0.1. The container itself runs as compose.yaml says, on the
project's own network with its ports published (Debian's docker-compose 1.x refuses the
host network for a service that publishes ports): the test reaches 8640, 8642 and 9119
on 127.0.0.1 exactly as a user does. The model provider (tests/fake_upstream.py, standard
library only) runs inside the container, on its loopback. The project is a copy of what
the build context admits, so the `./data` volume lands in a temp directory.

The scenario: healthy with nothing configured; the sign-in link from `docker logs`
signs Chromium in; `compose exec` creates a profile; a chat reaches it through the
ingress on 8640; `compose down` (the volume stays) and `up` again finds everything as
it was: the profile running, the same keys, the same sign-in, the earlier session.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.docker.harness import (
    ARTIFACTS,
    REPO,
    _bindable,
    docker,
    offline_build_args,
    wait_for,
)

pytestmark = [pytest.mark.docker, pytest.mark.browser, pytest.mark.timeout(1500)]

# What compose.yaml publishes; with the host network the container listens on them itself.
INGRESS, GATEWAY, DASHBOARD = 8640, 8642, 9119
CONTAINER = "hermes"  # compose.yaml's container_name
PROJECT = "hermes-compose-test"
SIGN_IN = re.compile(r"sign in at (\S+/login#token=[A-Za-z0-9_-]+)")
# What .dockerignore admits to the build context, and the compose project's own files.
CONTEXT = ("compose.yaml", "Dockerfile", ".dockerignore", "pyproject.toml", "README.md")
CONTEXT_DIRS = ("hermes_container", "root", "docker", ".wheels")
WAIT_MS = 20_000


def compose_command() -> list[str]:
    """`docker compose` where the plugin exists, else Debian's `docker-compose`."""
    plugin = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    if plugin.returncode == 0:
        return ["docker", "compose"]
    standalone = shutil.which("docker-compose")
    if standalone is not None:
        return [standalone]
    reason = "neither the compose plugin nor docker-compose is installed"
    if os.environ.get("HERMES_REQUIRE_DOCKER", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason}; HERMES_REQUIRE_DOCKER=1 forbids skipping", pytrace=False)
    pytest.skip(reason)


class Project:
    """A compose project in a directory of its own: compose.yaml plus the offline override."""

    def __init__(self, directory: Path, command: list[str]) -> None:
        self.dir = directory
        self.command = command
        self.data = directory / "data"
        self.log = ARTIFACTS / "compose.log"

    def run(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        files = ["-f", "compose.yaml", "-f", "compose.offline.yaml"]
        proc = subprocess.run(
            [*self.command, "-p", PROJECT, *files, *args],
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            # The tier's builds use the classic builder: the layer cache is shared.
            env={**os.environ, "DOCKER_BUILDKIT": "0", "COMPOSE_DOCKER_CLI_BUILD": "0"},
        )
        with self.log.open("a") as fh:
            fh.write(f"$ compose {' '.join(args)} -> {proc.returncode}\n{proc.stdout}{proc.stderr}")
        if check and proc.returncode != 0:
            raise AssertionError(f"compose {' '.join(args)} -> {proc.returncode}\n{proc.stderr}")
        return proc.stdout

    def hermes(self, *args: str) -> str:
        # -T: no TTY (there is none here); the exec shim drops to the hermes user.
        return self.run("exec", "-T", "hermes", "hermes", *args, timeout=60)

    def health(self) -> str:
        proc = docker("inspect", "-f", "{{json .State.Health}}", CONTAINER, check=False)
        if proc.returncode != 0:
            return "absent"
        return str(json.loads(proc.stdout)["Status"])

    def wait_healthy(self) -> None:
        # compose.yaml's healthcheck: the first probe runs 30 s after the start.
        wait_for(lambda: self.health() == "healthy", 240, "the container to report healthy")

    def logs(self) -> str:
        proc = docker("logs", CONTAINER, check=False)
        return proc.stdout + proc.stderr


@pytest.fixture
def project(tmp_path: Path, docker_image: str) -> Iterator[Project]:
    """A copy of the build context and compose.yaml, the override, and a clean teardown."""
    for port in (INGRESS, GATEWAY, DASHBOARD):
        if not _bindable(port):
            pytest.fail(f"port {port}, which compose.yaml publishes, is taken on this machine")
    if docker("inspect", CONTAINER, check=False).returncode == 0:
        pytest.fail(f"a container named {CONTAINER!r} exists already; remove it first")
    directory = tmp_path / "project"
    directory.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in CONTEXT:
        shutil.copy2(REPO / name, directory / name)
    for name in CONTEXT_DIRS:
        shutil.copytree(REPO / name, directory / name, ignore=ignore)
    args = offline_build_args()
    override = {"services": {"hermes": {"build": {"network": "host", "args": args}}}}
    # JSON is YAML: no YAML writer needed for three keys.
    (directory / "compose.offline.yaml").write_text(json.dumps(override, indent=2) + "\n")
    ARTIFACTS.mkdir(exist_ok=True)
    made = Project(directory, compose_command())
    made.log.write_text("")
    try:
        yield made
    finally:
        (ARTIFACTS / "compose-container.log").write_text(made.logs())
        made.run("down", "--timeout", "30", timeout=120, check=False)
        docker("rm", "-f", CONTAINER, check=False)
        shutil.rmtree(made.data, ignore_errors=True)


PROVIDER_PORT = 18650  # inside the container: its loopback is its own


def _start_provider(project: Project) -> str:
    """The fake provider, inside the container (it goes with the container on `down`)."""
    docker("cp", str(REPO / "tests" / "fake_upstream.py"), f"{CONTAINER}:/tmp/fake_upstream.py")
    python = "/opt/hermes/.venv/bin/python"
    script = "/tmp/fake_upstream.py"
    docker("exec", "-d", "-u", "hermes", CONTAINER, python, script, "--port", str(PROVIDER_PORT))
    url = f"http://127.0.0.1:{PROVIDER_PORT}/v1"
    probe = [
        "exec",
        CONTAINER,
        python,
        "-c",
        f"import urllib.request as u; u.urlopen('{url}/models')",
    ]
    wait_for(lambda: docker(*probe), 30, "the provider inside the container")
    return url


def _sign_in_link(project: Project, after: int = 0) -> str:
    def found() -> str | None:
        links = SIGN_IN.findall(project.logs())
        return links[after] if len(links) > after else None

    link: str = wait_for(found, 120, "the sign-in link in docker logs")
    return link


def _models(key: str) -> list[str] | None:
    try:
        response = httpx.get(
            f"http://127.0.0.1:{INGRESS}/v1/models",
            headers={"authorization": f"Bearer {key}"},
            timeout=3,
            trust_env=False,
        )
    except httpx.TransportError:
        return None
    return sorted(m["id"] for m in response.json()["data"]) if response.is_success else None


def _chat(key: str, text: str, session: str) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{INGRESS}/v1/chat/completions",
        json={"model": "coder", "messages": [{"role": "user", "content": text}]},
        headers={"authorization": f"Bearer {key}", "x-hermes-session": session},
        timeout=30,
        trust_env=False,
    )


def _exchanges(project: Project, session: str) -> int:
    db = project.data / "profiles" / "coder" / "sessions.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT count(*) FROM exchanges WHERE session_id = ?", (session,))
        return int(row.fetchone()[0])


def _signed_in(page: Any, base: str, profiles: list[str]) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#profiles")).to_be_visible(timeout=WAIT_MS)
    for name in profiles:
        expect(page.locator(f'tr[data-profile="{name}"]')).to_be_visible(timeout=WAIT_MS)
    assert page.url == base + "/"


def test_readme_compose_up_to_a_first_chat_and_back(project: Project) -> None:
    from playwright.sync_api import sync_playwright  # a test dependency: always there

    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found (apt-get install chromium)", pytrace=False)

    # README's first command, as is: nothing configured, and it becomes healthy.
    project.run("up", "-d", "--build", timeout=1200)
    project.wait_healthy()
    link = _sign_in_link(project)
    base = f"http://localhost:{DASHBOARD}"
    assert link.startswith(base + "/login#token=")

    provider = _start_provider(project)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context()
        page = context.new_page()
        try:
            page.goto(link)
            page.wait_for_url(base + "/", timeout=WAIT_MS)
            _signed_in(page, base, ["default"])

            # A profile, made the documented way, pointed at a provider, started.
            project.hermes("profile", "create", "coder")
            config = project.data / "profiles" / "coder" / "config.yaml"
            config.write_text(config.read_text().replace("https://api.openai.com/v1", provider))
            project.hermes("-p", "coder", "gateway", "start", "--timeout", "30")
            page.reload()
            _signed_in(page, base, ["default", "coder"])

            key = project.hermes("ingress", "key").strip()
            assert wait_for(lambda: _models(key), 60, "the ingress") == ["coder", "default"]
            reply = _chat(key, "hello compose", "first-run")
            assert reply.status_code == 200, reply.text
            assert reply.json()["choices"][0]["message"]["content"] == "echo: hello compose"
            # The gateway records an exchange off the request path, just after answering.
            wait_for(lambda: _exchanges(project, "first-run") == 1, 15, "the exchange recorded")
            assert key not in project.logs()

            # Down (the ./data volume stays) and up again: everything as it was.
            project.run("down", "--timeout", "30", timeout=180)
            assert project.health() == "absent"
            project.run("up", "-d", timeout=300)
            project.wait_healthy()
            _start_provider(project)
            assert _sign_in_link(project) == link, "the login token lives in the volume"
            assert project.hermes("ingress", "key").strip() == key
            status = json.loads(project.hermes("-p", "coder", "gateway", "status", "--json"))
            status = status[0] if isinstance(status, list) else status
            assert status["desired_state"] == "running"
            assert wait_for(lambda: _models(key), 60, "the ingress again") == ["coder", "default"]
            again = _chat(key, "still there?", "first-run")
            assert again.status_code == 200, again.text
            wait_for(lambda: _exchanges(project, "first-run") == 2, 15, "both exchanges")
            page.reload()  # the session cookie outlives the container: same signing key
            _signed_in(page, base, ["default", "coder"])
            page.screenshot(path=str(ARTIFACTS / "compose-dashboard.png"))
        finally:
            context.close()
            browser.close()
