"""Gateway slots run through the gateway zygote (opt-in, HERMES_GATEWAY_ZYGOTE) under a
real s6-svscan: the slot's process is the launcher, its gateway a child of the zygote,
and crash handling, readiness, `gateway stop/start` and the ledger work as without it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hermes_container.gateway.lock import parent_pid
from hermes_container.state import read_state
from tests.s6.conftest import GATEWAY_UID, Tree, booted_tree, wait_for


class ZygoteTree:
    def __init__(self, tree: Tree, zygote: subprocess.Popen[bytes], log: Path) -> None:
        self.tree, self.zygote, self.log = tree, zygote, log

    def launcher_pid(self, profile: str) -> int:
        out = subprocess.run(
            ["s6-svstat", "-o", "up,pid", str(self.tree.slot(profile))],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        assert out[0] == "true", out
        return int(out[1])

    def gateway_pid(self, profile: str) -> int:
        state = read_state(self.tree.home.profile_dir(profile), warn=False)
        assert state.gateway_state == "running" and state.pid, state
        return state.pid


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


@pytest.fixture
def ztree() -> Iterator[ZygoteTree]:
    with contextlib.ExitStack() as stack:
        # The socket's path must be known before boot: the slots read it from their env.
        probe = stack.enter_context(booted_tree())
        base = probe.base
        directory = base / "z"
        directory.mkdir(mode=0o700)
        if probe.drop:
            os.chown(directory, GATEWAY_UID, GATEWAY_UID)
        path = directory / "sock"
        probe.env["HERMES_GATEWAY_ZYGOTE"] = str(path)
        # Slots started by s6-svscan see the svscan's environment: restart it with ours.
        probe.stop_svscan()
        log = base / "zygote.log"
        as_owner: dict[str, Any] = (
            {"user": GATEWAY_UID, "group": GATEWAY_UID, "extra_groups": []} if probe.drop else {}
        )
        with log.open("wb") as err:
            zygote = subprocess.Popen(
                [sys.executable, "-m", "hermes_container", "gateway", "zygote"],
                env=probe.env,
                cwd=base,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
                **as_owner,
            )
        try:
            wait_for(lambda: path.exists() or zygote.poll() is not None, what="the zygote")
            assert zygote.poll() is None, log.read_text()
            probe.start_svscan()
            yield ZygoteTree(probe, zygote, log)
        finally:
            if zygote.poll() is None:
                zygote.kill()
            zygote.wait(10)


def test_kill_9_of_the_launcher_restarts_it_through_finish(ztree: ZygoteTree) -> None:
    tree = ztree.tree
    tree.create("zz")
    tree.ok("-p", "zz", "gateway", "start")
    launcher = ztree.launcher_pid("zz")
    gateway = ztree.gateway_pid("zz")
    assert gateway != launcher and parent_pid(gateway) == ztree.zygote.pid
    time.sleep(1.1)  # s6-supervise waits 1s before respawning a run younger than that
    os.kill(launcher, signal.SIGKILL)
    wait_for(lambda: not alive(gateway), what="the old gateway's death")
    st = tree.wait_ready("zz", old_pid=gateway)
    assert st["restarts"] == 1  # the finish script recorded the crash
    assert ztree.launcher_pid("zz") != launcher
    again = ztree.gateway_pid("zz")
    assert parent_pid(again) == ztree.zygote.pid
    ledger = tree.ok("events", "--profile", "zz", "--json")
    assert '"gateway.restarted"' in ledger and '"signal": 9' in ledger, ledger


def test_gateway_stop_and_start_work_through_the_zygote(ztree: ZygoteTree) -> None:
    tree = ztree.tree
    tree.create("calm")
    tree.ok("-p", "calm", "gateway", "start")
    gateway = ztree.gateway_pid("calm")
    tree.ok("-p", "calm", "gateway", "stop")
    st = tree.status("calm")
    assert st["gateway_state"] == "stopped" and st["restarts"] == 0 and not st["parked"]
    assert not alive(gateway)
    tree.ok("-p", "calm", "gateway", "start")
    assert tree.status("calm")["ready"]
    assert parent_pid(ztree.gateway_pid("calm")) == ztree.zygote.pid
    assert ztree.zygote.poll() is None


def test_without_its_zygote_a_slot_restarts_in_process(ztree: ZygoteTree) -> None:
    tree = ztree.tree
    tree.create("lone")
    tree.ok("-p", "lone", "gateway", "start")
    gateway = ztree.gateway_pid("lone")
    time.sleep(1.1)
    ztree.zygote.kill()
    ztree.zygote.wait(10)
    wait_for(lambda: not alive(gateway), what="the forked gateway's death")
    st = tree.wait_ready("lone", old_pid=gateway)
    # The slot's own process is the gateway again, as without a zygote.
    assert ztree.gateway_pid("lone") == ztree.launcher_pid("lone")
    assert st["restarts"] == 1
