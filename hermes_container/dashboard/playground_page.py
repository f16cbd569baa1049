"""The Playground page: a server-rendered shell (this home's profiles) that
static/playground.js drives: the session picker (from /api/sessions), the
conversation so far, and each answer streamed from /api/playground as it arrives.
`?profile=` and `?session=` open it on a profile and a session."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from hermes_container.dashboard.context import ctx
from hermes_container.dashboard.pages import render
from hermes_container.dashboard.playground_api import MAX_MESSAGE_CHARS
from hermes_container.dashboard.session_reader import SESSION_ID
from hermes_container.home import DEFAULT_PROFILE
from hermes_container.profiles import list_profiles

router = APIRouter()


@router.get("/playground")
async def playground_page(request: Request) -> Response:
    profiles = await run_in_threadpool(list_profiles, ctx(request).home)
    profile = request.query_params.get("profile") or DEFAULT_PROFILE
    if profile not in profiles:
        return render(request, "error.html", 404, title="Not found", message="No such profile.")
    session = request.query_params.get("session") or ""
    return render(
        request,
        "playground.html",
        profiles=profiles,
        profile=profile,
        session=session if SESSION_ID.fullmatch(session) else "",
        max_chars=MAX_MESSAGE_CHARS,
    )
