"""What every supervision backend offers: the contract the CLI and the dashboard use."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from hermes_container.supervision.service_status import ServiceStatus


class ServiceManager(Protocol):
    """Start/stop/inspect `gateway-<profile>` slots. Start/stop write desired state first.

    Stable API (the CLI and the dashboard call it): `start`, `stop`, `restart` and
    `status` take a profile name and return a ServiceStatus; `wait` bounds how long to
    wait for ready (start/restart) or down (stop), None = do not wait. `reload` sends
    SIGHUP to the running gateway. Errors are HermesError with a one-line message.
    """

    name: str  # shown as `Manager: ...` in status

    def register(self, profiles: Iterable[str]) -> dict[str, str | None]: ...

    def unregister(self, profile: str) -> None: ...

    def start(self, profile: str, *, wait: float | None = None) -> ServiceStatus: ...

    def stop(self, profile: str, *, wait: float | None = None) -> ServiceStatus: ...

    def restart(self, profile: str, *, wait: float | None = None) -> ServiceStatus: ...

    def reload(self, profile: str) -> None:
        """SIGHUP the running gateway (it re-reads its settings); HermesError if not sent."""
        ...

    def status(self, profile: str) -> ServiceStatus: ...
