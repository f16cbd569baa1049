"""The append budget and the spool (hermes_container.events.spool): an append never waits
long for a busy ledger, what it spools arrives later exactly once, and a delivery cut
between the insert and the unlink doubles nothing. Real SQLite locks held by another
connection, real fresh processes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hermes_container.events.append import record
from hermes_container.events.ledger import LEDGER_FILE, Ledger, ledger_dir, make_pending
from hermes_container.events.spool import deliver, pending_files, put, spool_dir

BOUND_S = 0.2  # what a supervision caller may lose to the ledger, at most
pytestmark = pytest.mark.usefixtures("forget_ledgers")  # record() runs in-process


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("HERMES_EVENTS", raising=False)
    monkeypatch.delenv("HERMES_EVENTS_MAX_BYTES", raising=False)
    home = tmp_path / "home"
    home.mkdir()
    Ledger(home).close()  # the file exists, as it does once the container has booted
    return home


class WriteLock:
    """Another connection holding the ledger's write lock (BEGIN IMMEDIATE)."""

    def __init__(self, root: Path) -> None:
        self.conn = sqlite3.connect(ledger_dir(root) / LEDGER_FILE, isolation_level=None)
        self.conn.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        self.conn.execute("COMMIT")
        self.conn.close()


def _events(root: Path) -> list[dict[str, object]]:
    ledger = Ledger(root)
    try:
        return [e.to_json() for e in ledger.iterate(0)]
    finally:
        ledger.close()


def test_a_held_write_lock_costs_record_a_bounded_time_and_the_event_is_spooled(
    root: Path,
) -> None:
    assert record(root, "gateway.starting", profile="p", actor="t", pid=1)  # opened, cached
    lock = WriteLock(root)
    try:
        started = time.monotonic()
        delivered = record(root, "gateway.exited", profile="p", actor="supervisor", code=137)
        took = time.monotonic() - started
        assert took < BOUND_S, f"record() waited {took:.3f}s behind a held lock"
        assert delivered is False
        (spooled,) = pending_files(ledger_dir(root))
        (entry,) = json.loads(spooled.read_text())
        assert entry["kind"] == "gateway.exited" and entry["data"] == {"code": 137}
        # The ledger itself has only the first event (a WAL reader is never blocked).
        assert [e["kind"] for e in _events(root)] == ["gateway.starting"]
        # A second append while still locked: spooled too, behind the first.
        assert not record(root, "gateway.restarted", profile="p", actor="supervisor")
        assert len(pending_files(ledger_dir(root))) == 2
    finally:
        lock.release()
    assert record(root, "gateway.starting", profile="p", actor="gateway", pid=2)
    assert pending_files(ledger_dir(root)) == []
    kinds = [(e["id"], e["kind"]) for e in _events(root)]
    # Exactly once each, and in the order they were recorded: the spooled ones are
    # delivered before the append that found the ledger free again.
    assert kinds == [
        (1, "gateway.starting"),
        (2, "gateway.exited"),
        (3, "gateway.restarted"),
        (4, "gateway.starting"),
    ]
    spooled_event = _events(root)[1]
    assert spooled_event["actor"] == "supervisor"
    assert spooled_event["at"] < _events(root)[3]["at"]  # it keeps its own time
    assert deliver(Ledger(root)) == 0  # nothing left to deliver twice


FRESH_RECORD = """
import json, sys, time
from pathlib import Path
from hermes_container.events.append import record
started = time.monotonic()
ok = record(Path(sys.argv[1]), "gateway.exited", profile="p", actor="supervisor", code=137)
print(json.dumps({"ok": ok, "took": time.monotonic() - started}))
"""


