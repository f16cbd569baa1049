"""Crashes: restart one without touching siblings; park on exit 78 and on a crash loop."""

from __future__ import annotations

import os
import signal
import socket
import time

from tests.s6.conftest import Tree, gateway_pids, wait_for


def _start(tree: Tree, *names: str) -> dict[str, int]:
    for name in names:
        tree.create(name)
    tree.ok("gateway", "start", "--all")
    return {name: tree.status(name)["pid"] for name in names}


def test_kill_9_restarts_only_that_gateway(tree: Tree) -> None:
    pids = _start(tree, "a1", "a2", "a3")
    time.sleep(1.1)  # s6-supervise waits 1s before respawning a run younger than that
    os.kill(pids["a2"], signal.SIGKILL)
    st = tree.wait_ready("a2", old_pid=pids["a2"])
    assert st["pid"] != pids["a2"] and st["up"]
    assert st["restarts"] == 1
    assert gateway_pids("a2", tree.base) == [st["pid"]]
    for sibling in ("a1", "a3"):
        again = tree.status(sibling)
        assert again["pid"] == pids[sibling] and again["ready"]
        assert again["restarts"] == 0


def test_exit_78_is_parked_with_reason(tree: Tree) -> None:
    profile_dir = tree.create("broken")
    config = profile_dir / "config.yaml"
    config.write_text(config.read_text().replace("  port:", "  port: oops\n  old_port:"))
    proc = tree.hermes("-p", "broken", "gateway", "start", "--timeout", "15")
    assert proc.returncode == 1
    assert "parked" in proc.stdout and "gateway.port" in proc.stdout
    st = tree.status("broken")
    assert st["parked"] and not st["up"] and st["gateway_state"] == "startup_failed"
    assert st["exit_code"] == 78 and "gateway.port" in st["exit_reason"]
    assert st["desired_state"] == "running", "parking never rewrites the user's intent"
    text = tree.ok("-p", "broken", "gateway", "status")
    assert "parked (startup_failed)" in text and "Reason:" in text
    # Not restarted: still down well past s6's one-second respawn delay.
    time.sleep(1.5)
    assert "down (exitcode 78)" in tree.svstat("broken")
    assert tree.status("broken")["restarts"] == 1

    tree.set_port(profile_dir)  # fix it; an explicit start unparks
    tree.ok("-p", "broken", "gateway", "start")
    fixed = tree.status("broken")
    assert fixed["ready"] and not fixed["parked"]


def test_crash_loop_is_parked(tree: Tree) -> None:
    profile_dir = tree.create("loopy")
    port = tree.set_port(profile_dir)
    with socket.socket() as squatter:  # the port is taken: every start dies at once
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        proc = tree.hermes("-p", "loopy", "gateway", "start", "--timeout", "15")
        assert proc.returncode == 1
        st = wait_for(lambda: (s := tree.status("loopy"))["parked"] and s, what="parked")
    assert st["gateway_state"] == "crashed"
    assert "crash loop: 3 crashes" in st["exit_reason"]  # HERMES_CRASH_LOOP_MAX=3
    assert st["restarts"] == 3 and st["desired_state"] == "running"
    assert not gateway_pids("loopy", tree.base)


def test_clean_stop_is_not_a_crash(tree: Tree) -> None:
    _start(tree, "calm")
    tree.ok("-p", "calm", "gateway", "stop")
    st = tree.status("calm")
    assert st["gateway_state"] == "stopped" and st["restarts"] == 0 and not st["parked"]
