"""The event ledger (hermes_container.events.ledger and .append) on real files and real
processes: reads and filters, concurrent writers, writers killed mid-append, rotation
under load, and the switches that keep it from writing (HERMES_EVENTS=0, unknown kinds,
root in another user's home). No SQLite mocks: every test opens the real file."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hermes_container.events.append import may_write, record
from hermes_container.events.ledger import (
    DEFAULT_MAX_BYTES,
    LEDGER_FILE,
    MIN_MAX_BYTES,
    Ledger,
    ledger_dir,
    make_pending,
    max_bytes,
)
from hermes_container.events.model import KINDS, LedgerEvent, known_kind
from hermes_container.events.spool import deliver, pending_files

OTHER_UID = 10000
pytestmark = pytest.mark.usefixtures("forget_ledgers")  # record() runs in-process


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("HERMES_EVENTS", raising=False)
    monkeypatch.delenv("HERMES_EVENTS_MAX_BYTES", raising=False)
    home = tmp_path / "home"
    home.mkdir()
    return home


@pytest.fixture
def ledger(root: Path) -> Iterator[Ledger]:
    opened = Ledger(root)
    yield opened
    opened.close()


def _all(ledger: Ledger, **filters: Any) -> list[LedgerEvent]:
    return list(ledger.iterate(0, **filters))


def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERMES_EVENTS")}
    return {**env, **extra}


# -- append, read, filters ---------------------------------------------------------------


def test_append_read_and_every_filter(ledger: Ledger) -> None:
    base = 1_800_000_000.0
    rows = [
        ("slot.registered", "alpha", base + 1),
        ("gateway.starting", "alpha", base + 2),
        ("gateway.ready", "alpha", base + 3),
        ("gateway.starting", "beta", base + 4),
        ("desired.changed", "beta", base + 5),
        ("gateway.exited", "alpha", base + 6),
        ("profile.created", None, base + 7),
    ]
    for kind, profile, at in rows:
        assert ledger.write([make_pending(kind, profile=profile, actor="cli", at=at, data={})]) == 1

    everything = _all(ledger)
    assert [e.id for e in everything] == list(range(1, len(rows) + 1))
    assert [(e.kind, e.profile, e.at) for e in everything] == rows
    assert ledger.bounds() == (1, len(rows))

    assert [e.id for e in ledger.read(profile="alpha")] == [1, 2, 3, 6]
    assert [e.id for e in ledger.read(kind="gateway.starting")] == [2, 4]
    assert [e.id for e in ledger.read(kind="gateway.")] == [2, 3, 4, 6]
    # A prefix is a whole layer, not any kind that starts with the same letters.
    assert ledger.read(kind="gate") == []
    assert [e.id for e in ledger.read(kind="gateway.", profile="beta")] == [4]
    assert [e.id for e in ledger.read(since=base + 3)] == [3, 4, 5, 6, 7]
    assert [e.id for e in ledger.read(until=base + 3)] == [1, 2, 3]
    assert [e.id for e in ledger.read(since=base + 2, until=base + 4)] == [2, 3, 4]
    assert [e.id for e in ledger.read(after_id=5)] == [6, 7]
    assert [e.id for e in ledger.read(after_id=1, limit=2)] == [2, 3]
    assert ledger.read(after_id=7) == []
    # iterate pages through everything past a page size, still in id order
    assert [e.id for e in ledger.iterate(0, page=2)] == list(range(1, 8))
    assert [e.id for e in ledger.iterate(2, page=2, profile="alpha")] == [3, 6]


def test_ids_are_monotonic_across_connections_and_processes(root: Path) -> None:
    first = Ledger(root)
    second = Ledger(root)
    try:
        ids = []
        for i in range(10):
            writer = first if i % 2 else second
            writer.write([make_pending("gateway.ready", profile="p", actor="t", data={"i": i})])
            ids.append(writer.bounds()[1])
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from pathlib import Path; "
                "from hermes_container.events.append import record; "
                "sys.exit(0 if record(Path(sys.argv[1]), 'gateway.ready', profile='p', "
                "actor='t', i=10) else 1)",
                str(root),
            ],
            env=_child_env(),
            check=True,
        )
        ids.append(first.bounds()[1])
        assert ids == list(range(1, 12))
        assert [e.data["i"] for e in _all(first)] == list(range(11))
    finally:
        first.close()
        second.close()


def test_to_json_shape(ledger: Ledger) -> None:
    ledger.write(
        [
            make_pending(
                "gateway.exited",
                profile="coder",
                actor="supervisor",
                at=1_800_000_000.25,
                data={"code": 137, "signal": 9, "expected": False, "how": "killed by SIGKILL"},
            )
        ]
    )
    (event,) = _all(ledger)
    shape = event.to_json()
    assert shape == {
        "id": 1,
        "at": 1_800_000_000.25,
        "kind": "gateway.exited",
        "profile": "coder",
        "actor": "supervisor",
        "data": {"code": 137, "signal": 9, "expected": False, "how": "killed by SIGKILL"},
    }
    assert json.loads(json.dumps(shape)) == shape  # JSON as is, nothing to convert


def test_record_merges_data_and_fields_and_keeps_the_time(root: Path) -> None:
    assert record(
        root, "gateway.ready", profile="p", actor="gateway", at=123.5, data={"pid": 1}, port=8642
    )
    (event,) = _all(Ledger(root))
    assert (event.kind, event.profile, event.actor, event.at) == (
        "gateway.ready",
        "p",
        "gateway",
        123.5,
    )
    assert event.data == {"pid": 1, "port": 8642}


def test_the_file_is_the_owners_alone(root: Path, ledger: Ledger) -> None:
    assert oct(ledger.directory.stat().st_mode & 0o777) == oct(0o700)
    assert oct((ledger.directory / LEDGER_FILE).stat().st_mode & 0o777) == oct(0o600)


def test_cursor_moves_with_the_copies_in_one_transaction(ledger: Ledger) -> None:
    copied = [
        make_pending("kanban.created", profile=None, actor="dispatcher", source=f"board:{i}")
        for i in (1, 2, 3)
    ]
    assert ledger.write(copied, cursor=("board", 3)) == 3
    assert ledger.cursor("board") == 3
    # The same copies again (a crash after the board's write, before the cursor): none doubled.
    assert ledger.write(copied, cursor=("board", 3)) == 0
    assert len(_all(ledger)) == 3
    assert ledger.cursor("unknown") == 0


# -- what is refused ---------------------------------------------------------------------


def test_unknown_kind_bad_actor_or_huge_data_is_refused_and_nothing_written(root: Path) -> None:
    assert not record(root, "gateway.explodeded", profile="p", actor="t")
    assert not record(root, "kanban.", profile="p", actor="t")  # the board's prefix alone
    assert not record(root, "gateway.ready", profile="p", actor="x" * 500)
    assert not record(root, "gateway.ready", profile="p", actor="t", blob="x" * 70_000)
    assert not ledger_dir(root).exists()
    assert known_kind("kanban.completed") and not known_kind("kanban.")
    assert record(root, "kanban.completed", profile=None, actor="dispatcher", task=7)
    assert [e.kind for e in _all(Ledger(root))] == ["kanban.completed"]


def test_every_catalogued_kind_is_accepted(root: Path) -> None:
    for kind in KINDS:
        assert record(root, kind, profile="p", actor="t"), kind
    assert [e.kind for e in _all(Ledger(root))] == list(KINDS)


def test_hermes_events_0_writes_nothing(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERMES_EVENTS", "0")
    assert not record(root, "gateway.ready", profile="p", actor="t")
    assert not ledger_dir(root).exists()
    # ... also from a fresh process, the way a finish script runs
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; "
            "from hermes_container.events.append import record; "
            "sys.exit(1 if record(Path(sys.argv[1]), 'gateway.ready', profile='p') else 0)",
            str(root),
        ],
        env=_child_env(HERMES_EVENTS="0"),
        check=True,
    )
    assert not ledger_dir(root).exists()
    monkeypatch.setenv("HERMES_EVENTS", "typo")  # a typo never turns the ledger off
    assert record(root, "gateway.ready", profile="p", actor="t")


def test_root_never_writes_into_a_home_another_user_owns(root: Path) -> None:
    if os.geteuid() != 0:
        # Not root here: the guard's helper, asked as uid 0 about this user's home.
        assert os.stat(root).st_uid != 0
        assert not may_write(root, euid=0)
        assert may_write(root)  # the owner itself may
        assert record(root, "gateway.ready", profile="p", actor="t")
        return
    assert may_write(root)  # root's own home
    os.chown(root, OTHER_UID, OTHER_UID)
    assert not may_write(root)
    assert not record(root, "gateway.ready", profile="p", actor="t")
    assert not ledger_dir(root).exists()  # not even the directory
    # A root-owned home whose events directory the other user owns: refused as well.
    os.chown(root, 0, 0)
    ledger_dir(root).mkdir()
    os.chown(ledger_dir(root), OTHER_UID, OTHER_UID)
    assert not may_write(root)
    assert not record(root, "gateway.ready", profile="p", actor="t")
    assert os.listdir(ledger_dir(root)) == []
    assert may_write(root, euid=OTHER_UID)  # not root: the file's modes decide


# -- bounds --------------------------------------------------------------------------------


def test_max_bytes_env() -> None:
    assert max_bytes({}) == DEFAULT_MAX_BYTES == 64 * 1024 * 1024
    assert max_bytes({"HERMES_EVENTS_MAX_BYTES": "5000000"}) == 5_000_000
    assert max_bytes({"HERMES_EVENTS_MAX_BYTES": "10"}) == MIN_MAX_BYTES
    assert max_bytes({"HERMES_EVENTS_MAX_BYTES": "lots"}) == DEFAULT_MAX_BYTES


def test_rotation_deletes_the_oldest_and_ids_never_come_back(root: Path) -> None:
    ledger = Ledger(root, limit_bytes=MIN_MAX_BYTES)
    try:
        pad = "x" * 400
        for start in range(0, 6000, 500):
            ledger.write(
                [
                    make_pending("gateway.ready", profile="p", actor="t", data={"i": i, "pad": pad})
                    for i in range(start, start + 500)
                ]
            )
        ledger.rotate()
        first, last = ledger.bounds()
        assert last == 6000
        assert first > 1, "nothing was rotated away"
        assert ledger.used_bytes() <= MIN_MAX_BYTES
        kept = _all(ledger)
        assert [e.id for e in kept] == list(range(first, last + 1))  # the newest, whole
        assert [e.data["i"] for e in kept] == list(range(first - 1, 6000))
        ledger.write([make_pending("gateway.ready", profile="p", actor="t", data={"i": -1})])
        assert ledger.bounds()[1] == 6001
    finally:
        ledger.close()


# -- concurrency ---------------------------------------------------------------------------

CONCURRENT_WRITER = """
import sys
from pathlib import Path
from hermes_container.events.append import record
root, proc, count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
print("ready", flush=True)
sys.stdin.read(1)
for seq in range(count):
    record(root, "gateway.ready", profile=f"p{proc}", actor="test", proc=proc, seq=seq)
