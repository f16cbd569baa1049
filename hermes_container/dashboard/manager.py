"""The ServiceManager the dashboard drives: the SAME one the CLI uses.

`hermes_container.supervision.get_manager(home)` returns a manager when this process
runs inside a supervised tree, else None. The answer is re-checked every few seconds
so a dashboard started before `hermes supervise` picks the tree up without a restart.
Tests inject a manager (or None) through the app factory instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from hermes_container.home import HermesHome
from hermes_container.supervision import get_manager
from hermes_container.supervision.protocol import ServiceManager

log = logging.getLogger("hermes.dashboard")

Lookup = Callable[[], ServiceManager | None]


def supervision_lookup(home: HermesHome) -> Lookup:
    def lookup() -> ServiceManager | None:
        try:
            return get_manager(home)
        except Exception as exc:  # a broken tree must not take the dashboard down
            log.warning("supervision backend unavailable: %s", exc)
            return None

    return lookup


class ManagerSource:
    def __init__(self, lookup: Lookup, ttl: float = 5.0) -> None:
        self._lookup = lookup
        self._ttl = ttl
        self._lock = threading.Lock()
        self._value: ServiceManager | None = None
        self._checked = float("-inf")

    @classmethod
    def fixed(cls, manager: ServiceManager | None) -> ManagerSource:
        return cls(lambda: manager, ttl=float("inf"))

    def get(self) -> ServiceManager | None:
        with self._lock:
            now = time.monotonic()
            if now - self._checked >= self._ttl:
                self._value = self._lookup()
                self._checked = now
            return self._value
