"""JSON API of the ledger's views, all behind the auth gate (nothing here is public).

    GET /api/events?profile=&kind=&since=&until=&before=&limit=
        the newest matching events, newest first, and `last_id` (where a stream goes on)
    GET /api/events/stream?profile=&kind=&after=
        new matching events as Server-Sent Events (`hello`, then `events` batches)
    GET /api/profiles/{name}/timeline?limit=&before=
        the profile's state changes, restarts, parks, desired-state and config changes
    GET /api/profiles/{name}/charts?window=hour|day
        request rate, p50/p99 latency, error rate and tokens per bucket (sessions.db)
    GET /api/activity?window=day|hour
        restarts per profile over the last day, the board's throughput

`kind` is a catalogued kind, a board kind (`kanban.completed`) or a layer prefix ending
in a dot (`gateway.`); `since`/`until` an ISO time or a time ago (`15m`, `2h`, `1d`).
Every ledger and database read runs in the threadpool. Errors are one JSON line
{"error", "detail"}: 422 for a bad parameter, 404 for an unknown profile, 503 when the
ledger cannot be read.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import sqlite3
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from hermes_container.dashboard.context import ctx
from hermes_container.dashboard.exchange_series import WINDOWS, exchange_series
from hermes_container.dashboard.ledger_views import (
    activity,
    events_page,
    ledger_for,
    profile_timeline,
)
from hermes_container.dashboard.logtail import sse_event
from hermes_container.dashboard.timeline import describe, kind_filter_ok
from hermes_container.errors import HermesError
from hermes_container.events.ledger import Ledger
from hermes_container.events.model import LedgerEvent
from hermes_container.home import SESSIONS_DB
from hermes_container.names import is_valid_profile_name
from hermes_container.profiles import profile_exists
from hermes_container.timeutil import parse_when

log = logging.getLogger("hermes.dashboard")
router = APIRouter()

LIMIT_DEFAULT = 200
LIMIT_MAX = 500
TIMELINE_DEFAULT = 50
POLL_S = 1.0  # the stream's check for new events: one primary-key lookup when quiet
HEARTBEAT_S = 15.0
STREAM_PAGE = 500
_COUNT = re.compile(r"[0-9]{1,18}")


class BadParam(Exception):
    """A query parameter the API cannot use (422)."""


def _error(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": " ".join(detail.split())[:500]}, status)


def _count(request: Request, name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not _COUNT.fullmatch(raw) or not low <= int(raw) <= high:
        raise BadParam(f"{name} must be a whole number from {low} to {high}")
    return int(raw)


def _filters(request: Request, *, times: bool = True) -> dict[str, Any]:
    params = request.query_params
    found: dict[str, Any] = {}
    profile = params.get("profile") or None
    if profile is not None:
        if not is_valid_profile_name(profile):
            raise BadParam("profile: not a valid profile name")
        found["profile"] = profile
    kind = params.get("kind") or None
    if kind is not None:
        if not kind_filter_ok(kind):
            raise BadParam(
                f"kind {kind[:60]!r}: no such event kind (a trailing '.' matches a layer "
                "such as gateway.)"
            )
        found["kind"] = kind
    if times:
        for name in ("since", "until"):
            value = params.get(name) or None
            if value is not None:
                try:
                    found[name] = parse_when(value[:64], name)
                except HermesError as exc:
                    raise BadParam(exc.message) from None
    return found


def _ledger(request: Request) -> Ledger | None:
    return ledger_for(ctx(request).home)


_NO_LEDGER = (
    "the event ledger cannot be opened by this process (a dashboard running as root "
    "does not open files in a home another user owns)"
)


async def _read(request: Request, work: Callable[[Ledger], Any]) -> JSONResponse:
    """Run `work` on the ledger in the threadpool; its result as JSON, or the error."""
    try:
        ledger = await run_in_threadpool(_ledger, request)
        if ledger is None:
            return _error(503, "ledger_unavailable", _NO_LEDGER)
        return JSONResponse(await run_in_threadpool(work, ledger))
    except (sqlite3.Error, OSError) as exc:
        log.warning("event ledger unreadable: %s", exc)
        return _error(503, "ledger_unavailable", f"the event ledger cannot be read: {exc}")


@router.get("/api/events")
async def list_events(request: Request) -> Response:
    try:
        filters = _filters(request)
        limit = _count(request, "limit", LIMIT_DEFAULT, 1, LIMIT_MAX) or LIMIT_DEFAULT
        before = _count(request, "before", None, 1, 10**18)
    except BadParam as exc:
        return _error(422, "bad_parameter", str(exc))
    return await _read(request, lambda ledger: events_page(ledger, limit, before=before, **filters))


@router.get("/api/events/stream")
async def stream_events(request: Request) -> Response:
    try:
        filters = _filters(request, times=False)
        after = _count(request, "after", None, 0, 10**18)
    except BadParam as exc:
        return _error(422, "bad_parameter", str(exc))
    try:
        ledger = await run_in_threadpool(_ledger, request)
        if ledger is None:
            return _error(503, "ledger_unavailable", _NO_LEDGER)
        if after is None:
            after = (await run_in_threadpool(ledger.bounds))[1]
    except (sqlite3.Error, OSError) as exc:
        return _error(503, "ledger_unavailable", f"the event ledger cannot be read: {exc}")
    return StreamingResponse(
        follow_ledger(ledger, after, filters, request.is_disconnected),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


def matches(event: LedgerEvent, filters: dict[str, Any]) -> bool:
    """Whether `event` passes the stream's filters (profile, kind or kind prefix)."""
    profile, kind = filters.get("profile"), filters.get("kind")
    if profile is not None and event.profile != profile:
        return False
    if kind is None:
        return True
    return event.kind.startswith(kind) if kind.endswith(".") else event.kind == kind


