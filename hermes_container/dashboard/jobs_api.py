"""JSON API of the Jobs page, all behind the auth gate (nothing here is public).

    GET  /api/jobs                     every job: schedule, next slot, last outcome, history
    POST /api/jobs                     add {name, profile + prompt | steps, cron | every | at,
                                       timezone?, board?, max_retries?, retry_delay?,
                                       retry_max_delay?, timeout?, overlap?, catchup?, deliver?}
    GET  /api/jobs/preview?cron=|every=|at=&timezone=   a draft schedule's next five slots
    GET  /api/jobs/dead                the dead-letter queue: runs and deliveries
    POST /api/jobs/runs/{id}/retry     a dead-lettered run or delivery, again
    GET  /api/jobs/job/{name}          one job: settings, next five slots, last runs
    POST /api/jobs/job/{name}/pause | /resume | /run
    GET  /api/jobs/stream?since=       the jobs' new events (text/event-stream)

A job's name sits under /job/, so no name (they follow the profile rules) can shadow
preview, dead, runs or stream. POSTs pass the dashboard's CSRF middleware like every
other one, and each is written to the auth audit log (`jobs_action`) and the event
ledger (`dashboard.action`, action `jobs.<what>`), whatever its result.

Errors are one JSON line {"error", "detail"}: 400 for input `hermes jobs add` would
refuse (the same message) or a body that is not a JSON object, 404 for an unknown job,
run or board, 409 for an action the run's state forbids, 503 when the board is
unreachable. The answer to an add carries the job's delivery secret, once: it is not
stored anywhere the page or any other endpoint can read it back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from hermes_container.dashboard.context import client_ip, ctx, user_label
from hermes_container.dashboard.jobs_live import stream_job_events
from hermes_container.dashboard.jobs_view import JobsView
from hermes_container.dashboard.kanban_board import KanbanBoard
from hermes_container.dashboard.kanban_live import BoardWatch
from hermes_container.errors import HermesError, UsageError
from hermes_container.kanban.errors import InvalidTransition, NotFound, StoreUnavailable
from hermes_container.names import is_valid_profile_name

router = APIRouter(prefix="/api/jobs")
T = TypeVar("T")

# A pipeline may have 20 steps of 32,000 characters each (spec.py), JSON-escaped.
MAX_BODY_BYTES = 1024 * 1024
JOB_ACTIONS = ("pause", "resume", "run")
_ID = re.compile(r"[1-9][0-9]{0,17}")
_COUNT = re.compile(r"[0-9]{1,18}")


class BadRequest(Exception):
    """The request itself is unusable (400), before the board sees any of it."""


def _view(request: Request) -> JobsView:
    board: KanbanBoard = request.app.state.kanban
    return JobsView(board)


def _watch(request: Request) -> BoardWatch:
    value: BoardWatch = request.app.state.kanban_watch
    return value


def _error(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse(
        {"error": error, "detail": " ".join(detail.split())[:500]}, status_code=status
    )


def _failure(exc: Exception) -> JSONResponse:
    if isinstance(exc, BadRequest):
        return _error(400, "bad_request", str(exc))
    if isinstance(exc, NotFound):  # a UsageError too: first
        return _error(404, "not_found", exc.message)
    if isinstance(exc, UsageError):
        return _error(400, "invalid", exc.message)
    if isinstance(exc, InvalidTransition):
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


def _respond(result: Any, status: int = 200) -> Response:
    if isinstance(result, Response):
        return result
    return JSONResponse(result, status_code=status)


def _result_code(result: object) -> str:
    if isinstance(result, Response):
        return str(json.loads(bytes(result.body)).get("error"))
    return "ok"


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


async def _record(request: Request, action: str, result: str, **target: object) -> None:
    """An action in the audit log; its observer copies it into the event ledger as
    `dashboard.action` (ledger_audit.py), as it does the gateway and board actions."""
    context = ctx(request)
    await run_in_threadpool(
        context.audit.write,
        "jobs_action",
        action=action,
        result=result,
        user=user_label(request),
        ip=client_ip(request),
        **target,
    )


def _no_job(raw: str) -> JSONResponse:
    return _error(404, "not_found", f"no job {raw[:64]!r}")


# -- reads -----------------------------------------------------------------------------


@router.get("")
async def list_jobs(request: Request) -> Response:
    view = _view(request)
    return _respond(await _call(view.overview))


@router.get("/preview")
async def preview(request: Request) -> Response:
    view = _view(request)
    query = dict(request.query_params)
    return _respond(await _call(lambda: view.preview(query)))


@router.get("/dead")
async def dead_letters(request: Request) -> Response:
    view = _view(request)
    return _respond(await _call(view.dead))


@router.get("/job/{name}")
async def show_job(request: Request, name: str) -> Response:
    if not is_valid_profile_name(name):  # the job name rule is the profile name rule
        return _no_job(name)
    view = _view(request)
    return _respond(await _call(lambda: view.detail(name)))


@router.get("/stream")
async def stream(request: Request) -> Response:
    view = _view(request)
    raw_since = request.query_params.get("since")
    if raw_since is not None and not _COUNT.fullmatch(raw_since):
        return _error(400, "invalid", "since must be an event id (a whole number)")

    def start() -> int:
        return int(raw_since) if raw_since is not None else view.last_event_id()

    last = await _call(start)
    if isinstance(last, Response):
        return last
    return StreamingResponse(
        stream_job_events(_watch(request), view, last, request.is_disconnected),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


# -- writes ----------------------------------------------------------------------------


@router.post("")
async def add_job(request: Request) -> Response:
    view = _view(request)
    try:
        data = await _json_object(request)
    except BadRequest as exc:
        await _record(request, "add", "bad_request")
        return _failure(exc)
    name = data.get("name") if isinstance(data.get("name"), str) else None
    result = await _call(lambda: view.add(data))
    if isinstance(result, Response):
        await _record(request, "add", _result_code(result), job=name and name[:64])
        return result
    row, secret = result
    await _record(request, "add", "ok", job=row["name"])
    # The secret is in this answer and nowhere else: nothing may keep a copy of it.
    return JSONResponse(
        {**row, "secret": secret}, status_code=201, headers={"cache-control": "no-store"}
    )


@router.post("/runs/{raw_id}/retry")
async def retry_run(request: Request, raw_id: str) -> Response:
    if not _ID.fullmatch(raw_id):
        return _error(404, "not_found", f"no job run {raw_id[:40]!r}")
    run_id = int(raw_id)
    view = _view(request)
    result = await _call(lambda: view.retry(run_id))
    job = result.get("job") if isinstance(result, dict) else None
    await _record(request, "retry", _result_code(result), job=job, run=run_id)
    return _respond(result)


@router.post("/job/{name}/{action}")
async def job_action(request: Request, name: str, action: str) -> Response:
    if action not in JOB_ACTIONS:
        return _error(404, "not_found", "action must be pause, resume or run")
    if not is_valid_profile_name(name):
        return _no_job(name)
    view = _view(request)
    method: Callable[[str], dict[str, Any]] = {
        "pause": view.pause,
        "resume": view.resume,
        "run": view.run_now,
    }[action]
    result = await _call(lambda: method(name))
    run = result.get("id") if isinstance(result, dict) and action == "run" else None
    await _record(request, action, _result_code(result), job=name, run=run)
    return _respond(result)
