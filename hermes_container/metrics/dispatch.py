"""The dispatcher's metrics: how long each tick of a board takes, and what the jobs
scheduler in it did (job events by kind, how late slots fired).

    from hermes_container.metrics.dispatch import observe_tick
    started = time.monotonic()
    report = self.dispatcher.tick(board)
    observe_tick(time.monotonic() - started, board)

The first call sets this process up as a metrics writer for $HERMES_HOME; no call ever
raises, and each costs an mmap write or two once set up. Job events are counted after
the transaction that wrote them committed, by the process that wrote them: with several
dispatchers on one board each counts its own, and Prometheus sums them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from hermes_container.metrics import names

log = logging.getLogger("hermes.metrics")

_lock = threading.Lock()
_families: dict[str, Any] = {}  # name -> labelled family; False: metrics are off here
_children: dict[tuple[str, tuple[str, ...]], Any] = {}


def _family(name: str, make: Callable[[Any], Any]) -> Any:
    family = _families.get(name)
    if family is None:
        with _lock:
            family = _families.get(name)
            if family is None:
                from hermes_container.home import resolve_home
                from hermes_container.metrics.writer import writer

                active = writer(resolve_home())
                family = _families[name] = False if active is None else make(active)
    return family


def _child(name: str, make: Callable[[Any], Any], labels: tuple[str, ...]) -> Any:
    child = _children.get((name, labels))
    if child is None:
        family = _family(name, make)
        if family is False:
            return None
        child = _children[(name, labels)] = family.labels(*labels)
    return child


def _off(what: str, exc: Exception) -> None:
    log.warning("metrics: cannot record %s: %s", what, exc)
    with _lock:
        for name in list(_families):
            _families[name] = False
        _children.clear()


def observe_tick(seconds: float, board: str) -> None:
    """Record one tick of `board` that took `seconds`. Call it after every tick."""
    try:
        child = _child(
            names.TICK_DURATION,
            lambda w: w.histogram(
                names.TICK_DURATION, names.TICK_DURATION_HELP, ("board",), names.TICK_BUCKETS
            ),
            (board,),
        )
        if child is not None:
            child.observe(seconds)
    except Exception as exc:  # never the dispatcher's problem
        _off("a dispatch tick", exc)


def count_job_event(board: str, kind: str, count: int = 1) -> None:
    """Job events of `kind` this process wrote (and committed)."""
    try:
        child = _child(
            names.JOB_EVENTS,
            lambda w: w.counter(names.JOB_EVENTS, names.JOB_EVENTS_HELP, ("board", "kind")),
            (board, kind),
        )
        if child is not None:
            child.inc(count)
    except Exception as exc:
        _off("a job event", exc)


def observe_slot_lag(seconds: float, board: str) -> None:
    """How long after its slot time a job's slot fired."""
    try:
        child = _child(
            names.JOB_SLOT_LAG,
            lambda w: w.histogram(
                names.JOB_SLOT_LAG, names.JOB_SLOT_LAG_HELP, ("board",), names.TICK_BUCKETS
            ),
            (board,),
        )
        if child is not None:
            child.observe(max(0.0, seconds))
    except Exception as exc:
        _off("a slot's lag", exc)
