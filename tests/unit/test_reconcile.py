"""Boot reconciler pieces: boot log lines and rotation, prior exit, stale files, stagger."""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path

import pytest

from hermes_container.errors import HermesError
from hermes_container.home import HermesHome
from hermes_container.reconcile import (
    BOOT_LOG_MAX,
    BootRecord,
    append_boot_log,
    prior_exit,
    reconcile,
    remove_stale_runtime_files,
    stagger_seconds,
)
from hermes_container.state import GatewayState


def test_boot_line_format() -> None:
    line = BootRecord("alpha", None, "started", "unknown").line("2026-01-02T03:04:05Z")
    assert line == (
        "2026-01-02T03:04:05Z profile=alpha prior_state=none action=started prior_exit=unknown"
    )
    line = BootRecord("b", "crashed", "skipped", "unclean").line("T")
    assert re.fullmatch(r"T profile=b prior_state=crashed action=skipped prior_exit=unclean", line)


@pytest.mark.parametrize(
    ("observed", "expected"),
    [
        ("stopped", "clean"),
        ("running", "unclean"),
        ("crashed", "unclean"),
        ("startup_failed", "unclean"),
        (None, "unknown"),
    ],
)
def test_prior_exit(observed: str | None, expected: str) -> None:
    assert prior_exit(GatewayState(gateway_state=observed)) == expected


def test_boot_log_rotates_keeping_one_copy(hermes_home: HermesHome) -> None:
    hermes_home.ensure_layout()
    log = hermes_home.boot_log
    log.write_text("x" * (BOOT_LOG_MAX + 1))
    append_boot_log(hermes_home, ["first"])
    assert log.read_text() == "first\n"
    old = log.with_name("container-boot.log.1")
    assert old.stat().st_size == BOOT_LOG_MAX + 1
    log.write_text("y" * (BOOT_LOG_MAX + 1))
    append_boot_log(hermes_home, ["second"])
    assert old.read_text().startswith("y") and log.read_text() == "second\n"
    assert sorted(p.name for p in log.parent.iterdir() if "boot" in p.name) == [
        "container-boot.log",
        "container-boot.log.1",
    ]


def test_stale_pid_and_lock_are_removed(tmp_path: Path) -> None:
    (tmp_path / "gateway.pid").write_text("999999\n")
    (tmp_path / "gateway.lock").write_text("")
    assert remove_stale_runtime_files(tmp_path)
    assert not (tmp_path / "gateway.pid").exists() and not (tmp_path / "gateway.lock").exists()


def test_held_lock_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "gateway.pid").write_text(f"{os.getpid()}\n")
    fd = os.open(tmp_path / "gateway.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert not remove_stale_runtime_files(tmp_path)
        assert (tmp_path / "gateway.pid").exists()
    finally:
        os.close(fd)


def test_stagger(monkeypatch: pytest.MonkeyPatch) -> None:
    assert stagger_seconds({}) == 0  # one pass: what bench_reconcile measures
    assert stagger_seconds({"HERMES_GATEWAY_STAGGER": "0.25"}) == 0.25
    with pytest.raises(HermesError, match="HERMES_GATEWAY_STAGGER"):
        stagger_seconds({"HERMES_GATEWAY_STAGGER": "soon"})
    with pytest.raises(HermesError):
        stagger_seconds({"HERMES_GATEWAY_STAGGER": "-1"})


def test_reconcile_without_a_tree_says_so(
    hermes_home: HermesHome, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HERMES_S6_SCANDIR", str(tmp_path / "nowhere"))
    with pytest.raises(HermesError, match="no live s6-svscan"):
        reconcile(hermes_home)


def test_default_desired_is_recorded_only_for_a_missing_file(tmp_path: Path) -> None:
    from hermes_container.reconcile import record_default_desired
    from hermes_container.state import read_state

    record_default_desired(tmp_path, read_state(tmp_path), "running")
    assert read_state(tmp_path).desired_state == "running"
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "gateway_state.json").write_text("{not json")
    record_default_desired(corrupt, read_state(corrupt, warn=False), "running")
    assert (corrupt / "gateway_state.json").read_text() == "{not json"
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    record_default_desired(nothing, read_state(nothing), None)
    assert not (nothing / "gateway_state.json").exists()
