"""A profile's request charts, computed from its gateway's `sessions.db` (read-only).

The gateway writes one row per chat completion it relayed (gateway/sessions.py):
`finished_at` (ISO 8601 UTC, milliseconds), `latency_ms` (arrival to last byte),
`status` (what the client got; 499 when the client went away) and the provider's token
counts when it reported usage (`prompt_tokens`, `completion_tokens`; NULL otherwise).
Each exchange is counted in the bucket of the moment it finished.

The queries stay bounded however large the file grows: the table has no index on time,
but rows are appended in the order exchanges finish, so the first row of the window is
found by a binary search over the primary key (a few dozen point lookups), and only
the rows from there on are read, at most MAX_ROWS of them (the newest; `truncated`
says when older rows of the window were left out). SLACK_ROWS rows before that point
are read as well, for rows whose finish time is slightly out of id order (a batch
written while the clock stepped back). The database is opened read-only (`mode=ro`);
the dashboard never writes it.

Per bucket: requests, errors (status >= 400 except 499, which is the client hanging
up), p50 and p99 latency (nearest rank; null for an empty bucket), and tokens in/out
(summed over the exchanges whose provider reported them).
"""

from __future__ import annotations

import math
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from hermes_container.dashboard.timeline import bucket_edges

MAX_ROWS = 200_000
SLACK_ROWS = 500
OPEN_TIMEOUT_S = 2.0
CLIENT_GONE = 499


@dataclass(frozen=True)
class Window:
    name: str
    span_s: int
    bucket_s: int


WINDOWS: dict[str, Window] = {
    "hour": Window("hour", 3600, 60),  # 1-minute buckets
    "day": Window("day", 86400, 900),  # 15-minute buckets
}


def iso_ms(ts: float) -> str:
    """The format sessions.db stores (fixed width: it compares as text in time order)."""
    millis = round(ts * 1000)
    seconds, ms = divmod(millis, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}Z"


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of `values` sorted ascending; None when empty."""
    if not values:
        return None
    rank = max(1, math.ceil(p / 100.0 * len(values)))
    return values[min(rank, len(values)) - 1]


@dataclass
class Series:
    window: str
    bucket_s: int
    start: float
    t: list[float]  # each bucket's start (Unix seconds)
    requests: list[int]
    errors: list[int]
    latencies: list[list[float]] = field(repr=False)
    tokens_in: list[int]
    tokens_out: list[int]
    tokens_reported: int = 0  # exchanges whose provider reported usage
    truncated: bool = False
    available: bool = True
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        minutes = self.bucket_s / 60.0
        ordered = [sorted(values) for values in self.latencies]
        return {
            "window": self.window,
            "bucket_s": self.bucket_s,
            "start": self.start,
            "t": self.t,
            "requests": self.requests,
            "rate_per_min": [round(n / minutes, 3) for n in self.requests],
            "errors": self.errors,
            "error_rate": [
                round(e / n, 4) if n else None
                for e, n in zip(self.errors, self.requests, strict=True)
            ],
            "p50_ms": [percentile(v, 50) for v in ordered],
            "p99_ms": [percentile(v, 99) for v in ordered],
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "totals": {
                "requests": sum(self.requests),
                "errors": sum(self.errors),
                "tokens_in": sum(self.tokens_in),
                "tokens_out": sum(self.tokens_out),
                "tokens_reported": self.tokens_reported,
            },
            "truncated": self.truncated,
            "available": self.available,
            "reason": self.reason,
        }


def empty_series(window: Window, now: float) -> Series:
    start, count = bucket_edges(now, window.span_s, window.bucket_s)
    return Series(
        window=window.name,
        bucket_s=window.bucket_s,
        start=start,
        t=[start + i * window.bucket_s for i in range(count)],
        requests=[0] * count,
        errors=[0] * count,
        latencies=[[] for _ in range(count)],
        tokens_in=[0] * count,
        tokens_out=[0] * count,
    )


def open_readonly(path: Path) -> sqlite3.Connection:
    uri = f"file:{quote(str(path))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=OPEN_TIMEOUT_S, check_same_thread=False)
    conn.execute("PRAGMA query_only = ON")
    return conn


def first_row_at(conn: sqlite3.Connection, since_iso: str) -> int | None:
    """The smallest id whose finished_at is >= since_iso, assuming finish times grow with
    the id (binary search on the primary key); None when no row is that recent."""
    # Two subqueries, not MIN(id), MAX(id) together: SQLite answers a lone min() or
    # max() from the primary key's ends, but scans the table for the pair.
    lo, hi = conn.execute(
        "SELECT (SELECT MIN(id) FROM exchanges), (SELECT MAX(id) FROM exchanges)"
    ).fetchone()
    if lo is None:
        return None
    last = conn.execute("SELECT finished_at FROM exchanges WHERE id = ?", (hi,)).fetchone()
    if last is None or last[0] < since_iso:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        row_id, finished = conn.execute(
            "SELECT id, finished_at FROM exchanges WHERE id >= ? ORDER BY id LIMIT 1", (mid,)
        ).fetchone()
        if finished < since_iso:
            lo = row_id + 1
        else:
            hi = mid
    return int(lo)


_ROWS = (
    "SELECT (CAST(strftime('%s', finished_at) AS INTEGER) - ?) / ? AS bucket,"
    " latency_ms, status, prompt_tokens, completion_tokens"
    " FROM exchanges WHERE id >= ? AND finished_at >= ? AND finished_at < ?"
    " ORDER BY id DESC LIMIT ?"
)


def exchange_series(db: Path, window: Window, now: float | None = None) -> Series:
    """The window's buckets for the profile whose sessions database is `db`."""
    moment = time.time() if now is None else now
    series = empty_series(window, moment)
    if not db.exists():
        return series  # no exchange yet: an empty chart, not an error
    start = int(series.start)
    end = start + len(series.t) * window.bucket_s
    try:
        conn = open_readonly(db)
    except sqlite3.Error as exc:
        series.available, series.reason = False, f"sessions database unreadable: {exc}"
        return series
    try:
        first = first_row_at(conn, iso_ms(start))
        if first is None:
            return series
        rows = conn.execute(
            _ROWS,
            (start, window.bucket_s, first - SLACK_ROWS, iso_ms(start), iso_ms(end), MAX_ROWS + 1),
        ).fetchall()
    except sqlite3.Error as exc:
        series.available, series.reason = False, f"sessions database unreadable: {exc}"
        return series
    finally:
        conn.close()
    if len(rows) > MAX_ROWS:
        series.truncated = True
        rows = rows[:MAX_ROWS]
    count = len(series.t)
    for bucket, latency, status, prompt, completion in rows:
        if bucket is None or not 0 <= bucket < count:
            continue
        series.requests[bucket] += 1
        if status is not None and status >= 400 and status != CLIENT_GONE:
            series.errors[bucket] += 1
        if latency is not None:
            series.latencies[bucket].append(float(latency))
        if prompt is not None or completion is not None:
            series.tokens_reported += 1
            series.tokens_in[bucket] += prompt or 0
            series.tokens_out[bucket] += completion or 0
    return series
