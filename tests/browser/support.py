"""What the browser tests share: the real CLI, a `hermes supervise` tree, a lone real
gateway, the dashboard in OAuth mode against a real OIDC provider, signing in through
it, and the kanban daemon.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hermes_container.home import HermesHome
from hermes_container.profiles import create_profile, ensure_default_profile
from tests.browser.conftest import require_s6
from tests.conftest import free_port, wait_for
from tests.fake_upstream import FakeUpstream
from tests.unit.conftest import GatewayProfile
from tests.unit.dashboard_support import clean_env, dashboard_process, oidc_provider

WAIT = 30.0
WAIT_MS = int(WAIT * 1000)
ALICE = ("alice", {"email": "alice@example.com", "email_verified": True, "name": "Alice"})


def hermes(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess, with `env` as its whole environment."""
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


@contextlib.contextmanager
def supervised_tree(
    prepare: Callable[[dict[str, str]], None] | None = None, ready: str | None = None
) -> Iterator[dict[str, str]]:
    """A `hermes supervise` tree in host mode (its scandir is $HERMES_HOME/run/service);
    yields the environment the CLI and the dashboard need to find it.

    `prepare(env)` runs before the supervisor starts (to create profiles, say). The tree
    is handed over once profile `ready`'s gateway is ready or, without one, once the
    default profile's slot is registered. SIGTERM afterwards, as `docker stop` does.
    """
    require_s6()
    # Not pytest's tmp_path: s6's control sockets need a short path, and the tree's
    # users must be able to traverse it.
    base = Path(tempfile.mkdtemp(prefix="hermes-browser-"))
    base.chmod(0o755)
    env = clean_env(
        HERMES_HOME=str(base / "home"),
        HERMES_GATEWAY_PORT_BASE=str(free_port()),
        HERMES_INGRESS_PORT=str(free_port()),
        HERMES_GATEWAY_STAGGER="0",
        PYTHONDONTWRITEBYTECODE="1",
    )
    for name in ("HERMES_S6_SCANDIR", "HERMES_PROFILE", "HERMES_EVENTS"):
        env.pop(name, None)
    if os.geteuid() == 0:
        env["HERMES_ALLOW_ROOT_GATEWAY"] = "1"
    if prepare is not None:
        prepare(env)
    if ready is None:
        handed_over, what = lambda: gateway_status(env, "default")["registered"], "the tree"
    else:
        handed_over, what = lambda: gateway_status(env, ready)["ready"], f"{ready} to be ready"
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
            wait_for(handed_over, WAIT, what)
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


def oidc_env(issuer: str) -> dict[str, str]:
    """The dashboard's settings for the test provider, admitting alice only."""
    return {
        "HERMES_DASHBOARD_OIDC_ISSUER": issuer,
        "HERMES_DASHBOARD_OIDC_CLIENT_ID": "hermes-dashboard",
        "HERMES_DASHBOARD_OIDC_CLIENT_SECRET": "browser-test-secret",
        "HERMES_DASHBOARD_ALLOWED_EMAILS": "alice@example.com",
    }


@contextlib.contextmanager
def oidc_dashboard(
    env: dict[str, str],
    users: list[tuple[str, dict[str, Any]]] | None = None,
    host: str = "127.0.0.1",
) -> Iterator[tuple[str, str]]:
    """A real OIDC provider knowing `users` (default: alice) and the real dashboard
    (`env` plus oidc_env) signing in through it; yields (the dashboard's URL, issuer)."""
    with (
        oidc_provider(users if users is not None else [ALICE]) as issuer,
        dashboard_process({**env, **oidc_env(issuer)}, host=host) as (port, _proc),
    ):
        yield f"http://127.0.0.1:{port}", issuer


def sign_in(page: Any, base_url: str, issuer: str, path: str = "/") -> None:
    """Open `path`, which is gated, and sign in as alice at the provider: back on `path`."""
    page.goto(base_url + path)
    assert "/login" in page.url
    page.click("#login-oidc")
    page.wait_for_url(issuer + "/oauth2/authorize*")
    page.get_by_role("button", name="alice").click()
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_url(base_url + path)
    except PlaywrightTimeout:  # say where the login ended: a rare CI stall, not yet understood
        try:
            text = page.inner_text("body", timeout=2000)[:400]
        except Exception as exc:  # still navigating, or no body
            text = f"(no text: {type(exc).__name__})"
        raise AssertionError(f"sign-in did not return to {path}; at {page.url}: {text!r}") from None


@contextlib.contextmanager
def kanban_daemon(log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`hermes kanban daemon` on this test's HERMES_HOME, stopped with SIGTERM."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hermes_container", "kanban", "daemon"],
            env={**os.environ},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextlib.contextmanager
def running_alpha(home: HermesHome, tmp_path: Path, **upstream: Any) -> Iterator[GatewayProfile]:
    """Profile `alpha` with a real gateway (`hermes gateway run`, no supervisor) to a fake
    provider set up with `upstream` (FakeUpstream.set's settings)."""
    ensure_default_profile(home)
    create_profile(home, "alpha")
    with FakeUpstream() as provider:
        provider.set(**upstream)
        profile = GatewayProfile(home, "alpha", provider, tmp_path)
        try:
            profile.start()
            yield profile
        finally:
            profile.cleanup()
