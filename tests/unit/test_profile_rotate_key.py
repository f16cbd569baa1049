"""`hermes profile rotate-key NAME`: a new API_SERVER_KEY, printed once, in force at once."""

from __future__ import annotations

import stat
from collections.abc import Callable

import httpx

from hermes_container.envfile import read_env
from tests.conftest import run_hermes
from tests.unit.conftest import GatewayProfile

CHAT = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}


def _status(profile: GatewayProfile, key: str) -> int:
    response = httpx.post(
        profile.url("/v1/chat/completions"),
        json=CHAT,
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
        trust_env=False,
    )
    return response.status_code


def test_rotate_key_replaces_the_key_of_a_running_gateway(
    make_profile: Callable[[str], GatewayProfile],
) -> None:
    profile = make_profile("coder")
    gateway = profile.start()
    old = profile.api_key
    assert _status(profile, old) == 200

    proc = run_hermes("profile", "rotate-key", "coder")
    assert proc.returncode == 0, proc.stderr
    new = proc.stdout.strip()
    assert proc.stdout == new + "\n", "stdout holds the key alone"
    assert new != old and len(new) >= 32
    assert "reloaded" in proc.stderr and new not in proc.stderr
    env = profile.dir / ".env"
    assert read_env(env)["API_SERVER_KEY"] == new
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    # In force at once, without a restart: the old key is refused, the new one opens.
    assert _status(profile, old) == 401
    assert _status(profile, new) == 200
    assert gateway.pid == profile.state().pid


def test_rotate_key_of_a_stopped_profile_is_stored_for_its_next_start(
    make_profile: Callable[[str], GatewayProfile],
) -> None:
    profile = make_profile("idle")
    before = read_env(profile.dir / ".env")
    proc = run_hermes("profile", "rotate-key", "idle")
    assert proc.returncode == 0, proc.stderr
    new = proc.stdout.strip()
    after = read_env(profile.dir / ".env")
    assert after["API_SERVER_KEY"] == new != before["API_SERVER_KEY"]
    assert "not reloaded" in proc.stderr


def test_rotate_key_of_an_unknown_profile_changes_nothing() -> None:
    proc = run_hermes("profile", "rotate-key", "nosuch")
    assert proc.returncode != 0
    assert proc.stdout == "" and proc.stderr.count("\n") == 1
