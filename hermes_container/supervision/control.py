"""Start, stop or restart several profiles' gateways at once, within one deadline.

What `hermes gateway start|stop|restart [--all]` does in a live tree; it returns the
statuses and leaves reporting them to the caller.
"""

from __future__ import annotations

import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hermes_container.supervision.s6 import S6Manager
    from hermes_container.supervision.service_status import ServiceStatus

ACTIONS = ("start", "stop", "restart")


def act(
    manager: S6Manager, action: str, profiles: list[str], timeout: float
) -> list[ServiceStatus]:
    """Apply `action` to every profile, then wait until each is ready (start, restart)
    or down (stop), or `timeout` seconds have passed; one status per profile, in order.

    Every command goes out before the first wait, so the gateways come up (or down) side
    by side and `--all` takes about as long as the slowest one, not their sum.
    """
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {ACTIONS}, not {action!r}")
    old_pids: dict[str, int | None] = {}
    for profile in profiles:
        if action == "start":
            manager.start(profile)
        elif action == "stop":
            manager.stop(profile)
        else:
            # Ready again means ready with a new pid, not the one about to be stopped.
            old_pids[profile] = manager.status(profile).pid
            manager.restart(profile)
    deadline = time.monotonic() + timeout
    results = []
    for profile in profiles:
        remaining = max(0.0, deadline - time.monotonic())
        if action == "stop":
            results.append(manager.wait_down(profile, remaining))
        else:
            results.append(manager.wait_ready(profile, remaining, old_pid=old_pids.get(profile)))
    return results


def reached(action: str, status: ServiceStatus) -> bool:
    """Whether `status` is what `action` aimed for: down after a stop, else up and ready."""
    return (not status.up) if action == "stop" else (status.up and status.ready)
