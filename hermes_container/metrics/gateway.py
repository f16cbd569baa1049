"""A gateway's metrics: what its request path, relay and session writer report.

The request path holds a meter from the start, NULL_METER until `start()` swaps in a
GatewayMeter once the gateway is ready (runner.py). On the request path a GatewayMeter
only appends to a deque; a thread hands that to prometheus-client twice a second
(GatewayMeter says why). Its first error turns it off (logged once) instead of reaching
a request. Token counts come from the provider's usage block, as the session store's
rows hold them (read once, after the reply went out).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from pathlib import Path
from typing import Any

from hermes_container.gateway.sessions import (
    COMPLETION_TOKENS,
    PROMPT_TOKENS,
    Pacer,
    Row,
    SessionStore,
)
from hermes_container.metrics import names

log = logging.getLogger("hermes.metrics")

FLUSH_PERIOD_S = 0.5


class NullMeter:
    """Metrics off: every call does nothing."""

    on = False

    def begin(self) -> None:
        pass

    def end(self, route: str, status: int, seconds: float) -> None:
        pass

    def upstream(self, seconds: float) -> None:
        pass

    def upstream_error(self, kind: str) -> None:
        pass

    def add_tokens(self, prompt: int | None, completion: int | None) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


NULL_METER = NullMeter()


def route_label(path: str) -> str:
    return path if path in names.ROUTES else names.OTHER_ROUTE


class GatewayMeter:
    """One profile's gateway metrics, written to this process's multiprocess files.

    The request path only appends to a deque (atomic, no lock) and counts in-flight
    requests in an int; a thread moves that into prometheus-client every FLUSH_PERIOD_S,
    each request counter once per period whatever the traffic. Measured in-process, one
    mmap write costs 3-5 us of CPU amid a request's work against ~1.5 us in a batch, and
    a request makes 5 of them; a scrape is at most FLUSH_PERIOD_S behind, and a gateway
    killed with SIGKILL loses at most that much (close() flushes on a clean stop).
    """

    on = True

    def __init__(self, writer: Any, profile: str) -> None:
        self.profile = profile
        self._requests = writer.counter(
            names.REQUESTS, names.REQUESTS_HELP, ("profile", "route", "status")
        )
        self._duration = writer.histogram(
            names.REQUEST_DURATION, names.REQUEST_DURATION_HELP, ("profile",), names.LATENCY_BUCKETS
        ).labels(profile)
        self._upstream = writer.histogram(
            names.UPSTREAM_DURATION,
            names.UPSTREAM_DURATION_HELP,
            ("profile",),
            names.LATENCY_BUCKETS,
        ).labels(profile)
        self._in_flight = writer.live_gauge(
            names.IN_FLIGHT, names.IN_FLIGHT_HELP, ("profile",)
        ).labels(profile)
        self._errors = writer.counter(
            names.UPSTREAM_ERRORS, names.UPSTREAM_ERRORS_HELP, ("profile", "kind")
        )
        tokens = writer.counter(names.TOKENS, names.TOKENS_HELP, ("profile", "type"))
        self._tokens_in = tokens.labels(profile, "input")
        self._tokens_out = tokens.labels(profile, "output")
        self._counts: dict[tuple[str, int], Any] = {}  # (route, status) -> its child
        self.active = 0  # requests in flight: only the event loop's thread changes it
        self._published = 0
        # (route, status, seconds) per answered request, seconds per upstream exchange
        self._ended: deque[tuple[str, int, float]] = deque()
        self._upstream_times: deque[float] = deque()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-flush", daemon=True)
        self._thread.start()

    def _failed(self, exc: Exception) -> None:
        if self.on:
            self.on = False
            log.warning("metrics: recording failed (%s); this gateway stops recording", exc)

    # -- the request path: no prometheus-client call ------------------------------------

    def begin(self) -> None:
        self.active += 1

    def end(self, route: str, status: int, seconds: float) -> None:
        self.active -= 1
        if self.on:
            self._ended.append((route, status, seconds))

    def upstream(self, seconds: float) -> None:
        if self.on:
            self._upstream_times.append(seconds)

    def upstream_error(self, kind: str) -> None:
        """Rare (a failure): written at once."""
        if self.on and kind in names.UPSTREAM_ERROR_KINDS:  # not `aborted` (the client left)
            try:
                self._errors.labels(self.profile, kind).inc()
            except Exception as exc:
                self._failed(exc)

    # -- the writer threads -------------------------------------------------------------

    def add_tokens(self, prompt: int | None, completion: int | None) -> None:
        if not self.on:
            return
        try:
            if prompt:
                self._tokens_in.inc(prompt)
            if completion:
                self._tokens_out.inc(completion)
        except Exception as exc:
            self._failed(exc)

    def flush(self) -> None:
        """Move what the request path recorded into prometheus-client's files."""
        with self._flush_lock:
            if not self.on:
                return
            try:
                self._flush()
            except Exception as exc:
                self._failed(exc)

    def _flush(self) -> None:
        counts: dict[tuple[str, int], int] = {}
        ended, times = self._ended, self._upstream_times
        # Paced: half a second of traffic in one go held the GIL for up to 4 ms.
        pace = Pacer()
        while ended:
            route, status, seconds = ended.popleft()
            counts[(route, status)] = counts.get((route, status), 0) + 1
            if route == names.CHAT_ROUTE:
                self._duration.observe(seconds)
            pace()
        for key, n in counts.items():
            child = self._counts.get(key)
            if child is None:
                child = self._counts[key] = self._requests.labels(self.profile, key[0], str(key[1]))
            child.inc(n)
        while times:
            self._upstream.observe(times.popleft())
            pace()
        active = self.active
        if active != self._published:
            self._in_flight.set(active)
            self._published = active

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_PERIOD_S):
            self.flush()

    def close(self) -> None:
        """Stop the flushing thread, after one last flush (a clean stop loses nothing)."""
        self._stop.set()
        self._thread.join(5.0)
        self.flush()


Meter = GatewayMeter | NullMeter


class MeteredSessionStore(SessionStore):
    """The session store, counting each exchange's tokens after writing its batch."""

    meter: Meter = NULL_METER

    def _write(self, batch: list[Row]) -> None:
        super()._write(batch)
        meter = self.meter
        if meter.on:
            meter.add_tokens(
                sum(row[PROMPT_TOKENS] or 0 for row in batch),
                sum(row[COMPLETION_TOKENS] or 0 for row in batch),
            )


def start(home: Path, profile: str) -> Meter:
    """The gateway's meter: GatewayMeter when this process may write metrics, else
    NULL_METER. Never raises."""
    from hermes_container.metrics.writer import writer

    try:
        active = writer(home)
        return NULL_METER if active is None else GatewayMeter(active, profile)
    except Exception as exc:
        log.warning("metrics: cannot start the gateway's metrics: %s", exc)
        return NULL_METER
