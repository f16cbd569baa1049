"""Reading the event ledger for the dashboard's pages (synchronous: call it in the
threadpool, never on the event loop).

The ledger reads oldest-first from an id (Ledger.read/iterate); a page wants the newest
events that match a filter. `newest` looks back from the last id through windows of
ids that grow fourfold, paging through each and keeping only the last `limit` matches:
memory stays bounded by `limit`, and the work by the size of the window that first
holds enough matches (the whole ledger, at worst, for a filter that matches little).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from hermes_container.dashboard.timeline import (
    bucket_counts,
    bucket_edges,
    describe,
    is_timeline_kind,
    restarts_by_profile,
)
from hermes_container.events.append import may_write, open_ledger
from hermes_container.events.ledger import Ledger
from hermes_container.events.model import LedgerEvent
from hermes_container.home import HermesHome

PAGE = 2000
FIRST_SPAN = 1024
RESTART_WINDOW_S = 86400
MAX_COUNTED = 1_000_000  # events one activity query folds at most


def ledger_for(home: HermesHome) -> Ledger | None:
    """This process's ledger, or None when it must not be opened: a dashboard running
    as root next to a home another user owns would create root-owned files in it."""
    if not may_write(home.root):
        return None
    return open_ledger(home.root)


def newest(
    ledger: Ledger,
    limit: int,
    *,
    before: int | None = None,
    accept: Callable[[LedgerEvent], bool] | None = None,
    bounds: tuple[int, int] | None = None,
    **filters: Any,
) -> list[LedgerEvent]:
    """The newest `limit` events with id < `before` (all when None) that match the
    ledger filters (profile, kind, since, until) and `accept`; newest first. `bounds`:
    the ledger's (first, last) ids when the caller has just read them."""
    first, last = ledger.bounds() if bounds is None else bounds
    top = last if before is None else min(last, before - 1)
    if top < first or top <= 0:
        return []
    span = max(FIRST_SPAN, limit * 4)
    while True:
        after = max(first - 1, top - span)
        kept: deque[LedgerEvent] = deque(maxlen=limit)
        for event in ledger.iterate(after, page=PAGE, **filters):
            if event.id > top:
                break
            if accept is None or accept(event):
                kept.append(event)
        if len(kept) >= limit or after <= first - 1:
            return list(reversed(kept))
        span *= 4


def events_page(
    ledger: Ledger, limit: int, *, before: int | None = None, **filters: Any
) -> dict[str, Any]:
    """GET /api/events: the newest matches (newest first) and where the stream goes on."""
    first, last = ledger.bounds()  # read first: the stream continues after `last`
    found = newest(ledger, limit, before=before, bounds=(first, last), **filters)
    return {
        "events": [describe(e) for e in found],
        "first_id": first,
        "last_id": last,
        "more": len(found) == limit and found[-1].id > first,
    }


def profile_timeline(
    ledger: Ledger, profile: str, limit: int, before: int | None = None
) -> dict[str, Any]:
    """A profile's timeline: its supervision, desired-state, slot, boot and profile
    events, newest first (its board task events are on the Events page)."""
    first, last = ledger.bounds()
    found = newest(
        ledger,
        limit,
        before=before,
        bounds=(first, last),
        profile=profile,
        accept=lambda e: is_timeline_kind(e.kind),
    )
    return {
        "profile": profile,
        "entries": [describe(e) for e in found],
        "last_id": last,
        "more": len(found) == limit,
    }


def _fold(ledger: Ledger, **filters: Any) -> list[LedgerEvent]:
    found: list[LedgerEvent] = []
    for event in ledger.iterate(0, page=PAGE, **filters):
        found.append(event)
        if len(found) >= MAX_COUNTED:
            break
    return found


def activity(
    ledger: Ledger, span_s: int, bucket_s: int, now: float | None = None
) -> dict[str, Any]:
    """The overview's figures: restarts per profile over the last day, and the board's
    throughput (`kanban.completed` per bucket over the last `span_s`)."""
    moment = time.time() if now is None else now
    since = moment - RESTART_WINDOW_S
    restarts = restarts_by_profile(_fold(ledger, kind="gateway.restarted", since=since), since)
    start, count = bucket_edges(moment, span_s, bucket_s)
    done = _fold(ledger, kind="kanban.completed", since=start)
    completed = bucket_counts(done, start, bucket_s, count)
    return {
        "restarts": restarts,
        "restarts_window_s": RESTART_WINDOW_S,
        "throughput": {
            "bucket_s": bucket_s,
            "start": start,
            "t": [start + i * bucket_s for i in range(count)],
            "completed": completed,
            "total": sum(completed),
        },
    }
