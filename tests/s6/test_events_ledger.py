"""The event ledger under real s6: what a crash records, and `gateway status --at`
answering from the ledger alone what the live command printed at that moment."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

from tests.s6.conftest import Tree, wait_for

# Fields `--at` must reproduce exactly (uptime within a tolerance; the port only while
# up: a down gateway's port is its config file's, which a hand edit changes unrecorded).
COMPARED = (
    "profile",
    "registered",
    "up",
    "ready",
    "pid",
    "restarts",
    "desired_state",
    "gateway_state",
    "parked",
    "exit_code",
)


def _events(tree: Tree, *args: str) -> list[dict[str, Any]]:
    out = tree.ok("events", "--json", *args)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _live(tree: Tree) -> tuple[float, dict[str, dict[str, Any]]]:
    """`gateway status --all --json` now, and the moment it describes."""
    before = time.time()
    data = json.loads(tree.ok("gateway", "status", "--all", "--json"))
    after = time.time()
    return (before + after) / 2, {item["profile"]: item for item in data}


def _at(tree: Tree, moment: float) -> dict[str, dict[str, Any]]:
    stamp = (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + f".{int(moment % 1 * 1e6):06d}Z"
    )
    data = json.loads(tree.ok("gateway", "status", "--all", "--json", "--at", stamp))
    return {item["profile"]: item for item in data}


def test_kill_9_records_exited_restarted_ready_once_each_in_order(tree: Tree) -> None:
    tree.create("crashy")
    tree.ok("-p", "crashy", "gateway", "start")
    pid = tree.status("crashy")["pid"]
    start_id = max((e["id"] for e in _events(tree)), default=0)
    time.sleep(1.1)  # s6 waits a second before respawning a younger run
    os.kill(pid, signal.SIGKILL)
    tree.wait_ready("crashy", old_pid=pid)

    def settled() -> list[dict[str, Any]] | None:
        found = [
            e
            for e in _events(tree, "--profile", "crashy", "--since", str(start_id + 1))
            if e["kind"].startswith("gateway.")
        ]
        return found if any(e["kind"] == "gateway.ready" for e in found) else None

    events = wait_for(settled, what="the restarted gateway's ready event")
    kinds = [e["kind"] for e in events]
    assert kinds.count("gateway.exited") == 1
    assert kinds.count("gateway.restarted") == 1
    assert kinds.count("gateway.ready") == 1
    assert kinds.index("gateway.exited") < kinds.index("gateway.restarted")
    assert kinds.index("gateway.restarted") < kinds.index("gateway.ready")
    exited = events[kinds.index("gateway.exited")]
    assert exited["data"]["signal"] == 9 and exited["data"]["expected"] is False
    assert exited["actor"] == "supervisor"
    ready = events[kinds.index("gateway.ready")]
    assert ready["data"]["pid"] == tree.status("crashy")["pid"] != pid
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_status_at_replays_what_live_status_said(tree: Tree) -> None:
    captured: list[tuple[float, dict[str, dict[str, Any]]]] = []
    tree.create("alpha")
    tree.create("beta")
    captured.append(_live(tree))  # registered, down, no desired yet
    tree.ok("gateway", "start", "--all")
    captured.append(_live(tree))  # both running
    time.sleep(1.1)
    pid = tree.status("beta")["pid"]
    os.kill(pid, signal.SIGKILL)
    tree.wait_ready("beta", old_pid=pid)
    captured.append(_live(tree))  # beta restarted once, new pid
    tree.ok("-p", "alpha", "gateway", "stop")
    captured.append(_live(tree))  # alpha stopped on request

    for moment, live in captured:
        replayed = _at(tree, moment)
        for name, expected in live.items():
            got = replayed.get(name)
            assert got is not None, f"{name} missing from the replay at {moment}"
            for key in COMPARED:
                assert got[key] == expected[key], (name, key, moment, got, expected)
            if expected["up"]:
                assert got["port"] == expected["port"]
            if expected["uptime_s"] is None:
                assert got["uptime_s"] is None
            else:
                assert abs(got["uptime_s"] - expected["uptime_s"]) < 1.5, (got, expected)

    # Replaying twice gives the same answer: a pure function of the ledger.
    moment = captured[2][0]
    assert _at(tree, moment) == _at(tree, moment)
