"""The Sessions page: a server-rendered shell (this home's profiles) that
static/sessions.js fills from /api/sessions: the list, search, a transcript, export
and delete. `?profile=`, `?session=` and `?q=` open it on a profile, a session or a
search (the playground links here with them)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from hermes_container.dashboard.context import ctx
from hermes_container.dashboard.pages import render
from hermes_container.dashboard.session_reader import QUERY_MAX, SESSION_ID
from hermes_container.home import DEFAULT_PROFILE
from hermes_container.profiles import list_profiles

router = APIRouter()


@router.get("/sessions")
async def sessions_page(request: Request) -> Response:
    profiles = await run_in_threadpool(list_profiles, ctx(request).home)
    profile = request.query_params.get("profile") or DEFAULT_PROFILE
    if profile not in profiles:
        return render(request, "error.html", 404, title="Not found", message="No such profile.")
    session = request.query_params.get("session") or ""
    query = (request.query_params.get("q") or "").strip()[:QUERY_MAX]
    return render(
        request,
        "sessions.html",
        profiles=profiles,
        profile=profile,
        session=session if SESSION_ID.fullmatch(session) else "",
        query=query,
    )
