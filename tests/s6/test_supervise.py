"""`hermes supervise`: the tree on a plain host; one supervisor per HERMES_HOME."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.s6.conftest import (
    GATEWAY_UID,
    WAIT,
    Tree,
    host_mode_tree,
    processes_of,
    wait_for,
)


@pytest.fixture
def host() -> Iterator[Tree]:
    with host_mode_tree() as tree:
        yield tree


def _supervise(tree: Tree, *args: str) -> subprocess.Popen[str]:
    return tree.spawn("supervise", *args)


def test_supervise_runs_the_tree_and_refuses_a_second_owner(host: Tree) -> None:
    first = _supervise(host)
    try:
        st = host.wait_ready("default")
        assert st["desired_state"] == "running"
        assert json.loads(host.ok("gateway", "status", "--json"))["manager"].startswith("s6")

        second = _supervise(host)
        _, err = second.communicate(timeout=WAIT)
        assert second.returncode == 1
        assert "already supervises" in err and err.count("\n") == 1
        assert first.poll() is None, "the first supervisor is unaffected"

        host.create("side")
        host.ok("-p", "side", "gateway", "start")
        assert host.status("side")["ready"]
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=WAIT + 40)
    assert first.returncode == 0
    wait_for(lambda: not processes_of(host.base), what="every process of the tree to exit")
    for name in ("default", "side"):
        state = json.loads((host.home.profile_dir(name) / "gateway_state.json").read_text())
        assert state["desired_state"] == "running", "SIGTERM never rewrites desired state"
        assert state["gateway_state"] == "stopped"
    out = host.ok("gateway", "status")
    assert "Manager:   none" in out
    proc = host.hermes("gateway", "start")
    assert proc.returncode == 1 and "hermes supervise" in proc.stderr


def test_supervise_with_dashboard(host: Tree) -> None:
    port = free_port()
    host.env["HERMES_DASHBOARD_PORT"] = str(port)
    first = _supervise(host, "--dashboard")
    try:

        def accepts() -> bool:
            with socket.socket() as sock:
                sock.settimeout(0.5)
                return sock.connect_ex(("127.0.0.1", port)) == 0

        wait_for(accepts, what="the dashboard to listen")
        slot = host.home.run_dir / "service" / "dashboard"
        assert (
            "up" in subprocess.run(["s6-svstat", str(slot)], capture_output=True, text=True).stdout
        )
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=WAIT + 40)
    assert first.returncode == 0
    wait_for(lambda: not processes_of(host.base), what="every process of the tree to exit")


def test_supervise_parks_a_dashboard_that_refuses_its_configuration(host: Tree) -> None:
    """A non-loopback bind with no auth provider exits 78: the slot's finish parks it
    (`hermes _dashboard-finish`, as in the image) instead of restarting it."""
    host.env["HERMES_DASHBOARD_HOST"] = "0.0.0.0"
    host.env["HERMES_DASHBOARD_PORT"] = str(free_port())
    first = _supervise(host, "--dashboard")
    try:
        log = host.home.logs_dir / "dashboard" / "current"
        wait_for(
            lambda: log.is_file() and "parked" in log.read_text(),
            what="the dashboard's finish to park it",
        )
        slot = host.home.run_dir / "service" / "dashboard"
        svstat = subprocess.run(["s6-svstat", str(slot)], capture_output=True, text=True)
        assert svstat.stdout.startswith("down"), svstat.stdout
        time.sleep(2)  # s6-supervise would restart a crash after 1 s
        assert log.read_text().count("exit 78") == 1, log.read_text()
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=WAIT + 40)
    assert first.returncode == 0


def test_root_supervise_runs_the_whole_tree_as_the_home_owner(host: Tree) -> None:
    """`sudo hermes supervise` over a home owned by uid 10000: no root s6-svscan, no root
    slot, no root file; the tree is the owner's, as in the image."""
    if not host.drop:
        pytest.skip(
            "uid 10000 cannot run this interpreter or read this checkout (under a 0700 "
            "home?); HERMES_REQUIRE_DROP=1 turns this into a failure"
        )
    root_run = host.spawn("supervise", as_root=True)
    try:
        st = host.wait_ready("default")
        pids = processes_of(host.base)
        assert root_run.pid in pids and st["pid"] in pids
        kinds = {Path(f"/proc/{pid}/comm").read_text().strip() for pid in pids}
        assert {"s6-svscan", "s6-supervise", "s6-log"} <= kinds, kinds
        assert {pid: proc_uids(pid) for pid in pids} == {pid: {GATEWAY_UID} for pid in pids}, (
            "every process of the tree (real, effective, saved uid) is the owner"
        )
        scandir = host.home.run_dir / "service"
        assert scandir.stat().st_uid == GATEWAY_UID
        assert not scandir.stat().st_mode & 0o020, "nothing shared with a group"
        made_as_root = [
            str(p) for p in host.home.root.rglob("*") if p.lstat().st_uid != GATEWAY_UID
        ]
        assert made_as_root == []
    finally:
        root_run.send_signal(signal.SIGTERM)
        out, _ = root_run.communicate(timeout=WAIT + 40)
    assert root_run.returncode == 0
    assert f"running the tree as uid {GATEWAY_UID}" in out
    wait_for(lambda: not processes_of(host.base), what="every process of the tree to exit")


def proc_uids(pid: int) -> set[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return {int(uid) for uid in line.split()[1:]}
    raise AssertionError(f"no Uid line for pid {pid}")
