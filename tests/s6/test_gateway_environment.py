"""Under real s6, a gateway runs without other services' secrets and keeps its files
private: the slot's scripts drop HERMES_DASHBOARD_* and HERMES_GATEWAY_ENV_DENY's names
and set umask 077; `hermes supervise` starts s6-svscan with the filtered environment."""

from __future__ import annotations

import signal
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from hermes_container.envfile import read_env
from tests.conftest import free_port
from tests.fake_upstream import FakeUpstream
from tests.s6.conftest import (
    WAIT,
    Tree,
    booted_tree,
    host_mode_tree,
    processes_of,
    wait_for,
)

SECRETS = {
    "HERMES_DASHBOARD_OIDC_CLIENT_SECRET": "oidc-client-secret-value",
    "MY_SECRET": "my-secret-value",
}
# Host mode runs the dashboard too: secrets it starts with (an OIDC secret alone is an
# incomplete login provider, which it refuses).
HOST_SECRETS = {
    "HERMES_DASHBOARD_SECRET_KEY": "cookie-signing-key-value",
    "HERMES_DASHBOARD_SESSION_TOKEN": "dashboard-token-value",
    "MY_SECRET": "my-secret-value",
}
DENY = {"HERMES_GATEWAY_ENV_DENY": "MY_SECRET"}


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def assert_clean(pid: int, tree: Tree, secrets: dict[str, str] = SECRETS) -> dict[str, str]:
    """No secret (by name or by value); what a gateway needs is still there."""
    env = environ_of(pid)
    assert not set(secrets) & set(env), f"pid {pid} holds {set(secrets) & set(env)}"
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    assert not [value for value in secrets.values() if value.encode() in raw]
    assert env["PATH"] == tree.env["PATH"]
    assert env["HERMES_HOME"] == str(tree.home.root)
    return env


def private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


@pytest.fixture
def secret_tree() -> Iterator[Tree]:
    """Like the image: the supervisor's environment is the whole container's."""
    with booted_tree(extra_env={**SECRETS, **DENY}) as tree:
        yield tree


def _use_upstream(profile_dir: Path, upstream: FakeUpstream) -> None:
    config = profile_dir / "config.yaml"
    data: dict[str, Any] = yaml.safe_load(config.read_text())
    data["model"]["base_url"] = upstream.base_url
    config.write_text(yaml.safe_dump(data))  # rewritten in place: owner and mode stay


def test_gateway_runs_without_denied_variables_and_with_private_files(
    secret_tree: Tree,
) -> None:
    tree = secret_tree
    with FakeUpstream() as upstream:
        profile_dir = tree.create("envtest")
        _use_upstream(profile_dir, upstream)
        tree.ok("-p", "envtest", "gateway", "start")
        st = tree.status("envtest")
        env = assert_clean(st["pid"], tree)
        assert env["HERMES_GATEWAY_ENV_DENY"] == "MY_SECRET"  # no secret; gateway run checks it

        key = read_env(profile_dir / ".env")["API_SERVER_KEY"]
        response = httpx.post(
            f"http://127.0.0.1:{st['port']}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {key}"},
            trust_env=False,
            timeout=WAIT,
        )
        assert response.status_code == 200

    # Its s6-log runs from the same preamble.
    loggers = [
        pid
        for pid in processes_of(tree.base)
        if Path(f"/proc/{pid}/comm").read_text().strip() == "s6-log"
        and str(tree.home.gateway_log_dir("envtest")) in Path(f"/proc/{pid}/cmdline").read_text()
    ]
    assert len(loggers) == 1
    assert_clean(loggers[0], tree)

    # Transcripts and logs are the owner's alone ...
    databases = sorted(profile_dir.glob("sessions.db*"))
    assert profile_dir / "sessions.db" in databases
    assert {p.name: private(p) for p in databases} == {p.name: True for p in databases}
    current = tree.home.gateway_log_dir("envtest") / "current"
    wait_for(lambda: "serving profile" in current.read_text(), what="the gateway's log line")
    assert private(current), oct(current.stat().st_mode)
    assert current.stat().st_uid == tree.owner
    # ... and that owner (the CLI and the dashboard run as it) still reads them.
    assert "serving profile 'envtest'" in tree.ok("logs", "-p", "envtest", "-n", "20")
    # The slot's own control files keep their exact modes (rendered, then chmod'ed).
    supervise = tree.slot("envtest") / "supervise"
    assert stat.S_IMODE(supervise.stat().st_mode) == 0o700
    assert stat.S_IMODE((supervise / "control").stat().st_mode) == 0o600
    assert stat.S_IMODE((tree.slot("envtest") / "event").stat().st_mode) == 0o3730


@pytest.fixture
def host() -> Iterator[Tree]:
    extra = {**HOST_SECRETS, **DENY, "HERMES_DASHBOARD_PORT": str(free_port())}
    with host_mode_tree(extra) as tree:
        yield tree


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _dashboard_pid(tree: Tree) -> int | None:
    for pid in processes_of(tree.base):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if argv[-2:] == [b"dashboard", b""] and _comm(pid) != "s6-supervise":
            return pid
    return None


def test_supervise_starts_the_tree_without_denied_variables(host: Tree) -> None:
    supervisor = host.spawn("supervise", "--dashboard")
    try:
        st = host.wait_ready("default")
        assert_clean(st["pid"], host, HOST_SECRETS)
        svscans = [pid for pid in processes_of(host.base) if _comm(pid) == "s6-svscan"]
        assert len(svscans) == 1
        assert_clean(svscans[0], host, HOST_SECRETS)

        # The dashboard's slot alone gets its own settings back (its env/ dir) ...
        port = int(host.env["HERMES_DASHBOARD_PORT"])

        def listening() -> bool:
            with socket.socket() as sock:
                sock.settimeout(0.5)
                return sock.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, what="the dashboard on its HERMES_DASHBOARD_PORT")
        dashboard = wait_for(lambda: _dashboard_pid(host), what="the dashboard process")
        env = environ_of(dashboard)
        for name in ("HERMES_DASHBOARD_SECRET_KEY", "HERMES_DASHBOARD_SESSION_TOKEN"):
            assert env[name] == HOST_SECRETS[name]
        assert "MY_SECRET" not in env  # ... not the operator's denied ones
        envdir = host.scandir / "dashboard" / "env"
        assert stat.S_IMODE(envdir.stat().st_mode) == 0o700
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.communicate(timeout=WAIT + 40)
    assert supervisor.returncode == 0
