"""A bare `hermes gateway run` inside a live tree becomes "start the slot, then wait".

Old images ran `gateway run` as the container's command; under s6 the slot owns the
gateway, so we start it there and stay in the foreground until SIGTERM/SIGINT. That
signal (e.g. `docker stop`) leaves the desired state alone: the next boot restores it.
"""

from __future__ import annotations

import signal

from hermes_container.home import HermesHome
from hermes_container.supervision import get_manager
from hermes_container.supervision.commands import render_status

START_WAIT = 30.0


def redirect_to_slot(profile: str) -> int | None:
    """Start `profile`'s slot and wait for a stop signal; None when no tree is live."""
    home = HermesHome.from_env()
    manager = get_manager(home)
    if manager is None:
        return None
    watched = (signal.SIGTERM, signal.SIGINT)
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    try:
        print(
            f"hermes: a supervised tree is running; starting gateway {profile!r} in its slot "
            "(use --no-supervise to run it here instead)",
            flush=True,
        )
        status = manager.start(profile, wait=START_WAIT)
        print(render_status(status, manager.name), flush=True)
        signal.sigwait(watched)
        return 0
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, watched)
