"""`gateway status --at TIME`: what every profile looked like then, from the ledger alone.

`project` is a pure function of the events it is given (oldest first): the same events
give the same answer however often they are replayed, and nothing else is read. It
folds each profile's supervision events into the fields `gateway status` shows, by the
same rules the live command applies to s6's word and the state file:

- registered: a `slot.registered` not followed by `slot.removed` (or the profile's
  deletion);
- up/pid: a `gateway.starting` not yet followed by an exit; ready once `gateway.ready`;
- restarts: unexpected exits since the slot was registered (its history starts empty);
- parked: a `gateway.parked` not followed by a new start;
- desired: the last `desired.changed` (or what the boot reconciler restored);
- observed state and exit code/reason: what the gateway and finish script record.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from hermes_container.events.model import LedgerEvent

EXIT_CONFIG = 78  # errors.EXIT_CONFIG, without importing the CLI's error module here


@dataclass
class Observed:
    profile: str
    registered: bool = False
    up: bool = False
    ready: bool = False
    pid: int | None = None
    uptime_s: float | None = None
    restarts: int | None = None
    port: int | None = None
    desired_state: str | None = None
    gateway_state: str | None = None
    exit_reason: str | None = None
    parked: bool = False
    exit_code: int | None = None
    exists: bool = True
    since: float | None = None  # when the running process started (for uptime)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("exists")
        data.pop("since")
        return data


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def apply(state: Observed, event: LedgerEvent) -> None:
    """Fold one event into a profile's state (the projection's one step)."""
    kind, data = event.kind, event.data
    if kind == "profile.created":
        state.exists = True
    elif kind == "profile.deleted":
        state.exists = state.registered = state.up = state.ready = False
        state.pid = None
    elif kind == "slot.registered":
        state.registered, state.restarts, state.parked = True, 0, False
    elif kind == "slot.removed":
        state.registered, state.up, state.ready, state.pid = False, False, False, None
        state.restarts = None
    elif kind in ("desired.changed", "boot.reconciled"):
        desired = data.get("to") if kind == "desired.changed" else data.get("desired")
        if isinstance(desired, str):
            state.desired_state = desired
    elif kind == "gateway.starting":
        state.up, state.ready, state.parked = True, False, False
        state.pid, state.port, state.since = _int(data.get("pid")), _int(data.get("port")), event.at
        state.gateway_state, state.exit_code, state.exit_reason = "starting", None, None
    elif kind == "gateway.ready":
        state.up, state.ready = True, True
        state.pid = _int(data.get("pid")) or state.pid
        state.port = _int(data.get("port")) or state.port
        state.gateway_state = "running"
    elif kind == "gateway.stopped":
        state.up = state.ready = False
        state.pid = None
        state.gateway_state, state.exit_code = "stopped", 0
        state.exit_reason = data.get("reason") if isinstance(data.get("reason"), str) else None
    elif kind == "gateway.exited":
        _exited(state, data)
    elif kind == "gateway.restarted":
        pass  # counted at its exit; the next `gateway.starting` is the new process
    elif kind == "gateway.parked":
        state.parked = True
        reason = data.get("reason")
        if isinstance(reason, str):
            state.exit_reason = reason


def _exited(state: Observed, data: dict[str, Any]) -> None:
    was_live = state.gateway_state in ("starting", "running", "stopping")
    state.up = state.ready = False
    state.pid = None
    code = _int(data.get("code"))
    if data.get("expected"):
        if was_live:  # the finish script covers a gateway that could not say `stopped`
            state.gateway_state, state.exit_code = "stopped", code
        return
    if state.restarts is not None:
        state.restarts += 1
    state.exit_code = code
    how = data.get("how") if isinstance(data.get("how"), str) else None
    if code == EXIT_CONFIG:
        state.gateway_state = "startup_failed"
    else:
        state.gateway_state = "crashed"
        state.exit_reason = f"{how}; restarting" if how else state.exit_reason


def project(events: Iterable[LedgerEvent], at: float) -> dict[str, Observed]:
    """Every profile's state at time `at`, from `events` in ledger (id) order; events
    after `at` are passed over (a spooled event may carry an earlier time than ids
    before it)."""
    states: dict[str, Observed] = {}
    for event in events:
        if event.at > at or event.profile is None:
            continue
        state = states.get(event.profile)
        if state is None:
            state = states[event.profile] = Observed(event.profile)
        apply(state, event)
    for state in states.values():
        state.uptime_s = round(at - state.since, 3) if state.up and state.since else None
    return {name: s for name, s in states.items() if s.exists}
