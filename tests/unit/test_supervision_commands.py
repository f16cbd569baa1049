"""`hermes gateway ...` and friends outside a supervised tree, and their formatting."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hermes_container.commands.gateway import render_status
from hermes_container.home import HermesHome
from hermes_container.supervision import get_manager
from hermes_container.supervision.logs import log_files
from hermes_container.supervision.scandir import resolve_scandir, svscan_alive
from hermes_container.supervision.service_status import ServiceStatus
from hermes_container.tail import last_lines
from hermes_container.timeutil import format_duration
from tests.conftest import run_hermes


@pytest.fixture
def no_tree(hermes_home: HermesHome, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    scandir = tmp_path / "service"
    monkeypatch.setenv("HERMES_S6_SCANDIR", str(scandir))
    return scandir


def test_no_manager_without_a_live_svscan(hermes_home: HermesHome, no_tree: Path) -> None:
    assert get_manager(hermes_home) is None
    no_tree.mkdir()
    (no_tree / ".s6-svscan").mkdir()
    import os

    os.mkfifo(no_tree / ".s6-svscan" / "control")  # a FIFO nobody reads: a dead svscan
    assert not svscan_alive(no_tree)
    assert get_manager(hermes_home) is None


def test_scandir_resolution(hermes_home: HermesHome) -> None:
    assert resolve_scandir(hermes_home, {}) == hermes_home.root / "run" / "service"
    assert resolve_scandir(hermes_home, {"HERMES_S6_SCANDIR": "/run/service"}) == Path(
        "/run/service"
    )


def test_start_outside_a_tree_explains_and_records_intent(
    hermes_home: HermesHome, no_tree: Path
) -> None:
    run_hermes("profile", "create", "alpha")
    proc = run_hermes("-p", "alpha", "gateway", "start")
    assert proc.returncode == 1
    assert "hermes supervise" in proc.stderr and proc.stderr.count("\n") == 1
    state = json.loads((hermes_home.profile_dir("alpha") / "gateway_state.json").read_text())
    assert state["desired_state"] == "running"


def test_status_outside_a_tree(hermes_home: HermesHome, no_tree: Path) -> None:
    run_hermes("profile", "create", "alpha")
    proc = run_hermes("-p", "alpha", "gateway", "status")
    assert proc.returncode == 0
    assert "Manager: none (no supervised tree is running)" in proc.stdout.splitlines()
    proc = run_hermes("gateway", "status", "--all", "--json")
    data = json.loads(proc.stdout)
    assert [d["profile"] for d in data] == ["default", "alpha"]


def test_stop_outside_a_tree_records_intent(hermes_home: HermesHome, no_tree: Path) -> None:
    proc = run_hermes("gateway", "stop")
    assert proc.returncode == 0 and "stopped" in proc.stdout


def test_hidden_commands_are_not_in_help() -> None:
    proc = run_hermes("--help")
    assert "_slot-finish" not in proc.stdout
    for name in ("reconcile", "supervise", "logs"):
        assert name in proc.stdout


def test_logs(hermes_home: HermesHome) -> None:
    run_hermes("profile", "create", "alpha")
    proc = run_hermes("-p", "alpha", "logs")
    assert proc.returncode == 1 and "no logs yet" in proc.stderr
    log_dir = hermes_home.gateway_log_dir("alpha")
    log_dir.mkdir(parents=True)
    (log_dir / "@400000006b06ca0b115e79ef.s").write_text("old1\nold2\n")
    (log_dir / "current").write_text("new1\nnew2\n")
    assert [p.name for p in log_files(log_dir)][-1] == "current"
    assert last_lines(log_files(log_dir), 3) == ["old2", "new1", "new2"]
    proc = run_hermes("logs", "-p", "alpha", "--lines", "3")
    assert proc.stdout.splitlines() == ["old2", "new1", "new2"]
    assert run_hermes("logs", "-p", "alpha", "--lines", "-1").returncode == 2


def test_render_status() -> None:
    status = ServiceStatus(
        profile="a",
        registered=True,
        up=False,
        ready=False,
        pid=None,
        uptime_s=None,
        restarts=2,
        port=8643,
        desired_state="running",
        gateway_state="startup_failed",
        exit_reason="model.name is missing",
        parked=True,
    )
    text = render_status(status, "s6 (container supervisor)")
    assert "Manager: s6 (container supervisor)" in text.splitlines()
    assert "State:     parked (startup_failed)" in text
    assert "Reason:    model.name is missing" in text and "Restarts:  2" in text


def test_format_duration() -> None:
    assert format_duration(None) == "-"
    assert format_duration(5) == "5s"
    assert format_duration(3725) == "1h 2m 5s"
    assert format_duration(90061) == "1d 1h 1m 1s"


@contextlib.contextmanager
def _log_writer(tmp_path: Path, *, rotate: bool) -> Iterator[Path]:
    """A `current` holding "before", then (in a thread, 0.3 s apart) "appended" and, with
    `rotate`, an s6-log rotation whose new `current` starts with "rotated"."""
    current = tmp_path / "current"
    current.write_text("before\n")

    def writer() -> None:
        time.sleep(0.3)
        with open(current, "a") as fh:
            fh.write("appended\n")
        if rotate:
            time.sleep(0.3)
            current.rename(tmp_path / "@4000.s")
            current.write_text("rotated\n")

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        yield current
    finally:
        thread.join()


def test_follow_prints_appended_lines_across_rotation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hermes_container.commands.supervision import print_followed

    with _log_writer(tmp_path, rotate=True) as current:
        print_followed(current, stop_after=1.5)
    assert capsys.readouterr().out == "appended\nrotated\n"


def test_follow_yields_what_is_appended_and_prints_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hermes_container.supervision.logs import follow

    with _log_writer(tmp_path, rotate=False) as current:
        assert "".join(follow(current, stop_after=1.0)) == "appended\n"
    assert capsys.readouterr() == ("", "")


def test_recent_lines_returns_the_last_lines(tmp_path: Path) -> None:
    from hermes_container.errors import HermesError
    from hermes_container.supervision.logs import recent_lines

    with pytest.raises(HermesError, match="no logs yet"):
        recent_lines(tmp_path, lines=5)
    assert recent_lines(tmp_path, lines=5, following=True) == []
    (tmp_path / "@4000.s").write_text("old1\nold2\n")
    (tmp_path / "current").write_text("new1\n")
    assert recent_lines(tmp_path, lines=2) == ["old2", "new1"]
    assert recent_lines(tmp_path, lines=0) == []


class _Recorder:
    """Records the calls `act` makes; every gateway comes up (or down) at once."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def _status(self, profile: str, up: bool, pid: int | None = None) -> ServiceStatus:
        return ServiceStatus(profile, True, up, up, pid, None, 0, None, None, None)

    def start(self, profile: str) -> None:
        self.calls.append(("start", profile))

    def stop(self, profile: str) -> None:
        self.calls.append(("stop", profile))

    def restart(self, profile: str) -> None:
        self.calls.append(("restart", profile))

    def status(self, profile: str) -> ServiceStatus:
        self.calls.append(("status", profile))
        return self._status(profile, True, pid=10)

    def wait_ready(self, profile: str, timeout: float, *, old_pid: int | None) -> ServiceStatus:
        self.calls.append(("wait_ready", f"{profile} old={old_pid}"))
        return self._status(profile, True, pid=11)

    def wait_down(self, profile: str, timeout: float) -> ServiceStatus:
        self.calls.append(("wait_down", profile))
        return self._status(profile, False)


def test_act_issues_every_command_before_waiting() -> None:
    from hermes_container.supervision.control import act, reached

    manager = _Recorder()
    results = act(manager, "restart", ["a", "b"], 1.0)  # type: ignore[arg-type]
    assert manager.calls == [
        ("status", "a"),
        ("restart", "a"),
        ("status", "b"),
        ("restart", "b"),
        ("wait_ready", "a old=10"),
        ("wait_ready", "b old=10"),
    ]
    assert all(reached("restart", s) for s in results)
    manager = _Recorder()
    results = act(manager, "stop", ["a", "b"], 1.0)  # type: ignore[arg-type]
    assert [c[0] for c in manager.calls] == ["stop", "stop", "wait_down", "wait_down"]
    assert all(reached("stop", s) for s in results) and not reached("start", results[0])
    with pytest.raises(ValueError):
        act(manager, "explode", ["a"], 1.0)  # type: ignore[arg-type]
