from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from hermes_container import fsutil


def test_atomic_write_replaces_and_sets_mode(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_text("old")
    fsutil.atomic_write_text(target, "new", mode=0o600)
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_failed_write_keeps_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")

    def boom(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        fsutil.atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_lock_excludes_a_second_holder(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    with fsutil.locked(lock):
        errors: list[BaseException] = []

        def try_lock() -> None:
            try:
                with fsutil.locked(lock, blocking=False):
                    pass
            except BaseException as exc:
                errors.append(exc)

        worker = threading.Thread(target=try_lock)
        worker.start()
        worker.join()
        assert len(errors) == 1 and isinstance(errors[0], BlockingIOError)
    with fsutil.locked(lock, blocking=False):
        pass
