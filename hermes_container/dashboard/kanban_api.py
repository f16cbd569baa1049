"""JSON API of the Kanban page, all behind the auth gate (nothing here is public).

    GET  /api/kanban/board?board=          columns, profiles' running counts and caps
    GET  /api/kanban/tasks?board=&status=&limit=
    POST /api/kanban/tasks                 {title, body?, assignee?, priority?, parents?, board?}
    GET  /api/kanban/tasks/{id}            the task, its runs (no token), events, result
    POST /api/kanban/tasks/{id}/assign     {assignee: name or null}
    POST /api/kanban/tasks/{id}/unblock | /archive | /reclaim
    GET  /api/kanban/preview?board=        the next tick as a dry run (writes nothing)
    GET  /api/kanban/stream?board=&since=  the board's new events (text/event-stream)

POSTs pass the dashboard's CSRF middleware like every other one (X-CSRF-Token and a
same-origin Origin). Errors are one JSON line {"error", "detail"}: 400 for a body that
is not a JSON object, 422 for a value the board refuses, 404 for an unknown task or
board, 409 for an action the task's status forbids, 503 when the board is unreachable.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from hermes_container.dashboard.context import client_ip, ctx, user_label
from hermes_container.dashboard.kanban_board import LIST_LIMIT_MAX, KanbanBoard
from hermes_container.dashboard.kanban_live import BoardWatch, stream_events
from hermes_container.errors import HermesError, UsageError
from hermes_container.kanban.errors import (
    InvalidTransition,
    NotFound,
    NotHolder,
    StoreUnavailable,
)
from hermes_container.kanban.model import DEFAULT_BOARD, STATUSES

log = logging.getLogger("hermes.dashboard")
router = APIRouter(prefix="/api/kanban")
T = TypeVar("T")

MAX_BODY_BYTES = 256 * 1024
ACTIONS = ("unblock", "archive", "reclaim")
CREATE_FIELDS = frozenset({"title", "body", "assignee", "priority", "parents", "board"})
_ID = re.compile(r"[1-9][0-9]{0,17}")  # below 2**63, what both databases store
_COUNT = re.compile(r"[0-9]{1,18}")
# Integers a page can send exactly (JavaScript numbers), and far inside 64 bits.
MAX_JSON_INT = 2**53


class BadRequest(Exception):
    """The request itself is unusable (400), before the board sees any of it."""


def _board(request: Request) -> KanbanBoard:
    value: KanbanBoard = request.app.state.kanban
    return value


def _watch(request: Request) -> BoardWatch:
    value: BoardWatch = request.app.state.kanban_watch
    return value


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]


def _error(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": _one_line(detail)}, status_code=status)


def _failure(exc: Exception) -> JSONResponse:
    if isinstance(exc, BadRequest):
        return _error(400, "bad_request", str(exc))
    if isinstance(exc, NotFound):  # a UsageError too: first
        return _error(404, "not_found", exc.message)
    if isinstance(exc, UsageError):
        return _error(422, "invalid", exc.message)
    if isinstance(exc, InvalidTransition | NotHolder):
        return _error(409, "conflict", exc.message)
    if isinstance(exc, StoreUnavailable):
        return _error(503, "board_unavailable", exc.message)
    if isinstance(exc, HermesError):
        return _error(500, "failed", exc.message)
    raise exc


async def _call(fn: Callable[[], T]) -> T | JSONResponse:
    """Run a store operation in the threadpool; a refusal becomes its error response."""
    try:
        return await run_in_threadpool(fn)
    except (BadRequest, HermesError) as exc:
        return _failure(exc)


def _query_board(request: Request) -> str:
    return request.query_params.get("board") or DEFAULT_BOARD


def _task_id(raw: str) -> int | None:
    return int(raw) if _ID.fullmatch(raw) else None


def _no_task(raw: str) -> JSONResponse:
    return _error(404, "not_found", f"no task {raw[:40]!r}")


async def _json_object(request: Request) -> dict[str, Any]:
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(f"the request body is larger than {MAX_BODY_BYTES // 1024} KiB")
    try:
        data = json.loads(body or b"{}")
    except (ValueError, RecursionError):
        raise BadRequest("the request body must be a JSON object") from None
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    return data


def _optional_text(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise UsageError(f"{key} must be text")
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _create_args(data: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(data) - CREATE_FIELDS)
    if unknown:
        raise UsageError(f"unknown field(s): {', '.join(unknown)[:100]}")
    title = data.get("title")
    if not isinstance(title, str):
        raise UsageError("a task needs a title")
    body = data.get("body", "")
    if not isinstance(body, str):
        raise UsageError("a task body must be text")
    priority = data.get("priority", 0)
    if not _is_int(priority) or abs(priority) > MAX_JSON_INT:
        raise UsageError("priority must be a whole number")
    parents = data.get("parents") or []
    if not isinstance(parents, list) or not all(
        _is_int(p) and 0 < p <= MAX_JSON_INT for p in parents
    ):
        raise UsageError("parents must be a list of task ids")
    return {
        "board": _optional_text(data, "board") or DEFAULT_BOARD,
        "title": title,
        "body": body,
        "assignee": _optional_text(data, "assignee"),
        "priority": priority,
        "parents": parents,
    }


def _audit(request: Request, action: str, task: object, result: str) -> None:
    ctx(request).audit.write(
        "kanban_action",
        action=action,
        task=task,
        result=result,
        user=user_label(request),
        ip=client_ip(request),
    )


async def _write(
    request: Request, action: str, task: object, fn: Callable[[], T]
) -> T | JSONResponse:
    result = await _call(fn)
    _audit(request, action, task, _error_code(result) if isinstance(result, Response) else "ok")
    return result


def _error_code(response: Response) -> str:
    return str(json.loads(bytes(response.body)).get("error"))


def _respond(result: Any, status: int = 200) -> Response:
    if isinstance(result, Response):
        return result
    return JSONResponse(result, status_code=status)


# -- reads -----------------------------------------------------------------------------


@router.get("/board")
async def board_snapshot(request: Request) -> Response:
    kanban, board = _board(request), _query_board(request)
    return _respond(await _call(lambda: kanban.snapshot(board)))


@router.get("/tasks")
async def list_tasks(request: Request) -> Response:
    kanban, board = _board(request), _query_board(request)
    status = request.query_params.get("status") or None
    if status is not None and status not in STATUSES:
        return _error(422, "invalid", f"status must be one of {', '.join(STATUSES)}")
    raw_limit = request.query_params.get("limit")
    limit = int(raw_limit) if raw_limit and _COUNT.fullmatch(raw_limit) else None
    if raw_limit is not None and (limit is None or not 1 <= limit <= LIST_LIMIT_MAX):
        return _error(422, "invalid", f"limit must be a whole number from 1 to {LIST_LIMIT_MAX}")
    result = await _call(lambda: kanban.list_tasks(board, status, limit))
    return _respond(result if isinstance(result, Response) else {"board": board, "tasks": result})


@router.get("/tasks/{raw_id}")
async def show_task(request: Request, raw_id: str) -> Response:
    task_id = _task_id(raw_id)
    if task_id is None:
        return _no_task(raw_id)
    kanban = _board(request)
    return _respond(await _call(lambda: kanban.show(task_id)))


@router.get("/preview")
async def preview(request: Request) -> Response:
    kanban, board = _board(request), _query_board(request)
    return _respond(await _call(lambda: kanban.preview(board)))


@router.get("/stream")
async def stream(request: Request) -> Response:
    kanban, board = _board(request), _query_board(request)
    raw_since = request.query_params.get("since")
    if raw_since is not None and not _COUNT.fullmatch(raw_since):
        return _error(422, "invalid", "since must be an event id (a whole number)")

    def start() -> int:
        kanban.require_board(board)
        return int(raw_since) if raw_since is not None else kanban.last_event_id()

    last = await _call(start)
    if isinstance(last, Response):
        return last
    return StreamingResponse(
        stream_events(_watch(request), board, last, request.is_disconnected),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


# -- writes ----------------------------------------------------------------------------


@router.post("/tasks")
async def create_task(request: Request) -> Response:
    kanban = _board(request)
    try:
        args = _create_args(await _json_object(request))
    except (BadRequest, UsageError) as exc:
        return _failure(exc)
    result = await _call(lambda: kanban.create(**args))
    if isinstance(result, Response):
        _audit(request, "create", None, _error_code(result))
        return result
    _audit(request, "create", result["id"], "ok")
    return _respond(result, 201)


@router.post("/tasks/{raw_id}/assign")
async def assign_task(request: Request, raw_id: str) -> Response:
    task_id = _task_id(raw_id)
    if task_id is None:
        return _no_task(raw_id)
    kanban = _board(request)
    try:
        data = await _json_object(request)
        if set(data) != {"assignee"}:
            raise UsageError('assign takes one field, "assignee" (a profile name or null)')
        assignee = _optional_text(data, "assignee")
    except (BadRequest, UsageError) as exc:
        return _failure(exc)
    return _respond(
        await _write(request, "assign", task_id, lambda: kanban.assign(task_id, assignee))
    )


@router.post("/tasks/{raw_id}/{action}")
async def task_action(request: Request, raw_id: str, action: str) -> Response:
    if action not in ACTIONS:
        return _error(404, "not_found", "action must be assign, unblock, archive or reclaim")
    task_id = _task_id(raw_id)
    if task_id is None:
        return _no_task(raw_id)
    kanban = _board(request)
    method: Callable[[int], dict[str, Any]] = getattr(kanban, action)
    return _respond(await _write(request, action, task_id, lambda: method(task_id)))
