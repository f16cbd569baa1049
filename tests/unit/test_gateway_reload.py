"""Live reload against a real gateway process and the fake provider: `hermes gateway
reload` (SIGHUP to a foreground gateway) applies SOUL.md, the model and the key to new
requests, lets running streams finish on the old settings, refuses a bad config while
the old one keeps serving, and keeps the listener when the port changes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from hermes_container.envfile import read_env, write_env
from hermes_container.events.append import open_ledger
from hermes_container.home import SOUL_FILE
from hermes_container.state import write_observed
from tests.conftest import free_port, run_hermes, wait_for
from tests.fake_upstream import FakeUpstream
from tests.unit.conftest import GatewayProc, GatewayProfile

HELLO = {"model": "whatever", "messages": [{"role": "user", "content": "hello"}]}


def _reload(profile: GatewayProfile, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_hermes("-p", profile.name, "gateway", "reload", *extra)


def _chat(profile: GatewayProfile, key: str | None = None, **body: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {key or profile.api_key}"}
    return httpx.post(
        profile.url("/v1/chat/completions"),
        json={**HELLO, **body},
        headers=headers,
        trust_env=False,
        timeout=30,
    )


def _persona_sent(upstream: FakeUpstream) -> str:
    """The system message the provider received with the last request."""
    first = upstream.requests[-1].body["messages"][0]
    assert first["role"] == "system", first
    return str(first["content"])


def _ledger_kinds(profile: GatewayProfile, kind: str) -> list[dict[str, Any]]:
    ledger = open_ledger(profile.home.root)
    return [e.to_json() for e in ledger.iterate(0) if e.kind == kind]


def _status(profile: GatewayProfile) -> str:
    proc = run_hermes("-p", profile.name, "gateway", "status")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _connections_to(pid: int, port: int) -> int:
    """Established TCP connections process `pid` holds to 127.0.0.1:`port`."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote, state, inode = fields[2], fields[3], fields[9]
        if state == "01" and int(remote.split(":")[1], 16) == port and inode in inodes:
            count += 1
    return count


@pytest.fixture
def soul_profile(profile: GatewayProfile) -> GatewayProfile:
    (profile.dir / SOUL_FILE).write_text("You are persona one.\n")
    return profile


def test_reload_applies_persona_and_model_to_the_next_request(
    soul_profile: GatewayProfile, fake_upstream: FakeUpstream
) -> None:
    profile = soul_profile
    gateway = profile.start()
    assert _chat(profile).status_code == 200
    assert _persona_sent(fake_upstream) == "You are persona one."

    (profile.dir / SOUL_FILE).write_text("You are persona two.\n")
    profile.configure(model={"name": "second-model"})
    proc = _reload(profile)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Reloaded gateway 'default'" in proc.stdout

    answer = _chat(profile)
    assert answer.status_code == 200
    assert _persona_sent(fake_upstream) == "You are persona two."
    assert answer.json()["model"] == "second-model"  # the provider echoes the model it got
    # The same process: nothing restarted.
    assert gateway.popen.poll() is None
    assert profile.state().pid == gateway.pid and profile.state().gateway_state == "running"
    assert profile.state().reloads == 1
    models = httpx.get(
        profile.url("/v1/models"), headers=profile.auth, trust_env=False, timeout=10
    ).json()
    assert models["data"][0]["id"] == "second-model"

    reloaded = _ledger_kinds(profile, "gateway.reloaded")
    assert len(reloaded) == 1
    assert set(reloaded[0]["data"]["keys"]) == {"soul", "model.name"}
    # Names only: no value of any setting travels in the event.
    assert "persona two" not in json.dumps(reloaded) and "second-model" not in json.dumps(reloaded)
    assert "reloaded settings (changed: model.name, soul)" in gateway.stderr()


def test_stream_started_before_a_reload_finishes_on_the_old_settings(
    soul_profile: GatewayProfile, fake_upstream: FakeUpstream
) -> None:
    profile = soul_profile
    gateway = profile.start()
    pieces = [f"w{i} " for i in range(12)]
    fake_upstream.set(chunks=pieces, chunk_delay=0.15)  # ~1.8 s of stream
    received: list[bytes] = []
    errors: list[BaseException] = []

    def stream() -> None:
        try:
            with httpx.stream(
                "POST",
                profile.url("/v1/chat/completions"),
                json={**HELLO, "stream": True},
                headers=profile.auth,
                trust_env=False,
                timeout=30,
            ) as response:
                assert response.status_code == 200
                received.extend(response.iter_raw())
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    reader = threading.Thread(target=stream)
    reader.start()
    fake_upstream.wait_for_requests(1)
    wait_for(lambda: b"w0" in b"".join(received), what="the first streamed chunk")

    (profile.dir / SOUL_FILE).write_text("You are persona two.\n")
    profile.configure(model={"name": "second-model"})
    proc = _reload(profile)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fake_upstream.set()  # answer the next request at once
    assert _chat(profile).json()["model"] == "second-model"
    assert b"[DONE]" not in b"".join(received)  # the stream is still running ...

    reader.join(30)
    assert not reader.is_alive() and not errors, errors
    body = b"".join(received)
    # ... and ran to its end, on the model and persona it started with.
    assert body.endswith(b"data: [DONE]\n\n")
    for piece in pieces:
        assert piece.encode() in body
    deltas = [json.loads(line[6:]) for line in body.split(b"\n") if line[6:].startswith(b"{")]
    assert {d["model"] for d in deltas} == {"test-model"}
    streamed = fake_upstream.requests[0].body
    assert streamed["messages"][0]["content"] == "You are persona one."
    assert _persona_sent(fake_upstream) == "You are persona two."
    # The old generation's relay closed with its last request: of the gateway's
    # connections to the provider, only the new relay's pooled one is left.
    wait_for(
        lambda: _connections_to(gateway.pid, fake_upstream.port) == 1,
        what="the old relay's connection to close",
    )


