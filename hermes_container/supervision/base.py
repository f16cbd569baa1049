"""What every supervision backend offers: the contract the CLI and the dashboard use."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from hermes_container.state import GatewayState


@dataclass(frozen=True)
class ServiceStatus:
    """One gateway slot as the supervisor sees it, merged with the state file."""

    profile: str
    registered: bool  # a slot exists in the scandir
    up: bool  # the supervised process is running
    ready: bool  # the gateway signalled readiness (port accepts connections)
    pid: int | None
    uptime_s: float | None
    restarts: int | None
    port: int | None
    desired_state: str | None
    gateway_state: str | None
    exit_reason: str | None = None
    parked: bool = False  # finish exited 125: no restart until an explicit start
    # Added later; optional so older callers constructing ServiceStatus keep working.
    exit_code: int | None = None
    wanted_up: bool | None = None  # what the supervisor is trying to do right now

    @classmethod
    def unregistered(cls, profile: str, state: GatewayState, port: int | None) -> ServiceStatus:
        """A profile with no slot: nothing runs, all else is what its state file says."""
        return cls(
            profile=profile,
            registered=False,
            up=False,
            ready=False,
            pid=None,
            uptime_s=None,
            restarts=None,
            port=port,
            desired_state=state.desired_state,
            gateway_state=state.gateway_state,
            exit_reason=state.exit_reason,
            exit_code=state.exit_code,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class ServiceManager(Protocol):
    """Start/stop/inspect `gateway-<profile>` slots. Start/stop write desired state first.

    Stable API (the CLI and the dashboard call it): `start`, `stop`, `restart` and
    `status` take a profile name and return a ServiceStatus; `wait` bounds how long to
    wait for ready (start/restart) or down (stop), None = do not wait. Errors are
    HermesError with a one-line message.
    """

    name: str  # shown as `Manager: ...` in status

    def register(self, profile: str, *, start: bool = False) -> None: ...

    def unregister(self, profile: str) -> None: ...

    def start(self, profile: str, *, wait: float | None = None) -> ServiceStatus: ...

    def stop(self, profile: str, *, wait: float | None = None) -> ServiceStatus: ...

    def restart(self, profile: str, *, wait: float | None = None) -> ServiceStatus: ...

    def status(self, profile: str) -> ServiceStatus: ...
