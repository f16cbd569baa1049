"""One boot reconcile in-process against slots whose supervisors are stand-ins: a reader
held open on each control FIFO (and on the scanner's), so the reconciler's own choices
are visible: what it records, in what order, and which slots get their `u`.

The real-s6 tier boots real trees through the same code (tests/s6/test_container_restart.py).
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hermes_container.events.ledger import Ledger
from hermes_container.home import HermesHome
from hermes_container.profiles import create_profile, ensure_default_profile
from hermes_container.reconcile import reconcile
from hermes_container.state import write_desired
from hermes_container.supervision.events_batch import record_each
from hermes_container.supervision.scandir import control_fifo

pytestmark = pytest.mark.usefixtures("forget_ledgers")  # reconcile records in-process


@pytest.fixture
def readers() -> Iterator[list[int]]:
    fds: list[int] = []
    yield fds
    for fd in fds:
        os.close(fd)


def _listen(fifo: Path) -> int:
    return os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)


def _registered_slot(scandir: Path, profile: str) -> Path:
    """A slot as a supervisor that already ran on it leaves it: down, status written."""
    slot = scandir / f"gateway-{profile}"
    for path in (slot, slot / "log"):
        (path / "supervise").mkdir(parents=True)
        (path / "supervise" / "status").write_bytes(b"")
        os.mkfifo(path / "supervise" / "control")
    (slot / "data").mkdir()
    (slot / "down").touch()
    return slot


def _boot_reconciled(root: Path) -> list[dict[str, Any]]:
    ledger = Ledger(root)
    try:
        return [e.to_json() for e in ledger.iterate(0, kind="boot.reconciled")]
    finally:
        ledger.close()


@pytest.fixture
def tree(
    hermes_home: HermesHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, readers: list[int]
) -> dict[str, Path]:
    """default (running, supervised), idle (stopped, supervised), orphan (running, its
    supervisor gone): slots registered, the scanner listening."""
    monkeypatch.delenv("HERMES_EVENTS", raising=False)
    monkeypatch.delenv("HERMES_PROFILES_FILE", raising=False)
    monkeypatch.setenv("HERMES_GATEWAY_PORT_BASE", "31000")
    ensure_default_profile(hermes_home)
    write_desired(hermes_home.root, "running")
    write_desired(create_profile(hermes_home, "idle"), "stopped")
    write_desired(create_profile(hermes_home, "orphan"), "running")
    scandir = tmp_path / "service"
    os.makedirs(control_fifo(scandir).parent)
    os.mkfifo(control_fifo(scandir))
    readers.append(_listen(control_fifo(scandir)))
    monkeypatch.setenv("HERMES_S6_SCANDIR", str(scandir))
    slots = {p: _registered_slot(scandir, p) for p in ("default", "idle", "orphan")}
    for profile in ("default", "idle"):
        for path in (slots[profile], slots[profile] / "log"):
            readers.append(_listen(path / "supervise" / "control"))
    return slots


def test_boot_records_every_profile_before_the_first_gateway_starts(
    hermes_home: HermesHome, tree: dict[str, Path]
) -> None:
    """The boot log line and the ledger's `boot.reconciled` are written before the `u`:
    from the `u` on, starting gateways share the CPU with the reconciler."""
    fifo = tree["default"] / "supervise" / "control"
    control = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    # A writer held open: the reconciler's own open-and-close of the FIFO then does not
    # end the poll below with a hangup; only data does.
    keep = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    seen: dict[str, Any] = {}

    def on_u() -> None:
        poller = select.poll()
        poller.register(control, select.POLLIN)
        if poller.poll(10_000):
            seen["command"] = os.read(control, 16)
            seen["boot_log"] = hermes_home.boot_log.read_text()
            seen["ledger"] = _boot_reconciled(hermes_home.root)

    watcher = threading.Thread(target=on_u)
    watcher.start()
    try:
        records = reconcile(hermes_home, stagger=0)
    finally:
        watcher.join(15)
        os.close(control)
        os.close(keep)

    actions = {r.profile: r.action for r in records}
    assert actions == {"default": "started", "idle": "registered", "orphan": "registered"}
    assert seen["command"] == b"u"
    assert "profile=default prior_state=none action=started" in seen["boot_log"]
    assert {e["profile"]: e["data"]["action"] for e in seen["ledger"]} == actions
    assert not (tree["default"] / "down").exists()
    assert (tree["idle"] / "down").exists()


def test_boot_names_a_slot_whose_supervisor_is_gone(
    hermes_home: HermesHome, tree: dict[str, Path]
) -> None:
    reconcile(hermes_home, stagger=0)
    events = {e["profile"]: e for e in _boot_reconciled(hermes_home.root)}
    assert set(events) == {"default", "idle", "orphan"}
    orphan = events["orphan"]
    assert orphan["actor"] == "cli"  # the process's actor: `hermes reconcile` sets "boot"
    assert orphan["data"] == {
        "desired": "running",
        "action": "registered",
        "previous_state": None,
        "error": f"cannot control {tree['orphan']}: supervisor not listening",
    }
    assert events["idle"]["data"]["error"] is None
    lines = hermes_home.boot_log.read_text().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "profile=default prior_state=none action=started prior_exit=unknown",
        "profile=idle prior_state=none action=registered prior_exit=unknown",
        "profile=orphan prior_state=none action=registered prior_exit=unknown",
    ]


def test_record_each_is_one_append_of_what_record_would_write(tmp_path: Path) -> None:
    from hermes_container.events.append import acting_as, record

    root = tmp_path / "home"
    root.mkdir()
    with acting_as("boot"):
        assert record(root, "slot.registered", profile="a", note=1)
        assert record_each(root, "slot.registered", [("b", {"note": 2}), ("c", {"note": 3})])
    ledger = Ledger(root)
    try:
        events = [e.to_json() for e in ledger.iterate(0)]
    finally:
        ledger.close()
    assert [(e["kind"], e["profile"], e["actor"], e["data"]) for e in events] == [
        ("slot.registered", "a", "boot", {"note": 1}),
        ("slot.registered", "b", "boot", {"note": 2}),
        ("slot.registered", "c", "boot", {"note": 3}),
    ]
    assert not record_each(root, "no.such.kind", [("d", {})])  # refused, logged, no raise


def test_a_start_lost_after_the_records_is_recorded_again(
    hermes_home: HermesHome, tree: dict[str, Path]
) -> None:
    """With a stagger the `u`s go out one by one after the records; a supervisor that
    goes away in between leaves that profile `registered` in a second record and line."""
    write_desired(create_profile(hermes_home, "late"), "running")
    late = _registered_slot(tree["default"].parent, "late")
    late_reader = _listen(late / "supervise" / "control")
    first = tree["default"] / "supervise" / "control"
    control = os.open(first, os.O_RDONLY | os.O_NONBLOCK)
    keep = os.open(first, os.O_WRONLY | os.O_NONBLOCK)

    def kill_late_supervisor_after_the_first_u() -> None:
        poller = select.poll()
        poller.register(control, select.POLLIN)
        if poller.poll(10_000):
            os.close(late_reader)

    watcher = threading.Thread(target=kill_late_supervisor_after_the_first_u)
    watcher.start()
    try:
        records = reconcile(hermes_home, stagger=0.5)
    finally:
        watcher.join(15)
        os.close(control)
        os.close(keep)

    assert {r.profile: r.action for r in records}["late"] == "registered"
    late_events = [e for e in _boot_reconciled(hermes_home.root) if e["profile"] == "late"]
    assert [e["data"]["action"] for e in late_events] == ["started", "registered"]
    assert late_events[1]["data"]["error"] == f"cannot control {late}: supervisor not listening"
    late_lines = [
        line for line in hermes_home.boot_log.read_text().splitlines() if "=late " in line
    ]
    assert [line.split(" action=")[1].split()[0] for line in late_lines] == [
        "started",
        "registered",
    ]
