"""`hermes gateway reload` under a real s6-svscan: the SIGHUP goes through the slot's
s6-supervise (and the run script's execs) to the gateway itself, which applies the new
settings without a restart and records `gateway.reloaded`."""

from __future__ import annotations

import json
from typing import Any

from hermes_container.home import SOUL_FILE
from tests.fake_upstream import FakeUpstream
from tests.s6.conftest import Tree, chown_home, wait_for
from tests.s6.support import chat, gateway_key, use_upstream


def _reloaded_events(tree: Tree, profile: str) -> list[dict[str, Any]]:
    out = tree.ok("events", "--json", "--profile", profile)
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [e for e in events if e["kind"] == "gateway.reloaded"]


def test_reload_reaches_the_supervised_gateway_without_a_restart(tree: Tree) -> None:
    with FakeUpstream() as upstream:
        profile_dir = tree.create("live")
        use_upstream(profile_dir, upstream, name="test-model")
        soul = profile_dir / SOUL_FILE
        soul.write_text("You are persona one.\n")
        chown_home(tree)
        tree.ok("-p", "live", "gateway", "start")
        before = tree.wait_ready("live")
        assert chat(before["port"], gateway_key(profile_dir)).status_code == 200
        assert upstream.requests[-1].body["messages"][0]["content"] == "You are persona one."

        soul.write_text("You are persona two.\n")
        use_upstream(profile_dir, upstream, name="second-model")
        out = tree.ok("-p", "live", "gateway", "reload")
        assert "Reloaded gateway 'live'" in out

        after = tree.status("live")
        assert after["pid"] == before["pid"] and after["ready"]  # no restart
        assert after["restarts"] == before["restarts"]
        answer = chat(before["port"], gateway_key(profile_dir))
        assert answer.status_code == 200 and answer.json()["model"] == "second-model"
        assert upstream.requests[-1].body["messages"][0]["content"] == "You are persona two."

        events = wait_for(lambda: _reloaded_events(tree, "live"), what="gateway.reloaded")
        assert len(events) == 1
        assert set(events[0]["data"]["keys"]) == {"soul", "model.name"}


def test_reload_of_a_stopped_slot_is_not_sent(tree: Tree) -> None:
    tree.create("idle")
    tree.ok("-p", "idle", "gateway", "stop")
    proc = tree.hermes("-p", "idle", "gateway", "reload")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(
        "reload not sent: the gateway of profile 'idle' is not running"
    ), proc.stderr


def test_a_reload_while_the_slot_starts_does_not_kill_it(tree: Tree) -> None:
    """SIGHUPs sent from the moment the slot is told to start (through its shell, the
    envdir and privilege-drop execs, Python's start-up) until it is ready: the gateway
    ignores or applies them, and never dies of one."""
    import subprocess
    import threading

    profile_dir = tree.create("early")
    chown_home(tree)
    slot = tree.slot("early")
    tree.ok("-p", "early", "gateway", "stop")  # registered, down
    stop = threading.Event()
    sent = 0

    def hangups() -> None:
        nonlocal sent
        while not stop.is_set():
            subprocess.run(["s6-svc", "-h", str(slot)], check=False, capture_output=True)
            sent += 1

    sender = threading.Thread(target=hangups, daemon=True)
    sender.start()
    try:
        tree.ok("-p", "early", "gateway", "start")
        st = tree.wait_ready("early")
    finally:
        stop.set()
        sender.join(10)
    assert sent > 10, "too few SIGHUPs to have covered the start"
    assert st["ready"] and st["pid"]
    history = json.loads((profile_dir / "gateway_state.json").read_text())
    assert history["gateway_state"] == "running"
    from hermes_container.supervision.history import read_history

    assert read_history(slot).deaths == [], "a SIGHUP killed the starting slot"
    assert tree.status("early")["pid"] == st["pid"], "the gateway was restarted"