async def follow_ledger(
    ledger: Ledger,
    after: int,
    filters: dict[str, Any],
    is_disconnected: Callable[[], Awaitable[bool]],
    *,
    poll_s: float = POLL_S,
) -> AsyncGenerator[bytes, None]:
    """`hello` {last_id}, then `events` batches (oldest first, described like the API's)
    of the matching events with ids above `after` as they are committed; `unavailable`
    and the end of the stream when the ledger cannot be read.

    Each poll reads what was appended since the last one, unfiltered, through the
    primary key (nothing when the ledger is quiet) and filters it here: the position
    moves past events that do not match, so a selective filter never rereads them."""
    yield sse_event(json.dumps({"last_id": after}), event="hello")
    quiet_since = time.monotonic()
    while not await is_disconnected():
        try:
            while True:
                page = await run_in_threadpool(
                    functools.partial(ledger.read, after, limit=STREAM_PAGE)
                )
                if page:
                    after = page[-1].id
                found = [describe(e) for e in page if matches(e, filters)]
                if found:
                    yield sse_event(json.dumps(found, separators=(",", ":")), event="events")
                    quiet_since = time.monotonic()
                if len(page) < STREAM_PAGE:
                    break
        except (sqlite3.Error, OSError) as exc:
            yield sse_event(json.dumps({"detail": str(exc)}), event="unavailable")
            return
        if time.monotonic() - quiet_since >= HEARTBEAT_S:
            quiet_since = time.monotonic()
            yield b": keep-alive\n\n"
        await asyncio.sleep(poll_s)


def _check_profile(request: Request, name: str) -> JSONResponse | None:
    if not is_valid_profile_name(name) or not profile_exists(ctx(request).home, name):
        return _error(404, "not_found", "no such profile")
    return None


@router.get("/api/profiles/{name}/timeline")
async def timeline(request: Request, name: str) -> Response:
    if (missing := _check_profile(request, name)) is not None:
        return missing
    try:
        limit = _count(request, "limit", TIMELINE_DEFAULT, 1, LIMIT_MAX) or TIMELINE_DEFAULT
        before = _count(request, "before", None, 1, 10**18)
    except BadParam as exc:
        return _error(422, "bad_parameter", str(exc))
    return await _read(request, lambda ledger: profile_timeline(ledger, name, limit, before))


def _window(request: Request, default: str) -> str:
    window = request.query_params.get("window") or default
    if window not in WINDOWS:
        raise BadParam(f"window must be one of {', '.join(WINDOWS)}")
    return window


@router.get("/api/profiles/{name}/charts")
async def charts(request: Request, name: str) -> Response:
    if (missing := _check_profile(request, name)) is not None:
        return missing
    try:
        window = WINDOWS[_window(request, "hour")]
    except BadParam as exc:
        return _error(422, "bad_parameter", str(exc))
    db = ctx(request).home.profile_dir(name) / SESSIONS_DB
    series = await run_in_threadpool(exchange_series, db, window)
    return JSONResponse({"profile": name, **series.to_json()})


@router.get("/api/activity")
async def overview_activity(request: Request) -> Response:
    try:
        window = WINDOWS[_window(request, "day")]
    except BadParam as exc:
        return _error(422, "bad_parameter", str(exc))
    return await _read(
        request,
        lambda ledger: {"window": window.name, **activity(ledger, window.span_s, window.bucket_s)},
    )
