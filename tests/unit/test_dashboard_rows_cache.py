"""RowsCache: concurrent readers share one computation; actions invalidate it."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from hermes_container.dashboard import read_model
from hermes_container.dashboard.read_model import RowsCache
from hermes_container.home import HermesHome


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []

    def fake_all_rows(home: HermesHome, manager: Any) -> list[Any]:
        calls.append(1)
        time.sleep(0.05)  # a supervisor round-trip per profile takes a while
        return [f"row-{len(calls)}"]

    monkeypatch.setattr(read_model, "all_rows", fake_all_rows)
    return calls


def test_concurrent_readers_share_one_computation(
    hermes_home: HermesHome, counted: list[int]
) -> None:
    cache = RowsCache(hermes_home, ttl=60)
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get(None))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(counted) == 1
    assert results == [["row-1"]] * 8


def test_invalidate_forces_a_fresh_read(hermes_home: HermesHome, counted: list[int]) -> None:
    cache = RowsCache(hermes_home, ttl=60)
    assert cache.get(None) == ["row-1"]
    assert cache.get(None) == ["row-1"]
    cache.invalidate()
    assert cache.get(None) == ["row-2"]


def test_expiry_and_manager_change(hermes_home: HermesHome, counted: list[int]) -> None:
    cache = RowsCache(hermes_home, ttl=0.0)
    cache.get(None)
    cache.get(None)
    assert len(counted) == 2  # ttl 0: never shared
    cache = RowsCache(hermes_home, ttl=60)
    cache.get(None)
    cache.get(object())  # type: ignore[arg-type]  # a different supervisor appeared
    assert len(counted) == 4
