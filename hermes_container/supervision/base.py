"""What a supervisor reports about one gateway slot (the backends' contract is in protocol.py)."""

from __future__ import annotations

from hermes_container.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class ServiceStatus(Record):
    """One profile's gateway: what its supervisor (if any) sees, merged with its state
    file. The CLI, the dashboard and the s6 backend all report this; `slot_status` in
    status.py is the one place it is read."""

    __slots__ = (
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
        "restarts",
        "up",
        "uptime_s",
        "wanted_up",
    )

    def __init__(
        self,
        profile: str,
        registered: bool,  # a slot exists in the scandir
        up: bool,  # the supervised process is running
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

    def to_json(self) -> dict[str, Any]:
        return self.to_dict()
