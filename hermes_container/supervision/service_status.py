"""A profile's gateway status: the one model (ServiceStatus) and the one way to read it.

`gateway_status` merges the supervisor's status (svstat.py: supervise/status, read as
s6-svstat reads it), the slot's history and the profile's files. Kept
apart from the S6Manager (which also builds and controls slots) so that
`hermes gateway status` loads only what reading a status needs.
"""

from __future__ import annotations

import time

from hermes_container.errors import HermesError
from hermes_container.procutil import pid_alive
from hermes_container.profiles import require_profile
from hermes_container.record import Record
from hermes_container.state import read_state
from hermes_container.supervision.scandir import slot_name

MANAGER_NAME = "s6 (container supervisor)"  # shown as `Manager:` by `gateway status`
# Observed states in which the gateway process still exists (its pid is recorded).
LIVE_STATES = frozenset({"starting", "running", "stopping"})

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from hermes_container.home import HermesHome
    from hermes_container.state import GatewayState
    from hermes_container.supervision.svstat import SvStat


class ServiceStatus(Record):
    """One profile's gateway: what its supervisor (if any) sees, merged with its state
    file. The CLI, the dashboard and the s6 backend all report this one model, and
    `gateway_status` below is the one place it is read."""

    __slots__ = (
        "config_rejected",
        "desired_state",
        "exit_code",
        "exit_reason",
        "gateway_state",
        "parked",
        "pid",
        "port",
        "profile",
        "ready",
        "registered",
        "restart_needed",
        "restarts",
        "up",
        "uptime_s",
        "wanted_up",
    )

    def __init__(
        self,
        profile: str,
        registered: bool,  # a slot exists in the live tree's scandir
        up: bool,  # the gateway process is running (see gateway_status for how we know)
        ready: bool,  # the gateway signalled readiness (port accepts connections)
        pid: int | None,
        uptime_s: float | None,
        restarts: int | None,
        port: int | None,
        desired_state: str | None,
        gateway_state: str | None,
        exit_reason: str | None = None,
        parked: bool = False,  # finish exited 125: no restart until an explicit start
        exit_code: int | None = None,
        wanted_up: bool | None = None,  # what the supervisor is trying to do right now
        # A running gateway's last reload: why it refused the files (the older settings
        # still serve), and a change that only a restart applies (port/host).
        config_rejected: str | None = None,
        restart_needed: str | None = None,
    ) -> None:
        self.profile = profile
        self.registered = registered
        self.up = up
        self.ready = ready
        self.pid = pid
        self.uptime_s = uptime_s
        self.restarts = restarts
        self.port = port
        self.desired_state = desired_state
        self.gateway_state = gateway_state
        self.exit_reason = exit_reason
        self.parked = parked
        self.exit_code = exit_code
        self.wanted_up = wanted_up
        self.config_rejected = config_rejected
        self.restart_needed = restart_needed

    def to_json(self) -> dict[str, Any]:
        return self.to_dict()


def gateway_status(home: HermesHome, scandir: Path | None, profile: str) -> ServiceStatus:
    """The status of `profile`'s gateway, with or without a live tree (`scandir` None).

    The one rule, for `gateway status`, the dashboard and the s6 backend alike:
      - when `gateway-<profile>` is a slot in the live tree, its supervisor's word
        (what `s6-svstat` would print: svstat.svstat) says whether it is up and ready,
        and which pid;
      - otherwise (no live tree, or a profile without a slot) only the state file can
        tell, and a pid it records for a live state (starting, running, stopping) that
        still exists is a running gateway (say `gateway run --no-supervise`): up, ready
        once it recorded `running` (it does so when its port accepts, the moment it
        would signal readiness), uptime since its `started_at`. A pid reused since
        can fool this; a supervised slot has the supervisor's word instead.
    The rest (desired and observed state, reason, port) always comes from the files;
    what the last reload left (config_rejected, restart_needed) only while it is up: the
    next start reads the files afresh.
    """
    profile_dir = require_profile(home, profile)
    state = read_state(profile_dir, warn=False)
    slot = None if scandir is None else scandir / slot_name(profile)
    if slot is None or not slot.is_dir():
        return _unsupervised_status(profile, profile_dir, state)
    # Only a slot needs these (and json with them): imported here, they stay off
    # `gateway status` outside a tree.
    from hermes_container.supervision import history
    from hermes_container.supervision.svstat import svstat

    st: SvStat | None
    try:
        st = svstat(str(slot))
    except (HermesError, ValueError):
        st = None  # slot present but not (yet) supervised
    up = bool(st and st.up)
    parked = not up and history.parked_reason(slot) is not None
    return ServiceStatus(
        profile=profile,
        registered=True,
        up=up,
        ready=bool(st and st.up and st.ready),
        pid=st.pid if st and st.up else None,
        uptime_s=st.updown_for if st and st.up else None,
        restarts=history.read_history(slot).restarts,
        port=gateway_port(profile_dir, state, up=up),
        desired_state=state.desired_state,
        gateway_state=state.gateway_state,
        exit_reason=state.exit_reason,
        parked=parked,
        exit_code=state.exit_code if not up else None,
        wanted_up=st.wanted_up if st else None,
        config_rejected=state.config_rejected if up else None,
        restart_needed=state.restart_needed if up else None,
    )


def _unsupervised_status(profile: str, profile_dir: Path, state: GatewayState) -> ServiceStatus:
    pid = state.pid if state.gateway_state in LIVE_STATES else None
    up = pid_alive(pid)
    return ServiceStatus(
        profile=profile,
        registered=False,
        up=up,
        ready=up and state.gateway_state == "running",
        pid=pid if up else None,
        uptime_s=_uptime(state.started_at) if up else None,
        restarts=None,
        port=gateway_port(profile_dir, state, up=up),
        desired_state=state.desired_state,
        gateway_state=state.gateway_state,
        exit_reason=state.exit_reason,
        exit_code=state.exit_code if not up else None,
        config_rejected=state.config_rejected if up else None,
        restart_needed=state.restart_needed if up else None,
    )


def _uptime(started_at: str | None) -> float | None:
    from hermes_container.timeutil import parse_iso  # datetime: only for a live gateway

    started = parse_iso(started_at) if started_at else None
    return None if started is None else max(0.0, time.time() - started.timestamp())


def gateway_port(profile_dir: Path, state: GatewayState, *, up: bool = False) -> int | None:
    """A live gateway's own record of its port; else the profile's config."""
    from hermes_container.config import read_port

    if up and state.port is not None:
        return state.port
    try:
        port = read_port(profile_dir)
    except HermesError:
        port = None
    return port if port is not None else state.port
