"""A profile's slot as the profile comes and goes: the one path for the CLI and the dashboard.

After `create_profile` wrote the files, `bring_up` gives the new profile its slot (down,
or started and waited for) when a tree runs, or records the wish to run for the next
`hermes supervise` / container start when none does. `remove` takes the slot down and
away before the files go, so no gateway outlives its directory.
"""

from __future__ import annotations

from hermes_container.errors import HermesError
from hermes_container.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

    from hermes_container.home import HermesHome
    from hermes_container.supervision.protocol import ServiceManager

START_WAIT_S = 15.0


class BroughtUp(Record):
    """What became of a new profile's gateway.

    outcome: `running` (pid, port), `not_ready` (problem: why), `start_failed`
    (problem), `registered` (its slot exists, down), `register_failed` (problem),
    `deferred` (no tree runs; desired `running` recorded), `files_only` (no tree runs,
    no start asked).
    """

    __slots__ = ("outcome", "pid", "port", "problem")

    def __init__(
        self,
        outcome: str,
        *,
        pid: int | None = None,
        port: int | None = None,
        problem: str | None = None,
    ) -> None:
        self.outcome = outcome
        self.pid = pid
        self.port = port
        self.problem = problem

    @property
    def running(self) -> bool:
        return self.outcome == "running"


def bring_up(
    home: HermesHome,
    manager: ServiceManager | None,
    name: str,
    *,
    start: bool,
    wait: float = START_WAIT_S,
) -> BroughtUp:
    """Give the freshly created profile `name` its slot, started when `start`."""
    if manager is None:
        if not start:
            return BroughtUp("files_only")
        from hermes_container.events.desired import set_desired

        set_desired(home, name, "running")  # the next supervisor start brings it up
        return BroughtUp("deferred")
    if not start:
        problem = manager.register([name]).get(name)
        if problem is not None:
            return BroughtUp("register_failed", problem=problem)
        return BroughtUp("registered")
    try:
        status = manager.start(name, wait=wait)
    except HermesError as exc:
        return BroughtUp("start_failed", problem=exc.message)
    if status.up and status.ready:
        return BroughtUp("running", pid=status.pid, port=status.port)
    return BroughtUp("not_ready", port=status.port, problem=status.exit_reason)


def remove(home: HermesHome, manager: ServiceManager | None, name: str) -> Path:
    """Delete profile `name`: its slot down and gone (`-wD`, `s6-svscanctl -an`), then
    its files; returns the directory that went."""
    from hermes_container.home import DEFAULT_PROFILE
    from hermes_container.profiles import delete_profile

    if manager is not None and name != DEFAULT_PROFILE:
        manager.unregister(name)
    return delete_profile(home, name)
