"""What the pages and the API show about profiles: supervisor status merged with state files."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from hermes_container.config import read_port
from hermes_container.errors import HermesError
from hermes_container.home import HermesHome
from hermes_container.procutil import pid_alive
from hermes_container.profiles import list_profiles
from hermes_container.state import read_state
from hermes_container.supervision.base import ServiceStatus
from hermes_container.supervision.protocol import ServiceManager
from hermes_container.timeutil import parse_iso

log = logging.getLogger("hermes.dashboard")
FAILED_STATES = frozenset({"crashed", "startup_failed"})


@dataclass(frozen=True)
class ProfileRow:
    name: str
    desired_state: str | None
    gateway_state: str | None
    up: bool | None
    ready: bool | None
    pid: int | None
    uptime_s: float | None
    restarts: int | None
    port: int | None
    registered: bool | None
    parked: bool
    exit_reason: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _port(home: HermesHome, name: str) -> int | None:
    try:
        return read_port(home.profile_dir(name))
    except HermesError:
        return None


def row_from_state_file(home: HermesHome, name: str) -> ProfileRow:
    """Best effort without a supervisor: what the gateway last wrote about itself."""
    state = read_state(home.profile_dir(name), warn=False)
    observed = state.gateway_state
    pid = state.pid if observed in ("starting", "running", "stopping") else None
    alive = pid_alive(pid)
    uptime = None
    if alive and state.started_at:
        started = parse_iso(state.started_at)
        uptime = max(0.0, time.time() - started.timestamp()) if started else None
    return ProfileRow(
        name=name,
        desired_state=state.desired_state,
        gateway_state=observed,
        up=alive if pid else False,
        ready=None,
        pid=pid if alive else None,
        uptime_s=uptime,
        restarts=None,
        port=state.port or _port(home, name),
        registered=None,
        parked=False,
        exit_reason=state.exit_reason,
    )


def row_from_status(status: ServiceStatus) -> ProfileRow:
    return ProfileRow(
        name=status.profile,
        desired_state=status.desired_state,
        gateway_state=status.gateway_state,
        up=status.up,
        ready=status.ready,
        pid=status.pid,
        uptime_s=status.uptime_s,
        restarts=status.restarts,
        port=status.port,
        registered=status.registered,
        parked=status.parked,
        exit_reason=status.exit_reason,
    )


def profile_row(home: HermesHome, manager: ServiceManager | None, name: str) -> ProfileRow:
    if manager is not None:
        try:
            return row_from_status(manager.status(name))
        except HermesError:
            pass  # e.g. no slot yet: fall back to the state file
        except Exception as exc:  # one broken slot must not break the whole page
            log.warning("status of %s failed: %s: %s", name, type(exc).__name__, exc)
    return row_from_state_file(home, name)


def all_rows(home: HermesHome, manager: ServiceManager | None) -> list[ProfileRow]:
    return [profile_row(home, manager, name) for name in list_profiles(home)]


class RowsCache:
    """Every profile's row, computed once per `ttl` and shared by concurrent requests.

    A row asks the supervisor (an s6-svstat per profile), so pages and API clients
    polling together would otherwise repeat that work per request. A gateway action
    invalidates the rows, so its effect shows on the very next read.
    """

    def __init__(self, home: HermesHome, ttl: float = 0.5) -> None:
        self.home = home
        self.ttl = ttl
        self._lock = threading.Lock()  # also coalesces: one computation at a time
        self._at = float("-inf")
        self._manager: ServiceManager | None = None
        self._rows: list[ProfileRow] = []

    def get(self, manager: ServiceManager | None) -> list[ProfileRow]:
        with self._lock:
            fresh = time.monotonic() - self._at < self.ttl
            if fresh and manager is self._manager:
                return self._rows
            rows = all_rows(self.home, manager)
            self._rows, self._manager, self._at = rows, manager, time.monotonic()
            return rows

    def invalidate(self) -> None:
        # Waits for a computation in progress, so rows read before the action are dropped.
        with self._lock:
            self._at = float("-inf")


class StatusCounts:
    """Per-state gateway counts for the public /api/status, cached briefly.

    Reads only the state files (no supervisor round-trips) so the endpoint stays
    cheap under load; a second of staleness is fine for a health summary.
    """

    def __init__(self, home: HermesHome, ttl: float = 2.0) -> None:
        self.home = home
        self.ttl = ttl
        self._lock = threading.Lock()
        self._at = float("-inf")
        self._value: dict[str, Any] = {}

    def get(self) -> dict[str, Any]:
        now = time.monotonic()
        if now - self._at < self.ttl:
            return self._value
        with self._lock:
            if now - self._at >= self.ttl:
                self._value = self._compute()
                self._at = time.monotonic()
            return self._value

    def _compute(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        desired_running = 0
        failing = 0
        names = list_profiles(self.home)
        for name in names:
            state = read_state(self.home.profile_dir(name), warn=False)
            observed = state.gateway_state or "unknown"
            counts[observed] = counts.get(observed, 0) + 1
            if state.desired_state == "running":
                desired_running += 1
                if observed in FAILED_STATES:
                    failing += 1
        return {
            "health": "degraded" if failing else "ok",
            "profiles": len(names),
            "desired_running": desired_running,
            "gateways": dict(sorted(counts.items())),
        }
