"""`events.replay.project`: the pure fold behind `gateway status --at TIME`. Each rule on
its own, then the properties: same input -> same output, the input untouched, events
after the moment passed over even when a spooled one sits out of time order."""

from __future__ import annotations

import copy
from typing import Any

from hermes_container.events.model import LedgerEvent
from hermes_container.events.replay import Observed, project

T0 = 1_800_000_000.0


class Script:
    """Events in ledger order: ids count up, times T0 + the given offset."""

    def __init__(self) -> None:
        self.events: list[LedgerEvent] = []

    def add(self, offset: float, kind: str, profile: str | None = "p", **data: Any) -> Script:
        self.events.append(
            LedgerEvent(len(self.events) + 1, T0 + offset, kind, profile, "t", dict(data))
        )
        return self

    def at(self, offset: float, profile: str = "p") -> Observed:
        return project(self.events, T0 + offset)[profile]


def running(pid: int = 100, port: int = 8642) -> Script:
    """A registered slot whose gateway started at +1 and was ready at +2."""
    return (
        Script()
        .add(0, "slot.registered")
        .add(0.5, "desired.changed", **{"from": None, "to": "running"})
        .add(1, "gateway.starting", pid=pid, port=port)
        .add(2, "gateway.ready", pid=pid, port=port)
    )


def test_slot_registered_starts_an_empty_history() -> None:
    state = Script().add(0, "slot.registered").at(1)
    assert (state.registered, state.restarts, state.up, state.ready, state.parked) == (
        True,
        0,
        False,
        False,
        False,
    )
    assert state.pid is None and state.uptime_s is None


def test_starting_then_ready() -> None:
    script = running(pid=321, port=9001)
    starting = script.at(1.5)
    assert (starting.up, starting.ready, starting.pid, starting.port) == (True, False, 321, 9001)
    assert starting.gateway_state == "starting"
    assert starting.uptime_s == 0.5
    ready = script.at(10)
    assert (ready.up, ready.ready, ready.pid, ready.gateway_state) == (True, True, 321, "running")
    assert ready.uptime_s == 9.0  # since the process started, not since it was ready
    assert ready.exit_code is None and ready.exit_reason is None


def test_unexpected_exit_counts_a_restart_and_says_how() -> None:
    script = running().add(
        5, "gateway.exited", expected=False, code=137, signal=9, how="killed by SIGKILL"
    )
    crashed = script.at(6)
    assert (crashed.up, crashed.ready, crashed.pid) == (False, False, None)
    assert crashed.restarts == 1
    assert (crashed.gateway_state, crashed.exit_code) == ("crashed", 137)
    assert crashed.exit_reason == "killed by SIGKILL; restarting"
    assert crashed.uptime_s is None
    script.add(5.1, "gateway.restarted", restarts=1)
    script.add(5.5, "gateway.starting", pid=200, port=8642).add(6, "gateway.ready", pid=200)
    again = script.at(7)
    assert (again.up, again.ready, again.pid, again.restarts) == (True, True, 200, 1)
    assert (again.gateway_state, again.exit_code, again.exit_reason) == ("running", None, None)
    assert again.uptime_s == 1.5


def test_expected_exit_is_not_a_restart() -> None:
    # The gateway said `stopped` itself; the finish script's expected exit changes nothing.
    script = (
        running()
        .add(5, "gateway.stopped", reason="SIGTERM")
        .add(5.1, "gateway.exited", expected=True, code=0, signal=None, how="exited with status 0")
    )
    state = script.at(6)
    assert (state.up, state.ready, state.pid, state.restarts) == (False, False, None, 0)
    assert (state.gateway_state, state.exit_code, state.exit_reason) == ("stopped", 0, "SIGTERM")
    # Killed on request before it could say `stopped`: the finish script's word covers it.
    killed = running().add(5, "gateway.exited", expected=True, code=137, signal=9).at(6)
    assert (killed.gateway_state, killed.exit_code, killed.restarts) == ("stopped", 137, 0)
    assert not killed.up


def test_code_78_is_a_startup_failure_then_parked() -> None:
    script = (
        Script()
        .add(0, "slot.registered")
        .add(1, "gateway.starting", pid=5, port=8642)
        .add(1.5, "gateway.exited", expected=False, code=78, how="exited with status 78")
        .add(1.6, "gateway.parked", reason="startup_failed: bad model.base_url")
    )
    failed = script.at(1.55)
    assert (failed.gateway_state, failed.exit_code, failed.restarts) == ("startup_failed", 78, 1)
    assert not failed.parked
    parked = script.at(2)
    assert parked.parked and not parked.up
    assert parked.gateway_state == "startup_failed"
    assert parked.exit_reason == "startup_failed: bad model.base_url"
    # A new start (someone fixed the config and started it) unparks.
    script.add(3, "gateway.starting", pid=6, port=8642)
    assert not script.at(4).parked


