"""What the pages and the API show about profiles: each one's ServiceStatus (cached
briefly), and the per-state counts of the public /api/status."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from hermes_container.errors import HermesError
from hermes_container.home import HermesHome
from hermes_container.profiles import list_profiles
from hermes_container.state import desired_or_default, read_state
from hermes_container.supervision.protocol import ServiceManager
from hermes_container.supervision.service_status import ServiceStatus, gateway_status
from hermes_container.timeutil import format_duration

log = logging.getLogger("hermes.dashboard")
FAILED_STATES = frozenset({"crashed", "startup_failed"})


def profile_status(home: HermesHome, manager: ServiceManager | None, name: str) -> ServiceStatus:
    """The status `hermes gateway status` shows: the supervisor's when a tree runs, else
    what the profile's files say (the rule is in supervision/service_status.py)."""
    if manager is not None:
        try:
            return manager.status(name)
        except HermesError:
            pass  # the manager could not tell (e.g. no slot yet): the files still can
        except Exception as exc:  # one broken slot must not break the whole page
            log.warning("status of %s failed: %s: %s", name, type(exc).__name__, exc)
    return gateway_status(home, None, name)


def all_rows(home: HermesHome, manager: ServiceManager | None) -> list[ServiceStatus]:
    rows = []
    for name in list_profiles(home):
        try:
            rows.append(profile_status(home, manager, name))
        except HermesError:
            continue  # deleted since it was listed
    return rows


def status_json(status: ServiceStatus) -> dict[str, Any]:
    """A status as the dashboard's API and scripts read it: ServiceStatus's keys, the
    profile also as `name` (the key the API has always had), and the uptime as the
    pages show it (`uptime_text`), so the page's script never formats one itself."""
    return {"name": status.profile, **status.to_json(), "uptime_text": uptime_text(status)}


def uptime_text(status: ServiceStatus) -> str:
    # A table cell has room for the two largest units ("1d 2h").
    return format_duration(status.uptime_s, parts=2)


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
        self._rows: list[ServiceStatus] = []

    def get(self, manager: ServiceManager | None) -> list[ServiceStatus]:
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
            if desired_or_default(name, state) == "running":
                desired_running += 1
                if observed in FAILED_STATES:
                    failing += 1
        return {
            "health": "degraded" if failing else "ok",
            "profiles": len(names),
            "desired_running": desired_running,
            "gateways": dict(sorted(counts.items())),
        }
