"""The Jobs page: a server-rendered shell (the add form with this home's profiles and
the time zones this system knows) that static/jobs.js fills from /api/jobs and keeps
current from the jobs' event stream."""

from __future__ import annotations

from functools import lru_cache

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from hermes_container.dashboard.context import ctx
from hermes_container.dashboard.pages import render
from hermes_container.kanban.jobs.schedule import EVERY, Schedule
from hermes_container.kanban.jobs.spec import CATCHUP, OVERLAP, JobSpec
from hermes_container.profiles import list_profiles

router = APIRouter()
# A job with every setting at its default: what the form's empty fields mean.
DEFAULTS = JobSpec(name="draft", steps=(), schedule=Schedule(EVERY, every=60.0))


@lru_cache(maxsize=1)
def time_zones() -> list[str]:
    """The IANA names the add form suggests (any zone the system knows is accepted)."""
    from zoneinfo import available_timezones

    return sorted(name for name in available_timezones() if "/" in name or name == "UTC")


@router.get("/jobs")
async def jobs_page(request: Request) -> Response:
    profiles = await run_in_threadpool(list_profiles, ctx(request).home)
    zones = await run_in_threadpool(time_zones)
    return render(
        request,
        "jobs.html",
        profiles=profiles,
        zones=zones,
        overlap=OVERLAP,
        catchup=CATCHUP,
        defaults=DEFAULTS,
    )
