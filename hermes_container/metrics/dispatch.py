"""The dispatcher's metric: how long each tick of a board takes.

    from hermes_container.metrics.dispatch import observe_tick
    started = time.monotonic()
    report = self.dispatcher.tick(board)
    observe_tick(time.monotonic() - started, board)

The first call sets this process up as a metrics writer for $HERMES_HOME; it never
raises, and costs two mmap writes once set up.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from hermes_container.metrics import names

log = logging.getLogger("hermes.metrics")

_lock = threading.Lock()
_histogram: Any = None  # the labelled Histogram once set up; False: metrics are off here
_boards: dict[str, Any] = {}


def _setup() -> Any:
    from hermes_container.home import resolve_home
    from hermes_container.metrics.writer import writer

    active = writer(resolve_home())
    if active is None:
        return False
    return active.histogram(
        names.TICK_DURATION, names.TICK_DURATION_HELP, ("board",), names.TICK_BUCKETS
    )


def observe_tick(seconds: float, board: str) -> None:
    """Record one tick of `board` that took `seconds`. Call it after every tick."""
    global _histogram
    try:
        child = _boards.get(board)
        if child is None:
            with _lock:
                if _histogram is None:
                    _histogram = _setup()
                if _histogram is False:
                    return
                child = _boards[board] = _histogram.labels(board)
        child.observe(seconds)
    except Exception as exc:  # never the dispatcher's problem
        log.warning("metrics: cannot record a dispatch tick: %s", exc)
        _histogram = False
        _boards.clear()
