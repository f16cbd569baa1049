"""A claim's holder judged by its life lock, and the board's events carried into the
event ledger exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from hermes_container.events.ledger import Ledger
from hermes_container.home import HermesHome
from hermes_container.kanban import holders
from hermes_container.kanban.dispatcher import Dispatcher
from hermes_container.kanban.ledger_copy import carry, stream_name
from hermes_container.kanban.model import Holder
from hermes_container.kanban.store import open_store
from tests.conftest import wait_for

# A dispatcher of an earlier container on the same volume: another pid namespace, so
# another host string, and a claim that would not expire for an hour.
OLD_HOLDER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from hermes_container.home import HermesHome
    from hermes_container.kanban import holders
    from hermes_container.kanban.model import ClaimLimits, Holder
    from hermes_container.kanban.store import open_store

    home = HermesHome(Path(sys.argv[1]))
    me = Holder("old-container#0000beef", os.getpid())
    holders.LifeLock(home.root / "kanban" / holders.HOLDERS_DIR, me)
    store = open_store(home, {})
    run = store.claim(me, ClaimLimits(claim_ttl_seconds=3600))
    print(run.task_id, flush=True)
    time.sleep(600)
    """
)


def _old_dispatcher(root: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", OLD_HOLDER, str(root)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip(), "the old dispatcher did not claim"
    return proc, int(line)


def test_a_holder_from_another_pid_namespace_is_reclaimed_once_its_lock_is_free(
    tmp_path: Path,
) -> None:
    home = HermesHome(tmp_path / "home")
    store = open_store(home, {})
    task = store.create_task("left running by a container that died", assignee="coder")
    proc, claimed = _old_dispatcher(home.root)
    try:
        assert claimed == task.id
        ours = Dispatcher(home, store, holder=Holder("new-container#0000cafe", os.getpid()))
        # Alive (its lock is held): not ours to take, although the host differs.
        report = ours.tick()
        assert report.reclaimed == [] and store.get_task(task.id).status == "running"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        report = ours.tick()
        assert report.reclaimed == [task.id]
        after = store.get_task(task.id)
        assert after.status == "ready" and after.consecutive_failures == 0
        reclaimed = [e for e in store.events_since(0, task_id=task.id) if e.kind == "reclaimed"]
        assert len(reclaimed) == 1 and "is gone" in reclaimed[0].data["reason"]
        # Its stale lock file went with it.
        assert list((home.root / "kanban" / holders.HOLDERS_DIR).glob("old-container*")) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        store.close()


def test_sweep_removes_only_locks_nobody_holds(tmp_path: Path) -> None:
    directory = tmp_path / "holders"
    mine = holders.LifeLock(directory, Holder("here#1", os.getpid()))
    stale = holders.lock_path(directory, Holder("gone#2", 99999999))
    stale.write_text("")
    assert holders.sweep(directory) == 1
    assert mine.path.exists() and not stale.exists()
    assert holders.gone(directory, Holder("here#1", os.getpid())) is False  # held
    assert holders.gone(directory, Holder("never#3", 1)) is None  # no file: cannot tell
    mine.release()
    assert not mine.path.exists()


def test_board_events_reach_the_ledger_exactly_once(tmp_path: Path) -> None:
    home = HermesHome(tmp_path / "home")
    store = open_store(home, {})
    ledger = Ledger(home.root)
    try:
        first = store.create_task("one", assignee="coder")
        store.comment(first.id, "hello")
        assert carry(store, ledger) == 3  # created, assigned, commented
        assert carry(store, ledger) == 0  # nothing new
        store.create_task("two")
        # A crash after the copy but before the cursor moved cannot happen (one
        # transaction); the worst case, a cursor set back, still copies nothing twice.
        ledger.write([], cursor=(stream_name(store), 0))
        assert carry(store, ledger) == 1
        copied = [e for e in ledger.iterate(0) if e.kind.startswith("kanban.")]
        assert [e.kind for e in copied] == [
            "kanban.created",
            "kanban.assigned",
            "kanban.commented",
            "kanban.created",
        ]
        board_ids = [e.data["board_event_id"] for e in copied]
        assert board_ids == sorted(set(board_ids))
        assert copied[0].profile == "coder" and copied[0].data["task_id"] == first.id
        assert copied[2].data["text"] == "hello"
    finally:
        ledger.close()
        store.close()


def test_the_daemon_carries_board_events_into_the_ledger(tmp_path: Path) -> None:
    root = tmp_path / "home"
    env = {**os.environ, "HERMES_HOME": str(root)}
    create = [sys.executable, "-m", "hermes_container", "kanban", "create", "carried"]
    subprocess.run(create, env=env, check=True, capture_output=True)
    daemon = subprocess.Popen(
        [sys.executable, "-m", "hermes_container", "kanban", "daemon"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ledger = Ledger(root)

        def copied() -> bool:
            return any(e.kind == "kanban.created" for e in ledger.iterate(0))

        wait_for(copied, 15, "the board's created event in the ledger")
        ledger.close()
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(20) == 0
