"""Live updates for the Jobs page: the jobs' new events as Server-Sent Events.

Job events are written with the board's and announce themselves the same way, so the
Kanban page's one listener (kanban_live.BoardWatch) wakes these streams too: no second
socket or LISTEN connection, no query while nothing happens. The loop is kanban_live's:
read `events_since` the last id on a wake-up (or every SAFETY_POLL_S anyway), at most
once per MIN_GAP_S, and send what is new; the page then refetches what it shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, Awaitable, Callable

from starlette.concurrency import run_in_threadpool

from hermes_container.dashboard.jobs_view import JobsView
from hermes_container.dashboard.kanban_live import (
    HEARTBEAT_S,
    MIN_GAP_S,
    PAGE,
    SAFETY_POLL_S,
    BoardWatch,
)
from hermes_container.dashboard.logtail import sse_event
from hermes_container.errors import HermesError


async def stream_job_events(
    watch: BoardWatch,
    view: JobsView,
    last: int,
    is_disconnected: Callable[[], Awaitable[bool]],
) -> AsyncGenerator[bytes, None]:
    """`hello` with the id the stream starts after, then `events` batches
    ([{id, job, run_id, kind, at}], oldest first) as they are committed; `unavailable`
    and the end of the stream when the board cannot be read."""
    yield sse_event(json.dumps({"last_event_id": last}), event="hello")
    wake = await watch.subscribe()
    try:
        quiet_since = time.monotonic()
        while not await is_disconnected():
            wake.clear()  # before the read: a write landing meanwhile sets it again
            while True:
                try:
                    page = await run_in_threadpool(view.events_since, last, PAGE)
                except HermesError as exc:
                    yield sse_event(json.dumps({"detail": exc.message}), event="unavailable")
                    return
                if page:
                    last = page[-1].id
                    batch = [
                        {"id": e.id, "job": e.job, "run_id": e.run_id, "kind": e.kind, "at": e.at}
                        for e in page
                    ]
                    yield sse_event(json.dumps(batch, separators=(",", ":")), event="events")
                    quiet_since = time.monotonic()
                if len(page) < PAGE:
                    break
            if time.monotonic() - quiet_since >= HEARTBEAT_S:
                quiet_since = time.monotonic()
                yield b": keep-alive\n\n"
            await asyncio.sleep(MIN_GAP_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), SAFETY_POLL_S)
            await watch.ensure_listening()
    finally:
        watch.unsubscribe(wake)
