"""JSON API of the sessions browser, all behind the auth gate (nothing here is public).

    GET  /api/sessions/{profile}?offset=&limit=           sessions, most recently active first
    GET  /api/sessions/{profile}/search?q=&offset=&limit= sessions whose text contains q
    GET  /api/sessions/{profile}/session/{id}             summary, exchanges and transcript
    GET  /api/sessions/{profile}/session/{id}/export      everything stored, as a download
    POST /api/sessions/{profile}/session/{id}/delete      delete the session's exchanges

A session id sits under /session/, so no id (the gateway's X-Hermes-Session rule) can
shadow `search`. The database is read in the threadpool (session_reader.py). The POST
passes the CSRF middleware like every other one and is written to the auth audit log
(`sessions_action`, action `delete`) and the event ledger (`dashboard.action`, action
`sessions.delete`), whatever its result.

Errors are one JSON line {"error", "detail"}: 400 for a bad parameter, 404 for an
unknown profile or session, 503 when the database cannot be read or written now.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hermes_container.dashboard import session_reader
from hermes_container.dashboard.context import client_ip, ctx, user_label
from hermes_container.dashboard.session_reader import (
    PAGE_DEFAULT,
    PAGE_MAX,
    QUERY_MAX,
    SESSION_ID,
    Page,
    SessionsUnavailable,
)
from hermes_container.home import SESSIONS_DB
from hermes_container.names import is_valid_profile_name
from hermes_container.profiles import profile_exists

router = APIRouter(prefix="/api/sessions")
T = TypeVar("T")
_COUNT = re.compile(r"[0-9]{1,9}")


class BadParam(Exception):
    """A query parameter the API cannot use (400)."""


def error(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": " ".join(detail.split())[:500]}, status)


def no_profile() -> JSONResponse:
    return error(404, "not_found", "no such profile")


def no_session(session_id: str) -> JSONResponse:
    return error(404, "not_found", f"no session {session_id[:128]!r} in this profile")


def known_profile(request: Request, name: str) -> bool:
    return is_valid_profile_name(name) and profile_exists(ctx(request).home, name)


def database(request: Request, name: str) -> Path:
    """The profile's sessions.db path (the profile must have been checked)."""
    return ctx(request).home.profile_dir(name) / SESSIONS_DB


def _number(request: Request, key: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(key)
    if raw is None or raw == "":
        return default
    if not _COUNT.fullmatch(raw) or not low <= int(raw) <= high:
        raise BadParam(f"{key} must be a whole number from {low} to {high}")
    return int(raw)


def page_of(request: Request) -> Page:
    return Page(
        offset=_number(request, "offset", 0, 0, 10**9),
        limit=_number(request, "limit", PAGE_DEFAULT, 1, PAGE_MAX),
    )


async def read(fn: Callable[[], T]) -> T | JSONResponse:
    """A database read in the threadpool; unavailable becomes a 503."""
    try:
        return await run_in_threadpool(fn)
    except SessionsUnavailable as exc:
        return error(503, "sessions_unavailable", str(exc))


def _respond(result: Any) -> Response:
    return result if isinstance(result, Response) else JSONResponse(result)


@router.get("/{name}")
async def list_sessions(request: Request, name: str) -> Response:
    if not known_profile(request, name):
        return no_profile()
    try:
        page = page_of(request)
    except BadParam as exc:
        return error(400, "bad_parameter", str(exc))
    db = database(request, name)
    result = await read(lambda: session_reader.list_sessions(db, page))
    if isinstance(result, dict):
        result["profile"] = name
    return _respond(result)


@router.get("/{name}/search")
async def search(request: Request, name: str) -> Response:
    if not known_profile(request, name):
        return no_profile()
    query = request.query_params.get("q", "").strip()
    try:
        page = page_of(request)
        if not query:
            raise BadParam("q (the text to search for) is missing")
        if len(query) > QUERY_MAX:
            raise BadParam(f"q must be at most {QUERY_MAX} characters")
    except BadParam as exc:
        return error(400, "bad_parameter", str(exc))
    db = database(request, name)
    result = await read(lambda: session_reader.search_sessions(db, query, page))
    if isinstance(result, dict):
        result["profile"] = name
    return _respond(result)


@router.get("/{name}/session/{session_id}")
async def show(request: Request, name: str, session_id: str) -> Response:
    if not known_profile(request, name):
        return no_profile()
    if not SESSION_ID.fullmatch(session_id):
        return no_session(session_id)
    db = database(request, name)
    result = await read(lambda: session_reader.read_session(db, session_id))
    if result is None:
        return no_session(session_id)
    if isinstance(result, dict):
        result["profile"] = name
    return _respond(result)


@router.get("/{name}/session/{session_id}/export")
async def export(request: Request, name: str, session_id: str) -> Response:
    if not known_profile(request, name):
        return no_profile()
    if not SESSION_ID.fullmatch(session_id):
        return no_session(session_id)
    db = database(request, name)
    result = await read(lambda: session_reader.export_session(db, name, session_id))
    if result is None:
        return no_session(session_id)
    if isinstance(result, Response):
        return result
    # The id's characters are [A-Za-z0-9._:-]; a colon is no file name character everywhere.
    filename = f"hermes-{name}-{session_id.replace(':', '_')}.json"
    return Response(
        json.dumps(result, ensure_ascii=False, indent=2),
        media_type="application/json",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )


async def record(request: Request, event: str, action: str, result: str, **target: object) -> None:
    """An action in the audit log; its observer copies it into the event ledger as
    `dashboard.action` (ledger_audit.py), as it does the gateway, board and jobs actions."""
    context = ctx(request)
    await run_in_threadpool(
        context.audit.write,
        event,
        action=action,
        result=result,
        user=user_label(request),
        ip=client_ip(request),
        **target,
    )


@router.post("/{name}/session/{session_id}/delete")
async def delete(request: Request, name: str, session_id: str) -> Response:
    if not known_profile(request, name):
        await record(request, "sessions_action", "delete", "not_found", session=session_id[:128])
        return no_profile()
    target = {"profile": name, "session": session_id[:128]}
    if not SESSION_ID.fullmatch(session_id):
        await record(request, "sessions_action", "delete", "not_found", **target)
        return no_session(session_id)
    db = database(request, name)
    result = await read(lambda: session_reader.delete_session(db, session_id))
    if isinstance(result, Response):
        await record(request, "sessions_action", "delete", "sessions_unavailable", **target)
        return result
    if result == 0:
        await record(request, "sessions_action", "delete", "not_found", **target)
        return no_session(session_id)
    await record(request, "sessions_action", "delete", "ok", exchanges=result, **target)
    return JSONResponse({"ok": True, "profile": name, "session_id": session_id, "deleted": result})
