"""wake.py: a committed write wakes whoever waits for the board, across processes,
without polling; sockets left by killed processes are cleaned up by the next writer."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hermes_container.home import HermesHome
from hermes_container.kanban import wake
from hermes_container.kanban.store import Store, open_store
from tests.conftest import wait_for

StoreFactory = Callable[[], Store]


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_env(
    request: pytest.FixtureRequest, hermes_home: HermesHome, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The environment that points a store (here or in a subprocess) at the backend."""
    monkeypatch.delenv("HERMES_KANBAN_DATABASE_URL", raising=False)
    if request.param == "sqlite":
        return {}
    server = request.getfixturevalue("postgres_server")
    import psycopg

    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")
    return {"HERMES_KANBAN_DATABASE_URL": server.url()}


@pytest.fixture
def make_store(hermes_home: HermesHome, monkeypatch: pytest.MonkeyPatch) -> Iterator[StoreFactory]:
    monkeypatch.delenv("HERMES_KANBAN_DATABASE_URL", raising=False)
    opened: list[Store] = []

    def make() -> Store:
        store = open_store(hermes_home, {})
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def wake_dir(home: HermesHome) -> Path:
    return home.root / "kanban" / "wake"


def test_a_write_in_another_process_wakes_a_listener(
    hermes_home: HermesHome, backend_env: dict[str, str]
) -> None:
    store = open_store(hermes_home, backend_env)
    listener = store.listen()
    try:
        # Nothing written: the wait runs its whole timeout and reports no board.
        started = time.monotonic()
        assert wake.wait(listener, 0.3) == set()
        assert time.monotonic() - started >= 0.29
        store.create_board("other")
        listener.drain()  # our own write announced itself too

        child = subprocess.Popen(
            [sys.executable, "-m", "hermes_container", "kanban", "create", "from afar",
             "--board", "other"],
            env={**os.environ, **backend_env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            # A timeout would return no board: {"other"} can only be the announcement.
            boards = wake.wait(listener, 20.0)
            out, err = child.communicate(timeout=20)
        finally:
            if child.poll() is None:
                child.kill()
        assert child.returncode == 0, err
        assert boards == {"other"}
        task = store.get_task(int(out.decode()))
        assert task.title == "from afar"
    finally:
        listener.close()
        store.close()


def test_a_listener_in_another_process_is_woken_by_a_write_here(
    hermes_home: HermesHome, backend_env: dict[str, str]
) -> None:
    """`kanban tail --follow` waits on a listener (5 s at most between looks): a new
    event printed well within that came through the wake-up."""
    store = open_store(hermes_home, backend_env)
    store.create_task("before")
    child = subprocess.Popen(
        [sys.executable, "-m", "hermes_container", "kanban", "tail", "--follow", "--json"],
        env={**os.environ, **backend_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert '"kind": "created"' in child.stdout.readline()  # the backlog: it listens now
        if not backend_env:
            wait_for(lambda: list(wake_dir(hermes_home).glob("*.sock")), what="its socket")
        else:
            time.sleep(0.5)  # LISTEN is issued right after the backlog is printed
        latencies = []
        for title in ("one", "two", "three"):
            started = time.monotonic()
            store.create_task(title)
            line = child.stdout.readline()
            latencies.append(time.monotonic() - started)
            assert '"kind": "created"' in line and title in line
        assert max(latencies) < 2.5, latencies
    finally:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(10)
        finally:
            if child.poll() is None:
                child.kill()
        store.close()


def test_the_wake_directory_is_private_and_a_closed_listener_leaves_nothing(
    hermes_home: HermesHome, make_store: StoreFactory
) -> None:
    store = make_store()
    listener = store.listen()
    directory = wake_dir(hermes_home)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    (sock,) = directory.glob("*.sock")
    assert sock.name.startswith(f"{os.getpid()}-")
    listener.close()
    assert not sock.exists()
    store.create_task("nobody listens")  # and a writer with no listener is fine


def test_every_listener_is_woken_and_learns_which_boards_changed(
    make_store: StoreFactory,
) -> None:
    writer, reader = make_store(), make_store()
    writer.create_board("b1")
    writer.create_board("b2")
    first, second = reader.listen(), reader.listen()
    try:
        writer.create_task("x", board="b1")
        writer.create_task("y", board="b2")
        task = writer.create_task("z", board="b2")
        for listener in (first, second):
            seen: set[str] = set()
            deadline = time.monotonic() + 5
            while seen != {"b1", "b2"} and time.monotonic() < deadline:
                seen |= wake.wait(listener, 1.0)
            assert seen == {"b1", "b2"}
            assert listener.drain() == set()  # drained: nothing more is pending
        # A read is not a change, and neither is a write that records no event.
        reader.list_tasks(board="b2")
        writer.get_task(task.id)
        assert wake.wait(first, 0.2) == set()
    finally:
        first.close()
        second.close()


def test_sockets_of_killed_processes_are_removed_by_the_next_writer(
    hermes_home: HermesHome, make_store: StoreFactory
) -> None:
    store = make_store()
    mine = store.listen()
    code = (
        "import sys, time\n"
        "from hermes_container.home import HermesHome\n"
        "from hermes_container.kanban.store import open_store\n"
        "listener = open_store(HermesHome.from_env(), {}).listen()\n"
        "print(listener.path, flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        stale = Path(child.stdout.readline().strip())
        assert stale.exists()
        child.send_signal(signal.SIGKILL)  # no chance to unlink its socket
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    assert stale.exists()
    try:
        store.create_task("wakes the living, sweeps the dead")
        assert not stale.exists()
        assert mine.path.exists()  # type: ignore[attr-defined]
        assert wake.wait(mine, 5.0) == {"default"}
    finally:
        mine.close()


def test_a_listener_that_never_reads_does_not_slow_writers(make_store: StoreFactory) -> None:
    """Its datagram queue fills up (a few datagrams); writes go on at full speed and it
    still wakes once it looks again."""
    store = make_store()
    sleeper = store.listen()
    try:
        started = time.monotonic()
        for i in range(60):
            store.create_task(f"task {i}")
        assert time.monotonic() - started < 10
        assert wake.wait(sleeper, 1.0) == {"default"}
        while sleeper.drain():
            pass
        store.create_task("after the flood")
        assert wake.wait(sleeper, 5.0) == {"default"}
    finally:
        sleeper.close()


def test_wait_returns_early_for_an_extra_descriptor(make_store: StoreFactory) -> None:
    """The daemon's signal pipe: SIGTERM must end a long wait at once."""
    store = make_store()
    listener = store.listen()
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"x")
        started = time.monotonic()
        assert wake.wait(listener, 30.0, read_end) == set()
        assert time.monotonic() - started < 1
    finally:
        os.close(read_end)
        os.close(write_end)
        listener.close()
