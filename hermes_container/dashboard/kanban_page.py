"""The Kanban page: a server-rendered shell (the create form with this home's profiles,
one empty column per status) that static/kanban.js fills from /api/kanban and keeps
current from its event stream."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from hermes_container.dashboard.context import ctx
from hermes_container.dashboard.pages import render
from hermes_container.kanban.model import ARCHIVED, DEFAULT_BOARD, STATUSES
from hermes_container.names import is_valid_profile_name
from hermes_container.profiles import list_profiles

router = APIRouter()


@router.get("/kanban")
async def kanban_page(request: Request) -> Response:
    board = request.query_params.get("board") or DEFAULT_BOARD
    if not is_valid_profile_name(board):  # the board slug rule is the profile name rule
        return render(request, "error.html", 404, title="Not found", message="No such board.")
    profiles = await run_in_threadpool(list_profiles, ctx(request).home)
    return render(
        request,
        "kanban.html",
        board=board,
        profiles=profiles,
        statuses=[s for s in STATUSES if s != ARCHIVED],
        archived=ARCHIVED,
    )