def test_a_rejected_config_keeps_the_old_settings_until_fixed(
    soul_profile: GatewayProfile, fake_upstream: FakeUpstream
) -> None:
    profile = soul_profile
    gateway = profile.start()
    profile.configure(model={"base_url": "ftp://x"})
    (profile.dir / SOUL_FILE).write_text("You are persona two.\n")

    proc = _reload(profile)
    assert proc.returncode == 1
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and "config rejected:" in lines[0] and "model.base_url" in lines[0]
    # The old settings serve: the provider still gets persona one, and nothing restarted.
    assert _chat(profile).status_code == 200
    assert _persona_sent(fake_upstream) == "You are persona one."
    assert gateway.popen.poll() is None
    status = _status(profile)
    assert "config rejected: " in status and "model.base_url must be an http(s) URL" in status
    assert "reload rejected, the settings in force stay" in gateway.stderr()
    rejected = _ledger_kinds(profile, "gateway.reload_rejected")
    assert len(rejected) == 1 and "model.base_url" in rejected[0]["data"]["reason"]
    assert not _ledger_kinds(profile, "gateway.reloaded")

    profile.configure()  # fixed
    proc = _reload(profile)
    assert proc.returncode == 0, proc.stdout
    assert "config rejected" not in _status(profile)
    assert _chat(profile).status_code == 200
    assert _persona_sent(fake_upstream) == "You are persona two."
    assert profile.state().config_rejected is None


def test_a_rotated_api_key_is_the_only_one_accepted_after_reload(
    profile: GatewayProfile,
) -> None:
    profile.start()
    old_key = profile.api_key
    assert _chat(profile, key=old_key).status_code == 200
    env_path = profile.dir / ".env"
    new_key = "rotated-" + os.urandom(8).hex()
    write_env(env_path, {**read_env(env_path), "API_SERVER_KEY": new_key})

    # Until the reload, the file alone changes nothing.
    assert _chat(profile, key=new_key).status_code == 401
    proc = _reload(profile)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert new_key not in proc.stdout + proc.stderr

    assert _chat(profile, key=old_key).status_code == 401
    assert _chat(profile, key=new_key).status_code == 200
    models = httpx.get(
        profile.url("/v1/models"),
        headers={"authorization": f"Bearer {old_key}"},
        trust_env=False,
        timeout=10,
    )
    assert models.status_code == 401
    assert new_key not in profile.procs[0].stderr()


def test_a_port_change_keeps_the_listener_and_says_restart(
    soul_profile: GatewayProfile, fake_upstream: FakeUpstream
) -> None:
    profile = soul_profile
    profile.start()
    old_port, new_port = profile.port, free_port()
    profile.port = new_port
    profile.configure(model={"name": "second-model"})
    proc = _reload(profile)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"restart needed: gateway.port is now {new_port} (still serving on {old_port})" in (
        proc.stdout
    )

    profile.port = old_port
    answer = _chat(profile)
    assert answer.status_code == 200
    assert answer.json()["model"] == "second-model"  # everything else was applied
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", new_port)):
        pass
    status = _status(profile)
    assert f"restart needed: gateway.port is now {new_port}" in status
    assert f"Port:      {old_port}" in status  # what it really listens on
    reloaded = _ledger_kinds(profile, "gateway.reloaded")
    assert reloaded[-1]["data"]["restart_needed"].startswith("gateway.port is now")

    # Back to the old port: nothing waits for a restart any more.
    profile.configure(model={"name": "second-model"})
    assert _reload(profile).returncode == 0
    assert "restart needed" not in _status(profile)


def _catches_sighup(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)))
    return False


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_sighup_while_starting_is_applied_once_serving(
    soul_profile: GatewayProfile, fake_upstream: FakeUpstream
) -> None:
    profile = soul_profile
    proc = profile.spawn()
    wait_for(lambda: _catches_sighup(proc.pid), what="the SIGHUP handler", interval=0.001)
    (profile.dir / SOUL_FILE).write_text("You are persona two.\n")
    os.kill(proc.pid, signal.SIGHUP)
    assert not _accepts(profile.port)  # it really was still starting
    proc.wait_ready()
    wait_for(lambda: profile.state().reloads == 1, what="the latched reload")
    assert proc.popen.poll() is None
    assert _chat(profile).status_code == 200
    assert _persona_sent(fake_upstream) == "You are persona two."


def test_reload_refused_without_a_running_gateway(profile: GatewayProfile) -> None:
    proc = _reload(profile)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].endswith(
        "reload not sent: no gateway of profile 'default' is running "
        "(and no supervised tree is running)"
    )


def test_reload_never_signals_a_pid_that_is_not_the_gateway(profile: GatewayProfile) -> None:
    # A state file naming a live process that is not this profile's gateway (a pid
    # reused since): the reload must not send it SIGHUP, which would kill it.
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        write_observed(profile.dir, gateway_state="running", pid=bystander.pid)
        proc = _reload(profile)
        assert proc.returncode == 1
        assert f"pid {bystander.pid} recorded for profile 'default' is not its running gateway" in (
            proc.stderr
        )
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_reload_all_skips_stopped_gateways(
    make_profile: Callable[[str], GatewayProfile], fake_upstream: FakeUpstream
) -> None:
    running = make_profile("default")
    make_profile("idle")
    gateway: GatewayProc = running.start()
    proc = run_hermes("gateway", "reload", "--all")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gateway 'idle' is not running: skipped" in proc.stdout
    assert "Reloaded gateway 'default'" in proc.stdout
    assert gateway.popen.poll() is None
