"""JSON API: public status, and the gated profile endpoints (list, detail, control, logs)."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from hermes_container.dashboard.context import client_ip, ctx, current_user, user_label
from hermes_container.dashboard.logtail import follow
from hermes_container.dashboard.public_status import StatusBody
from hermes_container.dashboard.read_model import profile_status, status_json
from hermes_container.errors import HermesError
from hermes_container.events.append import ACTOR
from hermes_container.names import is_valid_profile_name
from hermes_container.profiles import profile_exists

log = logging.getLogger("hermes.dashboard")
router = APIRouter()
ACTIONS = ("start", "stop", "restart")
ACTION_WAIT_S = 15.0


def _error(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


async def status_endpoint(request: Request) -> Response:
    """Public health summary (normally answered by the StatusFastPath middleware)."""
    body: StatusBody = request.app.state.status_body
    return Response(body.get(), media_type="application/json")


@router.get("/api/auth/providers")
async def auth_providers(request: Request) -> JSONResponse:
    providers = ctx(request).providers
    return JSONResponse({"providers": [p.to_json() for p in providers.info()] if providers else []})


@router.get("/api/session")
async def session_info(request: Request) -> JSONResponse:
    return JSONResponse({"user": current_user(request), "mode": ctx(request).settings.mode})


async def list_profiles_api(request: Request) -> Response:
    """Every profile's status (gated like every /api/* path but /api/status). The body is
    encoded once per rows generation (read_model.RowsCache says how fresh) and the same
    bytes go to every request; a plain Starlette route, like /api/status."""
    snapshot = await ctx(request).rows_snapshot()
    return Response(snapshot.profiles_json, media_type="application/json")


def _check_profile(request: Request, name: str) -> JSONResponse | None:
    if not is_valid_profile_name(name) or not profile_exists(ctx(request).home, name):
        return _error(404, "not_found", "no such profile")
    return None


@router.get("/api/profiles/{name}")
async def profile_api(request: Request, name: str) -> JSONResponse:
    if (missing := _check_profile(request, name)) is not None:
        return missing
    context = ctx(request)
    manager = context.managers.get()
    status = await run_in_threadpool(profile_status, context.home, manager, name)
    return JSONResponse(
        {"supervisor": manager.name if manager else None, "profile": status_json(status)}
    )


@router.post("/api/profiles/{name}/gateway/{action}")
async def gateway_action(request: Request, name: str, action: str) -> JSONResponse:
    if action not in ACTIONS:
        return _error(404, "not_found", "action must be start, stop or restart")
    if (missing := _check_profile(request, name)) is not None:
        return missing
    context = ctx(request)
    manager = context.managers.get()
    audit = {"user": user_label(request), "ip": client_ip(request), "profile": name}
    if manager is None:
        context.audit.write("gateway_action", action=action, result="no_supervisor", **audit)
        return _error(
            503,
            "supervisor_unavailable",
            "no supervision tree is running, so gateways cannot be controlled from here; "
            "run the container (or `hermes supervise`) to manage gateways",
        )
    method = getattr(manager, action)
    # The ledger's desired.changed names who asked (the threadpool copies the context).
    acting = ACTOR.set(f"dashboard:{audit['user']}")
    try:
        status = await run_in_threadpool(lambda: method(name, wait=ACTION_WAIT_S))
    except HermesError as exc:
        context.audit.write("gateway_action", action=action, result="error", **audit)
        return _error(409, "action_failed", exc.message)
    except Exception as exc:
        log.exception("gateway %s of %s failed", action, name)
        context.audit.write("gateway_action", action=action, result="error", **audit)
        return _error(500, "action_failed", f"{action} failed: {type(exc).__name__}")
    finally:
        ACTOR.reset(acting)
        # Whatever happened, the next read of the rows asks the supervisor again.
        await run_in_threadpool(context.rows.invalidate)
    context.audit.write("gateway_action", action=action, result="ok", **audit)
    return JSONResponse({"ok": True, "action": action, "status": status_json(status)})


@router.get("/api/profiles/{name}/logs")
async def profile_logs(request: Request, name: str, once: bool = False) -> Response:
    if (missing := _check_profile(request, name)) is not None:
        return missing
    path = ctx(request).home.gateway_log_dir(name) / "current"
    return StreamingResponse(
        follow(path, request.is_disconnected, once=once),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )
