"""The gateway process: lock and pidfile, state writes, readiness, signals, takeovers."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable

import httpx
import pytest

from hermes_container.cli import main
from hermes_container.home import GATEWAY_LOCK, GATEWAY_PID
from tests.conftest import run_hermes, wait_for
from tests.fake_upstream import FakeUpstream
from tests.unit.conftest import GatewayProc, GatewayProfile

# Stands in for a gateway that ignores SIGTERM: its cmdline looks like one
# (`... hermes ... gateway run`) and it holds the profile's flock.
STUCK_GATEWAY = """
import fcntl, os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
open(sys.argv[2], "w").write(str(os.getpid()))
print("locked", flush=True)
time.sleep(120)
"""


def _lock_holder(profile: GatewayProfile, *label: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", STUCK_GATEWAY, str(profile.dir / GATEWAY_LOCK),
         str(profile.dir / GATEWAY_PID), *label],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
    return proc


def _exited_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_running_gateway_records_state_and_pidfile(profile: GatewayProfile) -> None:
    gw = profile.start()
    health = httpx.get(profile.url("/health"), trust_env=False).json()
    assert health["status"] == "ok" and health["profile"] == "default"
    assert isinstance(health["uptime_s"], float)
    # No waiting: the first 200 from /health already finds `running` recorded.
    state = profile.state()
    assert state.gateway_state == "running"
    assert state.pid == gw.pid and state.port == profile.port and state.started_at
    assert (profile.dir / GATEWAY_PID).read_text().strip() == str(gw.pid)


def test_sigterm_stops_cleanly_and_keeps_desired_state(profile: GatewayProfile) -> None:
    from hermes_container.state import write_desired

    write_desired(profile.dir, "running")
    gw = profile.start()
    assert profile.state().gateway_state == "running"
    assert gw.terminate() == 0
    state = profile.state()
    assert state.gateway_state == "stopped" and state.exit_code == 0
    assert state.exit_reason == "received SIGTERM" and state.pid is None
    assert state.desired_state == "running"  # a SIGTERM never changes user intent
    assert not (profile.dir / GATEWAY_PID).exists()


def test_sigint_also_stops_with_exit_0(gateway: GatewayProc) -> None:
    gateway.popen.send_signal(signal.SIGINT)
    assert gateway.popen.wait(30) == 0
    assert gateway.profile.state().exit_reason == "received SIGINT"


def test_sigterm_finishes_the_request_in_flight(
    profile: GatewayProfile, fake_upstream: FakeUpstream
) -> None:
    gw = profile.start()
    fake_upstream.set(reply="late but complete", delay=3)
    result: dict[str, httpx.Response] = {}

    def ask() -> None:
        with profile.client() as client:
            result["r"] = client.post(
                "/v1/chat/completions",
                headers=profile.auth,
                json={"messages": [{"role": "user", "content": "hi"}]},
            )

    asker = threading.Thread(target=ask)
    asker.start()
    fake_upstream.wait_for_requests(1)
    gw.popen.send_signal(signal.SIGTERM)
    wait_for(lambda: profile.state().gateway_state == "stopping", what="state stopping")

    def refused() -> bool:
        try:
            socket.create_connection(("127.0.0.1", profile.port), timeout=1).close()
        except ConnectionRefusedError:
            return True
        return False

    wait_for(refused, what="the listener to close")  # stops accepting at once
    assert "r" not in result  # ... while the request is still being served
    asker.join(30)
    assert result["r"].status_code == 200
    assert result["r"].json()["choices"][0]["message"]["content"] == "late but complete"
    assert gw.popen.wait(30) == 0
    assert profile.state().gateway_state == "stopped"


def test_second_instance_is_refused_naming_the_pid(
    profile: GatewayProfile, gateway: GatewayProc
) -> None:
    proc = run_hermes("gateway", "run", env={"HERMES_ALLOW_ROOT_GATEWAY": "1"})
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and f"pid {gateway.pid}" in proc.stderr
    assert gateway.popen.poll() is None
    assert profile.state().pid == gateway.pid


def test_stale_pidfile_of_a_dead_process_is_reclaimed(profile: GatewayProfile) -> None:
    (profile.dir / GATEWAY_PID).write_text(f"{_exited_pid()}\n")
    gw = profile.start()
    assert (profile.dir / GATEWAY_PID).read_text().strip() == str(gw.pid)


def test_pidfile_naming_a_reused_pid_is_reclaimed_and_that_process_spared(
    profile: GatewayProfile,
) -> None:
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        (profile.dir / GATEWAY_PID).write_text(f"{bystander.pid}\n")
        gw = profile.start()
        assert (profile.dir / GATEWAY_PID).read_text().strip() == str(gw.pid)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_lock_held_by_something_else_is_not_fought(profile: GatewayProfile) -> None:
    holder = _lock_holder(profile)  # cmdline has no "hermes ... gateway run"
    try:
        proc = run_hermes("gateway", "run", "--supervised", env={"HERMES_ALLOW_ROOT_GATEWAY": "1"})
        assert proc.returncode == 1 and "not a hermes gateway" in proc.stderr
        assert holder.poll() is None
    finally:
        holder.kill()
        holder.wait()


def test_replace_stops_the_running_gateway_and_takes_over(profile: GatewayProfile) -> None:
    old = profile.start()
    new = profile.spawn("--replace")
    assert old.popen.wait(30) == 0  # asked politely, stopped cleanly
    new.wait_ready()
    state = profile.state()
    assert state.gateway_state == "running" and state.pid == new.pid
    assert (profile.dir / GATEWAY_PID).read_text().strip() == str(new.pid)


def test_unsupervised_run_never_adopts(profile: GatewayProfile, gateway: GatewayProc) -> None:
    proc = run_hermes("gateway", "run", env={"HERMES_ALLOW_ROOT_GATEWAY": "1"})
    assert proc.returncode == 1 and "already running" in proc.stderr


def test_supervised_start_adopts_an_orphaned_gateway(profile: GatewayProfile) -> None:
    orphan = profile.start()  # its parent is pytest, not an s6-supervise
    successor = profile.spawn("--supervised")
    assert orphan.popen.wait(30) == 0
    successor.wait_ready()
    assert "adopting orphaned gateway" in successor.stderr()
    assert str(orphan.pid) in successor.stderr()
    wait_for(lambda: profile.state().pid == successor.pid)


def test_orphan_that_ignores_sigterm_is_killed(profile: GatewayProfile) -> None:
    profile.configure(shutdown_grace_s=0.5)
    stuck = _lock_holder(profile, "hermes", "gateway", "run")
    try:
        successor = profile.spawn("--supervised")
        successor.wait_ready(timeout=30)
        assert stuck.wait(5) == -signal.SIGKILL
        assert "did not stop" in successor.stderr()
    finally:
        if stuck.poll() is None:
            stuck.kill()
            stuck.wait()


def _read_notify(fd: int, timeout: float = 20.0) -> bytes:
    readable, _, _ = select.select([fd], [], [], timeout)
    assert readable, "no readiness notification"
    return os.read(fd, 16)


@pytest.mark.parametrize("via", ["flag", "env"])
def test_readiness_newline_on_the_notify_fd(profile: GatewayProfile, via: str) -> None:
    read_end, write_end = os.pipe()
    try:
        if via == "flag":
            gw = profile.spawn("--supervised", "--notify-fd", str(write_end), pass_fds=(write_end,))
        else:
            env = {"HERMES_NOTIFY_FD": str(write_end)}
            gw = profile.spawn("--supervised", env=env, pass_fds=(write_end,))
        os.close(write_end)
        assert _read_notify(read_end) == b"\n"
        # Ready means the port accepts and the state says so already.
        assert httpx.get(profile.url("/health"), trust_env=False).status_code == 200
        assert profile.state().gateway_state == "running"
        assert _read_notify(read_end) == b""  # written once, then closed
        assert gw.popen.poll() is None
    finally:
        os.close(read_end)


def test_root_is_refused_with_exit_78(
    profile: GatewayProfile, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Whatever uid the tests run as, the gateway must see root here.
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.delenv("HERMES_ALLOW_ROOT_GATEWAY", raising=False)
    assert main(["gateway", "run"]) == 78
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "root" in err and "HERMES_ALLOW_ROOT_GATEWAY=1" in err
    assert not (profile.dir / GATEWAY_LOCK).exists()
    assert profile.state().gateway_state is None  # nothing written as root


def test_root_check_through_the_real_cli(profile: GatewayProfile) -> None:
    """As root (CI): refused with exit 78. As anyone else: the same command just runs."""
    gw = profile.spawn("--supervised", env={"HERMES_ALLOW_ROOT_GATEWAY": ""})
    if os.geteuid() == 0:
        assert gw.popen.wait(60) == 78
        assert "refusing to run the gateway as root" in gw.stderr()
        assert not (profile.dir / GATEWAY_PID).exists()
    else:
        gw.wait_ready()
        assert gw.terminate() == 0


def test_port_in_use_is_one_line_and_recorded(profile: GatewayProfile) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", profile.port))
        squatter.listen()
        proc = run_hermes("gateway", "run", env={"HERMES_ALLOW_ROOT_GATEWAY": "1"})
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert f"cannot listen on 127.0.0.1:{profile.port}" in proc.stderr
    state = json.loads((profile.dir / "gateway_state.json").read_text())
    assert state["gateway_state"] == "startup_failed" and state["pid"] is None


def test_gateway_of_a_named_profile_uses_its_own_files(
    make_profile: Callable[[str], GatewayProfile],
) -> None:
    make_profile("default")
    coder = make_profile("coder")
    gw = coder.start()
    assert httpx.get(coder.url("/health"), trust_env=False).json()["profile"] == "coder"
    assert (coder.dir / GATEWAY_PID).read_text().strip() == str(gw.pid)
    assert gw.terminate() == 0
    assert coder.state().gateway_state == "stopped"
    assert not (coder.home.root / GATEWAY_PID).exists()  # the default profile is untouched


def test_sigterm_while_waiting_for_the_lock_is_a_clean_exit(profile: GatewayProfile) -> None:
    stuck = _lock_holder(profile, "hermes", "gateway", "run")  # ignores SIGTERM
    try:
        waiting = profile.spawn("--replace")
        wait_for(lambda: "replacing gateway" in waiting.stderr(), what="the takeover to begin")
        waiting.popen.send_signal(signal.SIGTERM)
        assert waiting.popen.wait(10) == 0
        assert "never started" in waiting.stderr()
        assert stuck.poll() is None  # no SIGKILL was sent on our way out
        assert profile.state().gateway_state is None  # nothing recorded without the lock
    finally:
        stuck.kill()
        stuck.wait()
