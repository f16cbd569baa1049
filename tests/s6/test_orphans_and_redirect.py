"""A killed s6-supervise leaves no duplicate gateway; a bare `gateway run` uses the slot."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.s6.conftest import WAIT, Tree, gateway_pids, processes_of, wait_for


def _supervisor_of(tree: Tree, slot: Path) -> int:
    for pid in processes_of(tree.base):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"s6-supervise") and os.readlink(f"/proc/{pid}/cwd") == str(slot):
            return pid
    raise AssertionError(f"no s6-supervise for {slot}")


def test_killed_supervisor_leaves_no_duplicate_gateway(tree: Tree) -> None:
    tree.create("orphan")
    tree.ok("-p", "orphan", "gateway", "start")
    first = tree.status("orphan")["pid"]
    os.kill(_supervisor_of(tree, tree.slot("orphan")), signal.SIGKILL)
    # s6-svscan respawns the supervisor; its new gateway adopts the orphan's lock.
    st = tree.wait_ready("orphan", old_pid=first)
    wait_for(lambda: gateway_pids("orphan", tree.base) == [st["pid"]], what="one gateway left")
    time.sleep(0.5)  # and it stays that way
    assert gateway_pids("orphan", tree.base) == [st["pid"]]
    log = (tree.home.gateway_log_dir("orphan") / "current").read_text()
    assert "adopting orphaned" in log


def test_bare_gateway_run_is_redirected_to_the_slot(tree: Tree) -> None:
    tree.create("legacy")
    proc = tree.spawn("-p", "legacy", "gateway", "run")
    try:
        st = tree.wait_ready("legacy")
        assert st["desired_state"] == "running"
        assert proc.poll() is None, "stays in the foreground like the old container command"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err
    assert "starting gateway 'legacy' in its slot" in out
    assert tree.status("legacy")["desired_state"] == "running"