def test_crash_loop_park_keeps_crashed_with_the_loop_reason() -> None:
    script = running().add(5, "gateway.exited", expected=False, code=1, how="exited with status 1")
    script.add(
        5.1, "gateway.parked", reason="crash loop: 5 crashes in 60s (last: exited with status 1)"
    )
    state = script.at(6)
    assert state.parked and state.gateway_state == "crashed" and state.exit_code == 1
    assert state.exit_reason == "crash loop: 5 crashes in 60s (last: exited with status 1)"


def test_stopped_on_request() -> None:
    state = running().add(5, "gateway.stopped", reason="stopped on request").at(6)
    assert (state.up, state.ready, state.pid) == (False, False, None)
    assert (state.gateway_state, state.exit_code) == ("stopped", 0)
    assert state.exit_reason == "stopped on request"
    assert state.port == 8642  # the last port it served on


def test_slot_removed_forgets_supervision_but_not_desired() -> None:
    state = running().add(5, "slot.removed").at(6)
    assert (state.registered, state.up, state.ready, state.pid, state.restarts) == (
        False,
        False,
        False,
        None,
        None,
    )
    assert state.desired_state == "running"
    # Registered again: a fresh restart count.
    script = running().add(4, "gateway.exited", expected=False, code=1, how="x")
    script.add(5, "slot.removed").add(6, "slot.registered")
    assert script.at(7).restarts == 0


def test_desired_follows_the_last_change_and_the_boot_reconciler() -> None:
    script = Script().add(0, "desired.changed", **{"from": None, "to": "running"})
    assert script.at(1).desired_state == "running"
    script.add(2, "desired.changed", **{"from": "running", "to": "stopped"})
    assert script.at(1).desired_state == "running"
    assert script.at(3).desired_state == "stopped"
    script.add(4, "boot.reconciled", desired="running", action="start")
    assert script.at(5).desired_state == "running"
    script.add(6, "desired.changed", **{"from": "running", "to": 5})  # not a state: ignored
    assert script.at(7).desired_state == "running"


def test_profile_deleted_disappears_and_comes_back_when_created() -> None:
    script = running().add(5, "profile.deleted")
    assert "p" in project(script.events, T0 + 4)
    assert "p" not in project(script.events, T0 + 6)
    script.add(7, "profile.created")
    state = script.at(8)
    assert (state.registered, state.up, state.pid) == (False, False, None)


def test_profiles_are_kept_apart_and_profileless_events_ignored() -> None:
    script = running()
    script.add(3, "slot.registered", profile="q").add(3.5, "profile.created", profile=None)
    script.add(4, "gateway.exited", profile="q", expected=False, code=1, how="x")
    states = project(script.events, T0 + 5)
    assert sorted(states) == ["p", "q"]
    assert states["p"].restarts == 0 and states["p"].ready
    assert states["q"].restarts == 1 and not states["q"].up


def test_events_after_the_moment_are_ignored_even_out_of_time_order() -> None:
    # A spooled exit carries its own (earlier) time behind a later id; an event whose
    # time lies after the moment never counts, wherever it sits in the ledger.
    script = running()
    script.add(30, "gateway.stopped", reason="later")  # id 5, after the moment
    script.add(4, "gateway.exited", expected=False, code=137, how="killed by SIGKILL")  # id 6
    state = script.at(10)
    assert state.gateway_state == "crashed" and state.restarts == 1 and not state.up
    assert state.exit_reason == "killed by SIGKILL; restarting"
    assert script.at(3.9).ready  # before the exit's own time: still running
    assert script.at(29).exit_reason == "killed by SIGKILL; restarting"


def test_projection_is_pure() -> None:
    script = running().add(5, "gateway.exited", expected=False, code=137, signal=9, how="k")
    script.add(5.1, "gateway.restarted", restarts=1).add(6, "gateway.starting", pid=7, port=1)
    script.add(6.5, "gateway.ready", pid=7, port=1).add(8, "slot.registered", profile="q")
    before = copy.deepcopy(script.events)
    first = {name: s.to_json() for name, s in project(script.events, T0 + 9).items()}
    second = {name: s.to_json() for name, s in project(script.events, T0 + 9).items()}
    assert first == second
    assert script.events == before  # the input is untouched
    # A generator (what `gateway status --at` passes) gives the same answer as a list.
    third = {n: s.to_json() for n, s in project(iter(copy.deepcopy(before)), T0 + 9).items()}
    assert third == first
    # Mutating one answer does not leak into the next.
    project(script.events, T0 + 9)["p"].restarts = 99
    assert project(script.events, T0 + 9)["p"].restarts == 1
    assert first["p"] == {
        "profile": "p",
        "registered": True,
        "up": True,
        "ready": True,
        "pid": 7,
        "uptime_s": 3.0,
        "restarts": 1,
        "port": 1,
        "desired_state": "running",
        "gateway_state": "running",
        "exit_reason": None,
        "parked": False,
        "exit_code": None,
    }


def test_no_events_no_profiles() -> None:
    assert project([], T0) == {}
    assert project(Script().add(5, "slot.registered").events, T0 + 1) == {}
