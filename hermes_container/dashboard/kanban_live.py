"""Live updates for the Kanban page: the board's new events as Server-Sent Events.

The dashboard process holds one store listener (wake.py: a datagram socket in the
board's wake directory, or a LISTEN connection on PostgreSQL) while at least one page
is open, and watches it from the event loop with add_reader: no thread and no query
while the board is quiet. A wake-up makes each open stream read `events_since` its
last id once (in the threadpool) and send what is new; the page then refetches what
it shows. Wake-ups are hints, so each stream also reads every SAFETY_POLL_S anyway,
and reads at most once per MIN_GAP_S however busy the board is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable

from starlette.concurrency import run_in_threadpool

from hermes_container.dashboard.kanban_board import KanbanBoard
from hermes_container.dashboard.logtail import sse_event
from hermes_container.errors import HermesError
from hermes_container.kanban.wake import Listener

log = logging.getLogger("hermes.dashboard")

SAFETY_POLL_S = 5.0
MIN_GAP_S = 0.2
HEARTBEAT_S = 15.0
PAGE = 500


class BoardWatch:
    """One listener for the process, fanned out to the open streams as asyncio.Events."""

    def __init__(self, board: KanbanBoard) -> None:
        self.board = board
        self._listener: Listener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscribers: set[asyncio.Event] = set()
        self._opening = asyncio.Lock()

    @property
    def listening(self) -> bool:
        return self._listener is not None

    async def subscribe(self) -> asyncio.Event:
        wake = asyncio.Event()
        self._subscribers.add(wake)
        await self.ensure_listening()
        return wake

    def unsubscribe(self, wake: asyncio.Event) -> None:
        self._subscribers.discard(wake)
        if not self._subscribers:
            self._stop()  # nobody watches: no socket left in the wake directory

    async def ensure_listening(self) -> None:
        """(Re)open the listener; a failure leaves the streams on their safety poll."""
        if self._listener is not None or not self._subscribers:
            return
        async with self._opening:
            if self._listener is not None or not self._subscribers:
                return
            try:
                listener = await run_in_threadpool(lambda: self.board.store.listen())
            except Exception as exc:
                log.warning("kanban live updates fall back to polling: %s", exc)
                return
            if not self._subscribers:  # every page left while we connected
                listener.close()
                return
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(listener.fileno(), self._readable)
            self._listener = listener

    def _readable(self) -> None:
        listener = self._listener
        if listener is None:
            return
        try:
            listener.drain()
        except (ConnectionError, OSError) as exc:  # PostgreSQL closed the LISTEN connection
            log.warning("kanban live updates: %s; reconnecting", exc)
            self._stop()
        for wake in self._subscribers:
            wake.set()

    def _stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is None:
            return
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(listener.fileno())
        with contextlib.suppress(Exception):
            listener.close()

    def close(self) -> None:
        self._subscribers.clear()
        self._stop()


def _events_message(events: list[dict[str, object]]) -> bytes:
    return sse_event(json.dumps(events, separators=(",", ":")), event="events")


async def stream_events(
    watch: BoardWatch,
    board: str,
    last: int,
    is_disconnected: Callable[[], Awaitable[bool]],
) -> AsyncGenerator[bytes, None]:
    """`hello` with the id the stream starts after, then `events` batches
    ([{id, task_id, kind, at}], oldest first) as they are committed; `unavailable`
    and the end of the stream when the board cannot be read."""
    kanban = watch.board
    yield sse_event(json.dumps({"board": board, "last_event_id": last}), event="hello")
    wake = await watch.subscribe()
    try:
        quiet_since = time.monotonic()
        while not await is_disconnected():
            # Cleared before the read, not after the wait: a write that lands while we
            # read sets it again, so the next wait returns at once instead of losing it.
            wake.clear()
            while True:
                try:
                    page = await run_in_threadpool(kanban.events_since, last, board, PAGE)
                except HermesError as exc:  # the board went away: the page reconnects
                    yield sse_event(json.dumps({"detail": exc.message}), event="unavailable")
                    return
                if page:
                    last = page[-1].id
                    yield _events_message(
                        [
                            {"id": e.id, "task_id": e.task_id, "kind": e.kind, "at": e.at}
                            for e in page
                        ]
                    )
                    quiet_since = time.monotonic()
                if len(page) < PAGE:
                    break
            if time.monotonic() - quiet_since >= HEARTBEAT_S:
                quiet_since = time.monotonic()
                yield b": keep-alive\n\n"
            await asyncio.sleep(MIN_GAP_S)  # a burst of writes costs one read per gap
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), SAFETY_POLL_S)
            await watch.ensure_listening()
    finally:
        watch.unsubscribe(wake)