"""


def test_eight_processes_appending_at_once(root: Path) -> None:
    writers, count = 8, 150
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_WRITER, str(root), str(i), str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=_child_env(),
        )
        for i in range(writers)
    ]
    try:
        for proc in procs:  # all imported and waiting: then they start together
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("g")
            proc.stdin.close()
        for proc in procs:
            assert proc.wait(60) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    ledger = Ledger(root)
    try:
        deliver(ledger)  # what the last appends had to spool (a busy ledger) comes in now
        assert pending_files(ledger.directory) == []
        events = _all(ledger)
    finally:
        ledger.close()
    total = writers * count
    # Every id once, none missing, in order; every event exactly once.
    assert [e.id for e in events] == list(range(1, total + 1))
    pairs = [(e.data["proc"], e.data["seq"]) for e in events]
    assert sorted(pairs) == [(p, s) for p in range(writers) for s in range(count)]
    for proc_no in range(writers):
        mine = [e.data["seq"] for e in events if e.data["proc"] == proc_no]
        assert mine == list(range(count)), f"process {proc_no}'s events out of its order"
        assert {e.profile for e in events if e.data["proc"] == proc_no} == {f"p{proc_no}"}


# -- a writer killed mid-append --------------------------------------------------------------

KILLED_WRITER = """
import hashlib, os, sys
from pathlib import Path
from hermes_container.events.append import record
from hermes_container.events.ledger import Ledger, make_pending
root, rnd = Path(sys.argv[1]), int(sys.argv[2])
ledger = Ledger(root)
print("ready", flush=True)
seq = 0
while True:
    payload = os.urandom(50 + (seq * 7919) % 6000).hex()  # up to 12 KB: overflow pages
    sha = hashlib.sha256(payload.encode()).hexdigest()
    body = {"round": rnd, "seq": seq, "payload": payload, "sha": sha}
    # three events in one transaction, then one through record() (its own transaction)
    ledger.write([make_pending("gateway.ready", profile="w", actor="test",
                               data={**body, "part": k}) for k in range(3)])
    record(root, "gateway.exited", profile="w", actor="test", **body)
    seq += 1
