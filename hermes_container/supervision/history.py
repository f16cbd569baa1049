"""Per-slot bookkeeping in `<slot>/data/`: restart count, recent deaths, park marker.

It lives in the slot (not the profile) because it describes this registration: a
fresh slot, e.g. after a container restart, starts with a clean crash history.
Written by the finish script (as the home owner) and by `gateway start/restart`.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from hermes_container.fsutil import atomic_write_json, atomic_write_text
from hermes_container.record import Record

HISTORY = "history.json"
PARKED = "parked"
RESTART_REQUESTED = "restart-requested"
RESTART_REQUEST_TTL = 60.0  # a `-t` whose death never came must not excuse a later crash


class History(Record):
    __slots__ = ("deaths", "restarts")

    def __init__(self, restarts: int = 0, deaths: list[float] | None = None) -> None:
        self.restarts = restarts  # unexpected deaths s6 restarted (or parked) since registration
        self.deaths = [] if deaths is None else deaths  # epoch seconds, newest last

    def recent(self, window: float, now: float) -> list[float]:
        return [t for t in self.deaths if now - t <= window]


def _data(slot_dir: Path) -> Path:
    return slot_dir / "data"


def read_history(slot_dir: Path) -> History:
    try:
        raw = json.loads((_data(slot_dir) / HISTORY).read_text(encoding="utf-8"))
        restarts = int(raw.get("restarts", 0))
        deaths = [float(t) for t in raw.get("deaths", [])]
        return History(restarts=restarts, deaths=deaths)
    except (OSError, ValueError, TypeError, AttributeError):
        return History()


def write_history(slot_dir: Path, history: History, keep: int = 50) -> None:
    data = {"restarts": history.restarts, "deaths": history.deaths[-keep:]}
    atomic_write_json(_data(slot_dir) / HISTORY, data)


def clear_deaths(slot_dir: Path) -> None:
    """An explicit start forgives earlier crashes (the restart count is kept)."""
    history = read_history(slot_dir)
    if history.deaths:
        history.deaths = []
        write_history(slot_dir, history)


def parked_reason(slot_dir: Path) -> str | None:
    try:
        return (_data(slot_dir) / PARKED).read_text(encoding="utf-8").strip() or "parked"
    except OSError:
        return None


def park(slot_dir: Path, reason: str) -> None:
    atomic_write_text(_data(slot_dir) / PARKED, reason + "\n")


def unpark(slot_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (_data(slot_dir) / PARKED).unlink()


def request_restart(slot_dir: Path) -> None:
    """Mark the coming SIGTERM (`s6-svc -t`) as intended, so finish does not count it."""
    atomic_write_text(_data(slot_dir) / RESTART_REQUESTED, f"{time.time()}\n")


def take_restart_request(slot_dir: Path, now: float) -> bool:
    path = _data(slot_dir) / RESTART_REQUESTED
    try:
        stamp = float(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return now - stamp <= RESTART_REQUEST_TTL
