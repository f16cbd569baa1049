"""RowsCache: concurrent readers share one computation; stale rows are served while one
background refresh runs, never past max_age; actions invalidate at once."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.responses import JSONResponse

from hermes_container.dashboard import read_model
from hermes_container.dashboard.read_model import RowsCache, profiles_document
from hermes_container.home import HermesHome
from hermes_container.supervision.service_status import ServiceStatus
from tests.conftest import wait_for


def _row(n: int) -> ServiceStatus:
    return ServiceStatus(
        profile=f"row-{n}",
        registered=True,
        up=True,
        ready=True,
        pid=100 + n,
        uptime_s=3725.0,
        restarts=0,
        port=8642,
        desired_state="running",
        gateway_state="running",
    )


class Rows:
    """A stand-in for read_model.all_rows that counts its calls and can be held."""

    def __init__(self) -> None:
        self.calls = 0
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Semaphore(0)

        self.fail = False

    def __call__(self, home: HermesHome, manager: Any) -> list[ServiceStatus]:
        self.calls += 1
        n = self.calls
        self.entered.release()
        assert self.gate.wait(30), "the test never released the computation"
        if self.fail:
            raise OSError("the home went away")
        return [_row(n)]


@pytest.fixture
def rows(monkeypatch: pytest.MonkeyPatch) -> Iterator[Rows]:
    fake = Rows()
    monkeypatch.setattr(read_model, "all_rows", fake)
    yield fake
    fake.gate.set()
    # A refresh still running looks all_rows up when it computes: left running, it
    # would call the next test's stand-in and skew that test's count.
    for thread in threading.enumerate():
        if thread.name == "rows-refresh":
            thread.join(10)
            assert not thread.is_alive(), "a rows refresh did not end"


def names(cache: RowsCache, manager: Any = None) -> list[str]:
    return [r.profile for r in cache.get(manager)]


class Supervisor:
    name = "fake"

    def __init__(self, scandir: Path) -> None:
        self.scandir = scandir


def test_concurrent_readers_share_one_computation(hermes_home: HermesHome, rows: Rows) -> None:
    cache = RowsCache(hermes_home, ttl=60, max_age=60)
    rows.gate.clear()
    results: list[list[str]] = []
    threads = [threading.Thread(target=lambda: results.append(names(cache))) for _ in range(8)]
    for thread in threads:
        thread.start()
    assert rows.entered.acquire(timeout=10)
    rows.gate.set()
    for thread in threads:
        thread.join()
    assert rows.calls == 1
    assert results == [["row-1"]] * 8


def test_invalidate_forces_a_fresh_read(hermes_home: HermesHome, rows: Rows) -> None:
    cache = RowsCache(hermes_home, ttl=60, max_age=60)
    assert names(cache) == ["row-1"]
    assert names(cache) == ["row-1"]
    cache.invalidate()
    assert cache.peek(None) is None, "invalidated rows are never served, not even stale"
    assert names(cache) == ["row-2"]


def test_rows_read_across_an_invalidation_are_not_kept(hermes_home: HermesHome, rows: Rows) -> None:
    """An action that lands while rows are being read: the next read reads again."""
    cache = RowsCache(hermes_home, ttl=60, max_age=60)
    rows.gate.clear()
    first = threading.Thread(target=cache.get, args=(None,))
    first.start()
    assert rows.entered.acquire(timeout=10)
    cache.invalidate()  # does not wait for the reading in progress
    rows.gate.set()
    first.join()
    assert names(cache) == ["row-2"] and rows.calls == 2


def test_stale_rows_are_served_while_one_refresh_runs(hermes_home: HermesHome, rows: Rows) -> None:
    cache = RowsCache(hermes_home, ttl=0.0, max_age=60)
    assert names(cache) == ["row-1"]
    assert rows.entered.acquire(timeout=0)  # the first reading's: the next is the refresh's
    rows.gate.clear()
    # Stale (older than ttl): served at once, and one refresh starts in the background.
    snap = cache.peek(None)
    assert snap is not None and [r.profile for r in snap.rows] == ["row-1"]
    assert rows.entered.acquire(timeout=10)
    for _ in range(5):  # more readers meanwhile: the same rows, no second refresh
        assert names(cache) == ["row-1"]
    assert rows.calls == 2
    rows.gate.set()
    wait_for(lambda: names(cache) == ["row-2"], what="the refreshed rows")


def test_a_failed_refresh_keeps_serving_the_stale_rows(
    hermes_home: HermesHome, rows: Rows, caplog: pytest.LogCaptureFixture
) -> None:
    cache = RowsCache(hermes_home, ttl=0.0, max_age=60)
    assert names(cache) == ["row-1"]
    rows.fail = True
    assert names(cache) == ["row-1"]  # stale: served, and a refresh starts
    wait_for(lambda: "refreshing the profile rows failed" in caplog.text, what="the failure")
    assert names(cache) == ["row-1"]
    cache.invalidate()  # a reading in the caller now, and its error is the caller's
    with pytest.raises(OSError, match="went away"):
        cache.get(None)


def test_rows_older_than_max_age_are_never_served(hermes_home: HermesHome, rows: Rows) -> None:
    cache = RowsCache(hermes_home, ttl=0.0, max_age=0.0)
    assert names(cache) == ["row-1"]
    assert cache.peek(None) is None
    assert names(cache) == ["row-2"] and rows.calls == 2  # read in the caller, no thread


def test_another_supervisor_gets_its_own_rows(
    hermes_home: HermesHome, rows: Rows, tmp_path: Path
) -> None:
    cache = RowsCache(hermes_home, ttl=60, max_age=60)
    tree = Supervisor(tmp_path / "service")
    assert names(cache) == ["row-1"]
    assert names(cache, tree) == ["row-2"]  # a supervisor appeared: no rows of none
    # The dashboard's next lookup of the same tree gives a new object: same rows.
    assert names(cache, Supervisor(tmp_path / "service")) == ["row-2"]
    assert names(cache, Supervisor(tmp_path / "other")) == ["row-3"]
    assert rows.calls == 3


def test_the_body_is_the_one_jsonresponse_renders(hermes_home: HermesHome, rows: Rows) -> None:
    cache = RowsCache(hermes_home, ttl=60, max_age=60)
    tree: Any = Supervisor(hermes_home.root)  # duck-typed: the cache reads .scandir only
    snap = cache.snapshot(tree)
    expected = JSONResponse(profiles_document(tree, snap.rows)).body
    assert snap.profiles_json == expected
    assert b'"supervisor":"fake"' in expected and b'"uptime_text":"1h 2m"' in expected
    assert cache.snapshot(tree).profiles_json is snap.profiles_json


def test_a_profile_made_or_deleted_elsewhere_shows_on_the_next_read(
    hermes_home: HermesHome, rows: Rows
) -> None:
    """The CLI makes and deletes profiles without telling the dashboard: rows read
    before the profiles directory changed are not served, however fresh."""
    cache = RowsCache(hermes_home, ttl=60, max_age=60)
    hermes_home.profiles_dir.mkdir(parents=True, exist_ok=True)
    assert names(cache) == ["row-1"]
    assert names(cache) == ["row-1"] and rows.calls == 1
    before = hermes_home.profiles_dir.stat().st_mtime_ns
    made = hermes_home.profiles_dir / "coder"
    made.mkdir()
    if made.parent.stat().st_mtime_ns == before:  # a coarse clock: make the change visible
        os.utime(made.parent, ns=(before + 1, before + 1))
    assert cache.peek(None) is None
    assert names(cache) == ["row-2"]
    made.rmdir()
    os.utime(made.parent, ns=(before + 2, before + 2))
    assert names(cache) == ["row-3"] and rows.calls == 3
    # Unchanged since: the same rows again.
    assert names(cache) == ["row-3"] and rows.calls == 3