def test_a_fresh_process_also_returns_within_the_bound(root: Path) -> None:
    """What a finish script pays: a new process opens the ledger and appends while
    another connection holds the write lock. Opening must not wait for that lock."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERMES_EVENTS")}
    lock = WriteLock(root)
    try:
        out = subprocess.run(
            [sys.executable, "-c", FRESH_RECORD, str(root)],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    finally:
        lock.release()
    result = json.loads(out)
    assert result["ok"] is False  # spooled
    assert result["took"] < BOUND_S, f"a fresh record() took {result['took']:.3f}s"
    assert len(pending_files(ledger_dir(root))) == 1
    assert record(root, "gateway.ready", profile="p", actor="gateway")
    assert [e["kind"] for e in _events(root)] == ["gateway.exited", "gateway.ready"]


def test_an_unavailable_ledger_spools_and_delivers_once_it_is_back(root: Path) -> None:
    directory = ledger_dir(root)
    for name in os.listdir(directory):
        os.unlink(directory / name)
    (directory / LEDGER_FILE).mkdir()  # the file cannot be opened at all
    started = time.monotonic()
    assert not record(root, "boot.reconciled", profile="p", actor="boot", desired="running")
    assert time.monotonic() - started < BOUND_S
    assert len(pending_files(directory)) == 1
    (directory / LEDGER_FILE).rmdir()
    assert record(root, "gateway.starting", profile="p", actor="gateway")
    assert [e["kind"] for e in _events(root)] == ["boot.reconciled", "gateway.starting"]
    assert pending_files(directory) == []


def test_delivery_cut_between_insert_and_unlink_doubles_nothing(root: Path) -> None:
    directory = ledger_dir(root)
    events = [
        make_pending("gateway.exited", profile="p", actor="supervisor", data={"n": n})
        for n in range(3)
    ]
    path = put(directory, events)
    saved = path.read_bytes()
    ledger = Ledger(root)
    try:
        assert deliver(ledger) == 3
        assert not path.exists()
        # The crash: the insert committed, the unlink never happened. The file is back.
        path.write_bytes(saved)
        assert deliver(ledger) == 0
        assert not path.exists()
        # ... and once more through record(), which delivers before it appends
        path.write_bytes(saved)
        assert record(root, "gateway.ready", profile="p", actor="gateway")
        assert not path.exists()
    finally:
        ledger.close()
    got = _events(root)
    assert [(e["id"], e["kind"], e["data"]) for e in got] == [
        (1, "gateway.exited", {"n": 0}),
        (2, "gateway.exited", {"n": 1}),
        (3, "gateway.exited", {"n": 2}),
        (4, "gateway.ready", {}),  # the next id: skipping a known event used up none
    ]


def test_spool_files_are_whole_private_and_delivered_oldest_first(root: Path) -> None:
    directory = ledger_dir(root)
    first = put(directory, [make_pending("gateway.exited", profile="a", actor="s")])
    second = put(directory, [make_pending("gateway.restarted", profile="a", actor="s")])
    assert pending_files(directory) == [first, second]
    assert oct(first.stat().st_mode & 0o777) == oct(0o600)
    assert oct(spool_dir(directory).stat().st_mode & 0o777) == oct(0o700)
    assert [p.name for p in spool_dir(directory).iterdir() if not p.name.endswith(".json")] == []
    ledger = Ledger(root)
    try:
        assert deliver(ledger) == 2
    finally:
        ledger.close()
    assert [e["kind"] for e in _events(root)] == ["gateway.exited", "gateway.restarted"]


def test_an_unreadable_spool_file_is_set_aside_and_the_rest_delivered(root: Path) -> None:
    directory = ledger_dir(root)
    bad = spool_dir(directory) / "00000000000000000001-1-00.json"
    spool_dir(directory).mkdir()
    bad.write_text("[{not json")
    good = put(directory, [make_pending("gateway.parked", profile="a", actor="s")])
    ledger = Ledger(root)
    try:
        assert deliver(ledger) == 1
    finally:
        ledger.close()
    assert not bad.exists() and bad.with_suffix(".bad").exists()
    assert not good.exists()
    assert [e["kind"] for e in _events(root)] == ["gateway.parked"]


def test_deliver_while_still_busy_keeps_the_file_for_later(root: Path) -> None:
    directory = ledger_dir(root)
    path = put(directory, [make_pending("gateway.exited", profile="a", actor="s")])
    ledger = Ledger(root)
    lock = WriteLock(root)
    try:
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError):
            deliver(ledger)
        assert time.monotonic() - started < BOUND_S
        assert path.exists()
    finally:
        lock.release()
    try:
        assert deliver(ledger) == 1
    finally:
        ledger.close()
    assert not path.exists()
