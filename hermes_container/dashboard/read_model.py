"""What the pages and the API show about profiles: each one's ServiceStatus (read
once for all requests, see RowsCache for how fresh), the /api/profiles body of them,
and the per-state counts of the public /api/status."""

from __future__ import annotations

import json
import logging
import os
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


def profiles_document(manager: ServiceManager | None, rows: list[ServiceStatus]) -> dict[str, Any]:
    """The body of GET /api/profiles (the overview page's script reads it)."""
    return {
        "supervisor": manager.name if manager else None,
        "profiles": [status_json(r) for r in rows],
    }


def encode_json(document: Any) -> bytes:
    """JSON bytes exactly as starlette's JSONResponse renders them."""
    return json.dumps(
        document, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


def _supervisor_key(manager: ServiceManager | None) -> tuple[type, object]:
    # The dashboard looks its supervisor up again every few seconds and gets a new
    # manager object for the same tree: rows stay valid while the tree is the same one.
    return type(manager), getattr(manager, "scandir", manager)


def _listing_key(home: HermesHome) -> tuple[int, int, int] | None:
    # A profile made or deleted by the CLI (not through the dashboard, so nothing
    # invalidates) changes the profiles directory: rows read before that are not
    # served again. One stat per request, against seconds of a missing row.
    try:
        st = os.stat(home.profiles_dir)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns


class RowsSnapshot:
    """Every profile's row as read at one moment, and the /api/profiles body of them
    (encoded once, served as the same bytes to every request of this generation)."""

    __slots__ = ("at", "epoch", "key", "listing", "manager", "profiles_json", "rows")

    def __init__(
        self,
        manager: ServiceManager | None,
        rows: list[ServiceStatus],
        at: float,
        epoch: int,
        listing: tuple[int, int, int] | None,
    ) -> None:
        self.manager = manager
        self.rows = rows
        self.at = at  # time.monotonic() when the reading started
        self.epoch = epoch
        self.key = _supervisor_key(manager)
        self.listing = listing  # the profiles directory when the reading started
        self.profiles_json = encode_json(profiles_document(manager, rows))


class RowsCache:
    """Every profile's rows, shared by all requests; one computation at a time.

    A row asks the supervisor and reads the profile's files, so pages and API clients
    polling together would otherwise repeat that work per request. Freshness:
      - rows younger than `ttl` (0.5 s) are served as they are;
      - older rows, up to `max_age` (2 s), are served while ONE background refresh
        reads new ones: no request waits for a refresh under steady polling, and what
        it shows is at most `max_age` old (in practice ttl plus one refresh);
      - rows older than `max_age` (an idle dashboard's first request), rows of another
        supervisor, rows an action invalidated and rows read before a profile was
        made or deleted (by anyone: the profiles directory changed) are never served:
        the request waits for a reading that started after the change, so its effect
        shows on the very next read.
    """

    def __init__(self, home: HermesHome, ttl: float = 0.5, max_age: float = 2.0) -> None:
        self.home = home
        self.ttl = ttl
        self.max_age = max(ttl, max_age)
        self._cond = threading.Condition()
        self._snapshot: RowsSnapshot | None = None
        self._epoch = 0  # bumped by invalidate(); a reading keeps the one it started in
        self._computing = False
        self._retry_at = float("-inf")  # after a failed background refresh

    def peek(self, manager: ServiceManager | None) -> RowsSnapshot | None:
        """The rows to serve right now without waiting (starting a background refresh
        when they are stale), or None: then `snapshot` must compute them."""
        with self._cond:
            snap = self._usable(manager)
            if snap is not None:
                self._refresh_if_stale(snap, manager)
            return snap

    def snapshot(self, manager: ServiceManager | None) -> RowsSnapshot:
        """The rows to serve, computed here (blocking) when none may be served."""
        with self._cond:
            while True:
                snap = self._usable(manager)
                if snap is not None:
                    self._refresh_if_stale(snap, manager)
                    return snap
                if not self._computing:
                    break
                self._cond.wait()  # one computation at a time: wait for it, then look again
            self._computing = True
            epoch = self._epoch
        return self._compute(manager, epoch)

    def get(self, manager: ServiceManager | None) -> list[ServiceStatus]:
        return self.snapshot(manager).rows

    def invalidate(self) -> None:
        """Rows read before now (or still being read) are never served again."""
        with self._cond:
            self._epoch += 1

    def _usable(self, manager: ServiceManager | None) -> RowsSnapshot | None:
        snap = self._snapshot
        if (
            snap is None
            or snap.epoch != self._epoch
            or snap.key != _supervisor_key(manager)
            or time.monotonic() - snap.at >= self.max_age
            or snap.listing != _listing_key(self.home)
        ):
            return None
        return snap

    def _refresh_if_stale(self, snap: RowsSnapshot, manager: ServiceManager | None) -> None:
        # Called with the lock held. A thread per refresh (one every `ttl` at most while
        # polled): the event loop never waits for the supervisor or the files.
        now = time.monotonic()
        if self._computing or now - snap.at < self.ttl or now < self._retry_at:
            return
        self._computing = True
        epoch = self._epoch
        threading.Thread(
            target=self._refresh, args=(manager, epoch), name="rows-refresh", daemon=True
        ).start()

    def _refresh(self, manager: ServiceManager | None, epoch: int) -> None:
        try:
            self._compute(manager, epoch)
        except Exception:  # the stale rows stay until max_age; a request then reads anew
            log.exception("refreshing the profile rows failed")

    def _compute(self, manager: ServiceManager | None, epoch: int) -> RowsSnapshot:
        try:
            at = time.monotonic()
            listing = _listing_key(self.home)  # before the rows: a change meanwhile shows
            snap = RowsSnapshot(manager, all_rows(self.home, manager), at, epoch, listing)
        except BaseException:
            with self._cond:
                self._computing = False
                self._retry_at = time.monotonic() + self.ttl  # no background retry before
                self._cond.notify_all()
            raise
        with self._cond:
            if epoch == self._epoch:  # else invalidated meanwhile: serve it to no one else
                self._snapshot = snap
            self._computing = False
            self._cond.notify_all()
        return snap


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