"""


def _check_whole(root: Path) -> list[LedgerEvent]:
    """Open the file as a new reader would and check every event it returns."""
    conn = sqlite3.connect(ledger_dir(root) / LEDGER_FILE)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    ledger = Ledger(root)
    try:
        events = _all(ledger)
    finally:
        ledger.close()
    ids = [e.id for e in events]
    assert ids == sorted(set(ids)), "ids not strictly increasing"
    # Rotation deletes the oldest rows by id and may split a batch on purpose (the
    # bound wins); the writers here run without it, so every row is still there.
    assert not ids or ids[0] == 1, f"rows deleted (rotation?): the first id is {ids[0]}"
    batches: dict[tuple[int, int], list[int]] = {}
    singles: dict[int, list[int]] = {}
    for event in events:
        data = event.data
        assert hashlib.sha256(data["payload"].encode()).hexdigest() == data["sha"], event.id
        key = (data["round"], data["seq"])
        if event.kind == "gateway.ready":
            batches.setdefault(key, []).append(data["part"])
        else:
            assert event.kind == "gateway.exited"
            singles.setdefault(data["round"], []).append(data["seq"])
    for key, parts in batches.items():
        assert parts == [0, 1, 2], f"batch {key} torn: parts {parts}"
    for rnd in {r for r, _ in batches} | set(singles):
        seqs = sorted(s for r, s in batches if r == rnd)
        assert seqs == list(range(len(seqs))), f"round {rnd}: a batch missing in the middle"
        assert singles.get(rnd, []) == list(range(len(singles.get(rnd, [])))), rnd
        # record() follows its batch: at most the last one is missing
        assert len(seqs) - len(singles.get(rnd, [])) in (0, 1), rnd
    return events


def test_writer_killed_mid_append_leaves_nothing_torn(root: Path) -> None:
    Ledger(root).close()
    rng = random.Random(16)
    rounds = 14
    written_rounds = 0
    for rnd in range(rounds):
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLED_WRITER, str(root), str(rnd)],
            stdout=subprocess.PIPE,
            text=True,
            # A fast machine writes past the default 64 MiB bound in 14 rounds, and
            # rotation's cut through the oldest batch is not the tear this test looks for.
            env=_child_env(HERMES_EVENTS_MAX_BYTES=str(1 << 40)),
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.005, 0.25))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
        events = _check_whole(root)
        if any(e.data["round"] == rnd for e in events):
            written_rounds += 1
    assert written_rounds >= rounds // 2, "the writer hardly wrote anything before its kill"
    # The ledger takes new appends, with the next id.
    last = _check_whole(root)[-1].id
    assert record(
        root,
        "gateway.ready",
        profile="w",
        actor="test",
        round=-1,
        seq=0,
        payload="",
        sha=hashlib.sha256(b"").hexdigest(),
    )
    assert Ledger(root).bounds()[1] == last + 1


# -- rotation under load -----------------------------------------------------------------------

ROTATING_WRITER = """
import sys
from pathlib import Path
from hermes_container.events.append import record
root, count = Path(sys.argv[1]), int(sys.argv[2])
pad = "r" * 200
for seq in range(count):
    record(root, "gateway.ready", profile=f"p{seq % 50}", actor="test", seq=seq, pad=pad)
