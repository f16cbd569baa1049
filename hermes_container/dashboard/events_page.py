"""The Events page: a server-rendered shell (the filter form with this home's profiles
and the kind catalogue) that static/events.js fills from /api/events and keeps current
from /api/events/stream."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from hermes_container.dashboard.context import ctx
from hermes_container.dashboard.pages import render
from hermes_container.dashboard.timeline import LAYER_PREFIXES
from hermes_container.events.append import enabled
from hermes_container.events.model import BOARD_PREFIX, JOB_PREFIX, KINDS
from hermes_container.kanban.jobs.model import EVENT_KINDS as JOB_EVENT_KINDS
from hermes_container.kanban.model import EVENT_KINDS
from hermes_container.profiles import list_profiles

router = APIRouter()


@router.get("/events")
async def events_page(request: Request) -> Response:
    profiles = await run_in_threadpool(list_profiles, ctx(request).home)
    kinds = [
        *KINDS,
        *(BOARD_PREFIX + kind for kind in EVENT_KINDS),
        *(JOB_PREFIX + kind for kind in JOB_EVENT_KINDS),
    ]
    return render(
        request,
        "events.html",
        profiles=profiles,
        prefixes=LAYER_PREFIXES,
        kinds=kinds,
        descriptions={**KINDS, **{JOB_PREFIX + k: v for k, v in JOB_EVENT_KINDS.items()}},
        recording=enabled(),
    )
