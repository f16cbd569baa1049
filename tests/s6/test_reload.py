"""`hermes gateway reload` under a real s6-svscan: the SIGHUP goes through the slot's
s6-supervise (and the run script's execs) to the gateway itself, which applies the new
settings without a restart and records `gateway.reloaded`."""

from __future__ import annotations

import json
from pathlib import Path
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


def _past_the_shell(pid: int) -> bool:
    """Whether the slot's process has exec'd beyond its run script's shell (into the
    envdir, the privilege drop or Python): the disposition it has now is the script's
    `trap`'s, carried through exec."""
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode()
    except (OSError, UnicodeDecodeError):
        return False
    return bool(argv0) and Path(argv0).name not in ("sh", "dash", "bash", "run")


def test_a_reload_while_the_slot_starts_does_not_kill_it(tree: Tree) -> None:
    """SIGHUPs sent all through the slot's start (its shell from the `trap` line on, the
    envdir and privilege-drop execs, Python's start-up, the gateway's own start) until
    it is ready: the gateway ignores or applies them, and never dies of one.

    The hangups start once the slot's process has left its shell (the first exec): the
    script's first lines, before its `trap '' HUP`, are the one window nothing can
    close, as the script is the first thing s6 runs. Without the trap, Python's start-up
    (tens of milliseconds before the gateway's handler) is exposed, and this fails."""
    import subprocess
    import threading

    profile_dir = tree.create("early")
    chown_home(tree)
    slot = tree.slot("early")
    tree.ok("-p", "early", "gateway", "stop")  # registered, down
    stop = threading.Event()
    sent = 0

    def slot_pid() -> int | None:
        out = subprocess.run(
            ["s6-svstat", "-o", "pid", str(slot)], capture_output=True, text=True, check=False
        ).stdout.strip()
        return int(out) if out.isdigit() and int(out) > 0 else None

    def hangups() -> None:
        nonlocal sent
        while not stop.is_set():
            pid = slot_pid()
            if pid is not None and _past_the_shell(pid):
                break
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
