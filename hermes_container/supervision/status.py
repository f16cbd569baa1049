"""One gateway slot's status: `s6-svstat`, the slot's history and the profile's files.

Kept apart from the S6Manager (which also builds and controls slots) so that
`hermes gateway status` loads only what reading a status needs.
"""

from __future__ import annotations

from hermes_container.errors import HermesError
from hermes_container.profiles import require_profile
from hermes_container.state import read_state
from hermes_container.supervision import history
from hermes_container.supervision.base import ServiceStatus
from hermes_container.supervision.scandir import slot_name
from hermes_container.supervision.svstat import svstat

MANAGER_NAME = "s6 (container supervisor)"  # shown as `Manager:` by `gateway status`

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

    from hermes_container.home import HermesHome
    from hermes_container.state import GatewayState
    from hermes_container.supervision.svstat import SvStat


def slot_status(home: HermesHome, scandir: Path | None, profile: str) -> ServiceStatus:
    """What the supervisor says of `gateway-<profile>`, merged with its state file; with
    no live tree (`scandir` None), what the files say."""
    profile_dir = require_profile(home, profile)
    state = read_state(profile_dir, warn=False)
    slot = None if scandir is None else scandir / slot_name(profile)
    if slot is None or not slot.is_dir():
        return ServiceStatus.unregistered(profile, state, gateway_port(profile_dir, state))
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
    )


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