"""


def test_rotation_under_load_loses_nothing_for_a_follower_that_keeps_up(root: Path) -> None:
    limit = MIN_MAX_BYTES  # 1 MiB: about 4,000 of these events
    count = 12_000
    Ledger(root).close()
    writer = subprocess.Popen(
        [sys.executable, "-c", ROTATING_WRITER, str(root), str(count)],
        env=_child_env(HERMES_EVENTS_MAX_BYTES=str(limit)),
    )
    follower = Ledger(root)
    received: list[int] = []
    seqs: list[int] = []
    largest_used = 0
    try:
        after = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            done = writer.poll() is not None
            batch = follower.read(after, limit=500)
            for event in batch:
                received.append(event.id)
                seqs.append(event.data["seq"])
            if batch:
                after = batch[-1].id
                largest_used = max(largest_used, follower.used_bytes())
            elif done:
                break
            else:
                time.sleep(0.005)
        assert writer.wait(5) == 0
        first, last = follower.bounds()
        used = follower.used_bytes()
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        follower.close()
    assert received == list(range(1, count + 1)), "the follower missed or doubled an id"
    assert seqs == list(range(count))
    assert last == count
    assert first > count // 2, f"rotation did not keep up: oldest kept id {first}"
    assert last - first > 1000, "rotation threw away far more than it had to"
    # Bounded: used pages stay near the limit (checked every 256 appends per writer).
    assert used <= limit * 1.1, used
    assert largest_used <= limit * 1.15, largest_used
    size = (ledger_dir(root) / LEDGER_FILE).stat().st_size
    assert size <= limit * 1.3, f"ledger.db grew to {size} bytes for a {limit}-byte bound"
