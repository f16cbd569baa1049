"""The finish decision: clean stop, restart, park on exit 78, park on a crash loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hermes_container.commands.supervision import slot_finish
from hermes_container.home import HermesHome
from hermes_container.profiles import create_profile
from hermes_container.state import read_state, write_desired
from hermes_container.supervision import finish as finish_mod
from hermes_container.supervision import history
from hermes_container.supervision.finish import (
    PARK,
    describe_exit,
    finish,
    last_log_line,
    loop_limits,
    settle,
)
from hermes_container.supervision.svstat import SvStat


def _svstat(wanted_up: bool) -> SvStat:
    return SvStat(
        up=False,
        wanted_up=wanted_up,
        normally_up=True,
        ready=False,
        paused=False,
        pid=None,
        exit_code=1,
        signal=None,
        updown_for=0.0,
        finishing=True,
    )


@pytest.fixture
def slot(tmp_path: Path, hermes_home: HermesHome, monkeypatch: pytest.MonkeyPatch) -> Path:
    create_profile(hermes_home, "alpha")
    write_desired(hermes_home.profile_dir("alpha"), "running")
    slot_dir = tmp_path / "gateway-alpha"
    (slot_dir / "data").mkdir(parents=True)
    monkeypatch.setattr(finish_mod, "svstat", lambda path: _svstat(True))
    monkeypatch.delenv("HERMES_CRASH_LOOP_MAX", raising=False)
    monkeypatch.delenv("HERMES_CRASH_LOOP_WINDOW", raising=False)
    return slot_dir


def _state(home: HermesHome) -> dict[str, object]:
    return read_state(home.profile_dir("alpha")).to_json()


def test_crash_is_recorded_and_restarted(slot: Path, hermes_home: HermesHome) -> None:
    assert finish(hermes_home, "alpha", 256, 9, slot, 1000.0) == 0
    state = _state(hermes_home)
    assert state["gateway_state"] == "crashed" and state["exit_code"] == 137
    assert "SIGKILL" in str(state["exit_reason"]) and state["desired_state"] == "running"
    assert history.read_history(slot).restarts == 1
    assert history.parked_reason(slot) is None


def test_exit_78_parks_with_the_gateways_last_words(slot: Path, hermes_home: HermesHome) -> None:
    log_dir = hermes_home.gateway_log_dir("alpha")
    log_dir.mkdir(parents=True)
    (log_dir / "current").write_text(
        "2026-01-02 03:04:05.123456789  starting\n"
        "2026-01-02 03:04:05.223456789  hermes: error: config.yaml: model.name is missing\n"
    )
    assert finish(hermes_home, "alpha", 78, 0, slot, 1000.0) == PARK
    state = _state(hermes_home)
    assert state["gateway_state"] == "startup_failed" and state["exit_code"] == 78
    assert state["exit_reason"] == "config.yaml: model.name is missing"
    assert "model.name" in str(history.parked_reason(slot))
    assert state["desired_state"] == "running"


def test_crash_loop_parks(
    slot: Path, hermes_home: HermesHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HERMES_CRASH_LOOP_MAX", "3")
    monkeypatch.setenv("HERMES_CRASH_LOOP_WINDOW", "10")
    assert finish(hermes_home, "alpha", 1, 0, slot, 100.0) == 0
    assert finish(hermes_home, "alpha", 1, 0, slot, 120.0) == 0  # the first is out of window
    assert finish(hermes_home, "alpha", 1, 0, slot, 125.0) == 0
    assert finish(hermes_home, "alpha", 1, 0, slot, 126.0) == PARK
    state = _state(hermes_home)
    assert state["gateway_state"] == "crashed"
    assert str(state["exit_reason"]).startswith("crash loop: 3 crashes in 10s")
    assert history.read_history(slot).restarts == 4


def test_asked_for_stop_is_not_a_crash(
    slot: Path, hermes_home: HermesHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(finish_mod, "svstat", lambda path: _svstat(False))
    from hermes_container.state import write_observed

    write_observed(hermes_home.profile_dir("alpha"), gateway_state="running", pid=42)
    assert finish(hermes_home, "alpha", 256, 15, slot, 1000.0) == 0
    state = _state(hermes_home)
    assert state["gateway_state"] == "stopped" and state["pid"] is None
    assert history.read_history(slot).restarts == 0


def test_asked_for_restart_is_not_a_crash(slot: Path, hermes_home: HermesHome) -> None:
    history.request_restart(slot)
    assert finish(hermes_home, "alpha", 0, 0, slot, __import__("time").time()) == 0
    assert history.read_history(slot).restarts == 0
    # The request is used up: the next death counts.
    assert finish(hermes_home, "alpha", 1, 0, slot, 1000.0) == 0
    assert history.read_history(slot).restarts == 1


def test_main_never_fails(
    slot: Path, hermes_home: HermesHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(path: str) -> SvStat:
        raise RuntimeError("s6-svstat went away")

    monkeypatch.setattr(finish_mod, "svstat", boom)
    assert slot_finish("alpha", "1", "0", str(slot)) == 0
    assert slot_finish("alpha", "x", "y", str(slot)) == 0


def test_settle_returns_the_message_and_the_command_prints_it(
    slot: Path, hermes_home: HermesHome, capsys: pytest.CaptureFixture[str]
) -> None:
    parked = "hermes: gateway 'alpha' parked: startup_failed: configuration error (exit 78)"
    assert settle("alpha", 78, 0, slot) == (PARK, parked)
    assert settle("alpha", 1, 0, slot)[1] is None  # a crash to restart: nothing to say
    assert capsys.readouterr() == ("", "")  # the library prints nothing

    assert slot_finish("alpha", "78", "0", str(slot)) == PARK
    assert slot_finish("alpha", "x", "y", str(slot)) == 0
    assert capsys.readouterr().err.splitlines() == [
        parked,
        "hermes _slot-finish: bad exit/signal 'x' 'y'",
    ]


def test_loop_limits_fall_back_on_bad_values() -> None:
    assert loop_limits({}) == (5, 60.0)
    assert loop_limits({"HERMES_CRASH_LOOP_MAX": "2", "HERMES_CRASH_LOOP_WINDOW": "5"}) == (2, 5.0)
    assert loop_limits({"HERMES_CRASH_LOOP_MAX": "zero", "HERMES_CRASH_LOOP_WINDOW": "-1"}) == (
        5,
        60.0,
    )


def test_describe_exit() -> None:
    assert describe_exit(256, 9) == (137, "killed by SIGKILL")
    assert describe_exit(3, 0) == (3, "exited with status 3")


def test_last_log_line_missing_file(tmp_path: Path) -> None:
    assert last_log_line(tmp_path / "nope") is None


def test_history_file_survives_garbage(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "history.json").write_text("{broken")
    assert history.read_history(tmp_path).restarts == 0
    history.write_history(tmp_path, history.History(restarts=2, deaths=[1.0]))
    assert json.loads((tmp_path / "data" / "history.json").read_text())["restarts"] == 2
