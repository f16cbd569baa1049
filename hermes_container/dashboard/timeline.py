"""The dashboard's history views as projections of the event ledger (pure functions).

Nothing here reads a file or keeps a record of its own: each function folds ledger
events (LedgerEvent, oldest or newest first as stated) into what a page shows, so the
same events always give the same view and the ledger stays the only history.

- `describe`: one event as a line of the Events page or a profile's timeline (a short
  title, the details that matter, a tone for its colour).
- `is_timeline_kind`: what a profile's timeline shows (state changes, restarts, parks,
  desired-state and config changes; not the board's task events).
- `restarts_by_profile`: `gateway.restarted` events counted per profile.
- `bucket_counts`: events per time bucket (the board's throughput: `kanban.completed`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from hermes_container.events.model import BOARD_PREFIX, JOB_PREFIX, KINDS, LedgerEvent, known_kind

TIMELINE_PREFIXES = ("gateway.", "desired.", "slot.", "profile.", "boot.")
# The layer prefixes a filter may use (`gateway.` matches every gateway event).
LAYER_PREFIXES: tuple[str, ...] = tuple(
    sorted({kind.split(".", 1)[0] + "." for kind in KINDS} | {BOARD_PREFIX, JOB_PREFIX})
)
DETAIL_MAX = 300

OK, WARN, BAD, INFO = "ok", "warn", "bad", "info"


def is_timeline_kind(kind: str) -> bool:
    return kind.startswith(TIMELINE_PREFIXES)


def kind_filter_ok(kind: str) -> bool:
    """A kind filter names a catalogued kind, any board or job kind, or a layer prefix."""
    if kind.endswith("."):
        return kind in LAYER_PREFIXES
    return known_kind(kind)


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    return str(value)


def _pid(data: dict[str, Any]) -> str:
    pid, port = _text(data.get("pid")), _text(data.get("port"))
    parts = [f"pid {pid}" if pid else "", f"port {port}" if port else ""]
    return ", ".join(p for p in parts if p)


def _rest(data: dict[str, Any], skip: Iterable[str] = ()) -> str:
    """The remaining fields as `key=value` (scalars only, sorted), for the detail line."""
    skipped = set(skip)
    pairs = [
        f"{key}={text}"
        for key, value in sorted(data.items())
        if key not in skipped and (text := _text(value)) is not None and text != ""
    ]
    return " ".join(pairs)


def _exited(data: dict[str, Any]) -> tuple[str, str, str]:
    how = _text(data.get("how")) or f"exit code {_text(data.get('code')) or '?'}"
    if data.get("expected"):
        return "Exited as asked", how, INFO
    return "Crashed", how, BAD


def describe(event: LedgerEvent) -> dict[str, Any]:
    """One event for a page: its fields plus `title`, `detail` and `tone`."""
    kind, data = event.kind, event.data
    title, detail, tone = kind, _rest(data), INFO
    if kind == "gateway.starting":
        title, detail = "Starting", _pid(data)
    elif kind == "gateway.ready":
        title, detail, tone = "Ready", _pid(data), OK
    elif kind == "gateway.exited":
        title, detail, tone = _exited(data)
    elif kind == "gateway.restarted":
        count = _text(data.get("restarts"))
        title, tone = "Restarted by the supervisor", WARN
        detail = f"restart #{count}" if count else ""
    elif kind == "gateway.parked":
        title, detail, tone = "Parked", _text(data.get("reason")) or "", BAD
    elif kind == "gateway.stopped":
        title, detail = "Stopped", _text(data.get("reason")) or ""
    elif kind == "desired.changed":
        before, after = _text(data.get("from")) or "unset", _text(data.get("to")) or "unset"
        title, detail = f"Desired state: {before} → {after}", f"by {event.actor}"
    elif kind == "boot.reconciled":
        title = f"Boot: {_text(data.get('action')) or 'reconciled'}"
        detail = _rest(data, skip=("action",))
        tone = BAD if data.get("error") else INFO
    elif kind == "slot.registered":
        title = "Slot registered"
    elif kind == "slot.removed":
        title = "Slot removed"
    elif kind == "profile.created":
        title = "Profile created"
    elif kind == "profile.deleted":
        title, tone = "Profile deleted", WARN
    elif kind == "profile.config_changed":
        keys = data.get("keys")
        names = ", ".join(str(k) for k in keys) if isinstance(keys, list) else ""
        title, detail = "Config changed", names or _rest(data)
    elif kind == "gateway.reloaded":
        keys = data.get("keys")
        names = ", ".join(str(k) for k in keys) if isinstance(keys, list) else ""
        title, detail, tone = "Reloaded", names or _rest(data), OK
    elif kind == "gateway.reload_rejected":
        title, detail, tone = "Reload rejected", _text(data.get("reason")) or "", BAD
    elif kind == "dashboard.denied":
        tone = WARN
    return {
        **event.to_json(),
        "title": title,
        "detail": detail[:DETAIL_MAX],
        "tone": tone,
    }


def restarts_by_profile(events: Iterable[LedgerEvent], since: float) -> dict[str, int]:
    """How many `gateway.restarted` events each profile had at or after `since`."""
    counts: dict[str, int] = {}
    for event in events:
        if event.kind == "gateway.restarted" and event.profile and event.at >= since:
            counts[event.profile] = counts.get(event.profile, 0) + 1
    return counts


def bucket_edges(now: float, span: float, bucket: float) -> tuple[float, int]:
    """(start, count) of the buckets covering the last `span` seconds up to `now`:
    aligned to multiples of `bucket` (so a chart's buckets do not shift between loads),
    the last one being the current, partial bucket."""
    end = math.floor(now / bucket) * bucket + bucket
    count = max(1, math.ceil(span / bucket))
    return end - count * bucket, count


def bucket_counts(
    events: Iterable[LedgerEvent], start: float, bucket: float, count: int
) -> list[int]:
    """Events per bucket [start + i*bucket, start + (i+1)*bucket); others are ignored."""
    counts = [0] * count
    for event in events:
        index = math.floor((event.at - start) / bucket)
        if 0 <= index < count:
            counts[index] += 1
    return counts
