"""Ask a profile's running gateway to re-read its settings (SIGHUP), with or without s6.

Stable API (the CLI, `config set` and the dashboard call it):

    reason = reload_gateway(home, profile)   # None: sent; else one line saying why not

and, to learn what the gateway made of it (it records each answer in gateway_state.json):

    before = reloads_answered(home, profile)  # read before sending
    ...send...
    state = wait_for_answer(home, profile, before, timeout)  # None: no answer in time
    state.config_rejected / state.restart_needed            # None and None: applied

Under a live s6 tree the signal goes through the slot's supervisor (`s6-svc -h`): it
knows the gateway's pid for certain. A gateway run in the foreground has no supervisor,
so the pid comes from gateway_state.json and is signalled only when it provably is this
profile's gateway: a `hermes ... gateway run` that holds the profile's gateway lock.
"""

from __future__ import annotations

import os
import signal
import time

from hermes_container.errors import HermesError
from hermes_container.home import GATEWAY_LOCK, GATEWAY_PID
from hermes_container.profiles import require_profile
from hermes_container.record import Record
from hermes_container.state import read_state
from hermes_container.supervision import get_manager
from hermes_container.supervision.service_status import LIVE_STATES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

    from hermes_container.home import HermesHome
    from hermes_container.state import GatewayState

ANSWER_POLL_S = 0.02


def reload_gateway(home: HermesHome, profile: str) -> str | None:
    """Send `profile`'s gateway a reload; None when sent, else why not (one line).

    Raises HermesError only for a profile that does not exist (a usage problem).
    """
    profile_dir = require_profile(home, profile)
    manager = get_manager(home)
    if manager is not None and manager.is_registered(profile):
        try:
            manager.reload(profile)
        except HermesError as exc:
            return exc.message
        return None
    reason = _signal_foreground(profile, profile_dir)
    if reason is None:
        return None
    if manager is None:
        return f"{reason} (and no supervised tree is running)"
    return f"{reason} (and profile {profile!r} has no slot in the supervised tree)"


def _signal_foreground(profile: str, profile_dir: Path) -> str | None:
    from hermes_container.gateway.lock import find_holder  # /proc reading, no server code

    state = read_state(profile_dir, warn=False)
    pid = state.pid if state.gateway_state in LIVE_STATES else None
    if pid is None:
        return f"no gateway of profile {profile!r} is running"
    # The lock holder is the one gateway of this profile; a pid reused by anything else
    # (or by another profile's gateway) never matches it.
    holder = find_holder(profile_dir / GATEWAY_LOCK, profile_dir / GATEWAY_PID)
    if holder != pid:
        return f"pid {pid} recorded for profile {profile!r} is not its running gateway"
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return f"the gateway of profile {profile!r} (pid {pid}) has just exited"
    except PermissionError:
        return f"not allowed to signal the gateway of profile {profile!r} (pid {pid})"
    return None


def reloads_answered(home: HermesHome, profile: str) -> int:
    """How many reloads `profile`'s gateway has answered so far (read before sending)."""
    return read_state(require_profile(home, profile), warn=False).reloads or 0


def wait_for_answer(
    home: HermesHome, profile: str, before: int, timeout: float
) -> GatewayState | None:
    """The state once the gateway answered a reload sent after `before` answers (applied:
    config_rejected None; refused: its reason), or None if it did not within `timeout`."""
    profile_dir = require_profile(home, profile)
    deadline = time.monotonic() + timeout
    while True:
        state = read_state(profile_dir, warn=False)
        if (state.reloads or 0) > before:
            return state
        if time.monotonic() >= deadline:
            return None
        time.sleep(ANSWER_POLL_S)


RELOAD_WAIT_S = 10.0
APPLIED = "applied without restart"


class ReloadAnswer(Record):
    """What a running gateway made of a change: `applied`, or one line saying why not
    (not `sent`, no answer, rejected); `restart_needed` names what only a restart applies."""

    __slots__ = ("applied", "detail", "restart_needed", "sent")

    def __init__(
        self, applied: bool, detail: str, restart_needed: str | None = None, *, sent: bool = True
    ) -> None:
        self.applied = applied
        self.detail = detail
        self.restart_needed = restart_needed
        self.sent = sent

    def to_json(self) -> dict[str, object]:
        return {"applied": self.applied, "detail": self.detail}


def reload_and_wait(home: HermesHome, profile: str, timeout: float = RELOAD_WAIT_S) -> ReloadAnswer:
    """Send `profile`'s gateway a reload and wait for its answer: the one sequence
    `hermes config`, `hermes profiles apply` and the dashboard use after a change."""
    before = reloads_answered(home, profile)
    reason = reload_gateway(home, profile)
    if reason is not None:
        detail = f"not reloaded: {reason}; it uses the new settings when it starts"
        return ReloadAnswer(False, detail, sent=False)
    state = wait_for_answer(home, profile, before, timeout)
    if state is None:
        return ReloadAnswer(
            False, f"reload sent, no answer within {timeout:g} s; see `hermes logs`"
        )
    if state.config_rejected:
        return ReloadAnswer(
            False, f"config rejected: {state.config_rejected} (the old settings serve)"
        )
    return ReloadAnswer(True, APPLIED, state.restart_needed)
