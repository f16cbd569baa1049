"""This process as a metrics writer: prometheus-client's multiprocess mode, set up late.

A gateway or the dispatcher calls `writer(home)` once it is serving. Only then is
prometheus-client imported (~20 ms and ~2 MB, kept off the way to readiness), the
process's lock taken, its files reserved on disk, and the library switched to its
mmap-backed values (`values.ValueClass`, chosen by the library at import from
PROMETHEUS_MULTIPROC_DIR: we set both, since the variable may not have been set when
the library was first imported). Metrics are never worth a failed request: any error
here leaves the process without metrics (None) and says so once in its log.

HERMES_METRICS=0|false|no turns writing off (the scrape endpoint is governed by its
token instead).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hermes_container.envflags import is_falsy
from hermes_container.metrics import files

log = logging.getLogger("hermes.metrics")

ENV_SWITCH = "HERMES_METRICS"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The file types a writer may create; reserved up front (files.reserve explains why).
FILE_PREFIXES = ("counter", "histogram", "gauge_livesum")


def enabled(env: dict[str, str] | None = None) -> bool:
    return not is_falsy((os.environ if env is None else env).get(ENV_SWITCH, ""))


class Writer:
    """The metrics directory this process writes to, and its metric constructors."""

    def __init__(self, home: Path, directory: Path, lock: files.ProcessLock) -> None:
        self.home, self.directory, self.lock = home, directory, lock

    def counter(self, name: str, doc: str, labels: Sequence[str]) -> Any:
        return files.library("metrics").Counter(name, doc, labels, registry=None)

    def histogram(
        self, name: str, doc: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> Any:
        return files.library("metrics").Histogram(name, doc, labels, registry=None, buckets=buckets)

    def live_gauge(self, name: str, doc: str, labels: Sequence[str]) -> Any:
        """A gauge summed over the live processes only (a dead one's value is dropped)."""
        return files.library("metrics").Gauge(
            name, doc, labels, registry=None, multiprocess_mode="livesum"
        )

    def close(self) -> None:
        self.lock.close()


_lock = threading.Lock()
_current: Writer | None = None
_refused: set[Path] = set()


def writer(home: Path) -> Writer | None:
    """This process's writer for `home` (set up on the first call), or None: metrics
    are off, or this process may not or cannot write them."""
    global _current
    with _lock:
        if _current is not None and _current.home == home:
            return _current
        if home in _refused or not enabled():
            return None
        started = _start(home)
        if started is None:
            _refused.add(home)
            return None
        if _current is not None:
            _current.close()  # another home in the same process: only tests do that
        _current = started
        return started


def _start(home: Path) -> Writer | None:
    try:
        directory = files.ensure_dir(home)
        if directory is None:
            log.info("metrics: not the owner of %s; this process writes no metrics", home)
            return None
        lock = files.ProcessLock(directory)
        if not lock.acquire():
            log.warning("metrics: %s stayed locked; this process writes no metrics", lock.path)
            return None
        try:
            _switch(directory, lock.pid)
        except BaseException:
            lock.close()
            raise
    except Exception as exc:  # metrics are never a reason not to serve
        log.warning("metrics: cannot set up %s (%s); this process writes no metrics", home, exc)
        return None
    threading.Thread(target=_sweep, args=(directory,), name="metrics-sweep", daemon=True).start()
    return Writer(home, directory, lock)


def _switch(directory: Path, pid: int) -> None:
    values = files.library("values")
    # Live gauges left by an earlier process with our pid are not ours to continue;
    # its counters are (a sum does not care which process added what).
    files.library("multiprocess").mark_process_dead(pid, str(directory))
    for prefix in FILE_PREFIXES:
        files.reserve(directory / f"{prefix}_{pid}.db")
    os.environ[MULTIPROC_ENV] = str(directory)
    # The library asks os.getpid() on every write to notice a fork (a system call, a
    # third of a write's cost). Our writers never fork, and a fork+exec child does not
    # write metrics, so the pid is read once.
    values.ValueClass = values.MultiProcessValue(lambda: pid)


def _sweep(directory: Path) -> None:
    try:
        files.sweep(directory, wait=None)  # someone else sweeping is just as good
    except Exception as exc:
        log.warning("metrics: sweeping %s failed: %s", directory, exc)
