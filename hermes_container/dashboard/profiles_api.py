"""JSON API of profile management, all behind the auth gate; every write needs the CSRF
token (the middleware checks POST, PUT and DELETE alike):

    POST   /api/provider/models                  {"base_url", "api_key" | "profile"}
    POST   /api/profiles                          create {"name", "base_url", "model",
                                                  "api_key", "persona", "start"}
    DELETE /api/profiles/{name}                   {"confirm": "<name>"}
    GET    /api/profiles/{name}/settings          the form: fields, persona, versions
    POST   /api/profiles/{name}/settings/review   the diffs a save would write
    PUT    /api/profiles/{name}/settings          save, then reload the gateway
    POST   /api/profiles/{name}/key/rotate        a new API_SERVER_KEY, shown this once
    GET    /api/profiles/{name}/client            client snippets (the key as a variable)

The work is profile_admin.py's, run in the threadpool. Errors are one JSON line
{"error", "detail"}; bad input adds "fields" (one line per form field) and changes
nothing: 400 for bad input, 404 for an unknown profile, 409 for a stale form (the file
changed since it was loaded) or a failed supervisor action, 502 when the provider cannot
be asked. Every write is recorded in the auth audit log (`profiles_action`) and the
event ledger (`dashboard.action`, `profiles.<action>`), whatever its result, never with
a key. No answer carries a key except the rotation's, which carries the new one once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, TypeVar
from urllib.parse import urlsplit

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hermes_container.dashboard import client_snippets as snippets
from hermes_container.dashboard import profile_admin
from hermes_container.dashboard.context import ctx, user_label
from hermes_container.dashboard.profile_admin import FieldErrors, Stale
from hermes_container.dashboard.sessions_api import error, known_profile, no_profile, record
from hermes_container.errors import HermesError
from hermes_container.events.append import ACTOR

log = logging.getLogger("hermes.dashboard")
router = APIRouter()
T = TypeVar("T")

MAX_BODY_BYTES = 1024 * 1024  # a persona may be long; nothing else is
EVENT = "profiles_action"


class BadBody(Exception):
    """The request body is not a JSON object of acceptable size (400)."""


async def _json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise BadBody(f"the request body is larger than {MAX_BODY_BYTES // 1024} KiB")
    try:
        data = json.loads(raw or b"{}")
    except (ValueError, RecursionError):
        raise BadBody("the request body must be a JSON object") from None
    if not isinstance(data, dict):
        raise BadBody("the request body must be a JSON object")
    return data


def _invalid(exc: FieldErrors) -> JSONResponse:
    fields = {name: profile_admin.one_line(text) for name, text in exc.fields.items()}
    first = next(iter(fields.values()))
    return JSONResponse({"error": "invalid", "detail": first, "fields": fields}, 400)


async def _acting(request: Request, fn: Callable[[], T]) -> T:
    """`fn` in the threadpool, with the ledger naming the dashboard user as acting."""
    token = ACTOR.set(f"dashboard:{user_label(request)}")
    try:
        return await run_in_threadpool(fn)
    finally:
        ACTOR.reset(token)


async def _failed(request: Request, action: str, exc: Exception, **target: Any) -> JSONResponse:
    """One answer, and one audit record, for whatever a write raised."""
    if isinstance(exc, BadBody):
        await record(request, EVENT, action, "bad_request", **target)
        return error(400, "bad_request", str(exc))
    if isinstance(exc, FieldErrors):
        await record(request, EVENT, action, "invalid", **target)
        return _invalid(exc)
    if isinstance(exc, Stale):
        await record(request, EVENT, action, "stale", **target)
        return error(409, "stale", str(exc))
    if isinstance(exc, HermesError):
        await record(request, EVENT, action, "error", **target)
        return error(409, "action_failed", exc.message)
    log.error("profile %s failed: %s", action, type(exc).__name__)
    await record(request, EVENT, action, "error", **target)
    return error(500, "action_failed", f"{action} failed: {type(exc).__name__}")


# -- the provider's models ---------------------------------------------------------------


@router.post("/api/provider/models")
async def provider_models(request: Request) -> Response:
    """The models a provider lists, asked by the dashboard with the key the form holds
    (or a profile's stored key): the browser never talks to the provider."""
    home = ctx(request).home
    try:
        body = await _json(request)
        base_url = body.get("base_url")
        key = body.get("api_key")
        profile = body.get("profile")
        if not isinstance(base_url, str):
            raise FieldErrors({"base_url": "model.base_url is required"})
        if key is not None and not isinstance(key, str):
            raise FieldErrors({"api_key": "the API key must be text"})
        if not key and isinstance(profile, str) and known_profile(request, profile):
            key = await run_in_threadpool(profile_admin.stored_model_key, home, profile)
        models = await run_in_threadpool(
            profile_admin.provider_models, base_url.strip(), (key or "").strip() or None
        )
    except (BadBody, FieldErrors) as exc:
        return await _failed(request, "list_models", exc)
    except HermesError as exc:
        from hermes_container.provider import KeyRefused

        await record(request, EVENT, "list_models", "provider_error")
        field = "api_key" if isinstance(exc, KeyRefused) else "base_url"
        status = 400 if exc.exit_code == 2 else 502
        detail = profile_admin.one_line(exc.message)
        return JSONResponse(
            {"error": "provider_error", "detail": detail, "fields": {field: detail}}, status
        )
    await record(request, EVENT, "list_models", "ok")
    return JSONResponse({"models": models})


# -- create and delete -------------------------------------------------------------------


@router.post("/api/profiles")
async def create_profile(request: Request) -> Response:
    context = ctx(request)
    target: dict[str, Any] = {}
    try:
        body = await _json(request)
        new = await run_in_threadpool(profile_admin.parse_new_profile, context.home, body)
        target["profile"] = new.name
        manager = context.managers.get()
        created = await _acting(request, lambda: profile_admin.create(context.home, manager, new))
    except Exception as exc:
        return await _failed(request, "create", exc, **target)
    finally:
        await run_in_threadpool(context.rows.invalidate)
    await record(request, EVENT, "create", "ok", **target, started=created.started)
    return JSONResponse(
        {
            "ok": True,
            "profile": created.name,
            "port": created.port,
            "started": created.started,
            "detail": created.detail,
            "url": f"/profiles/{created.name}",
        },
        201,
    )


@router.delete("/api/profiles/{name}")
async def delete_profile(request: Request, name: str) -> Response:
    if not known_profile(request, name):
        await record(request, EVENT, "delete", "not_found")
        return no_profile()
    context = ctx(request)
    try:
        body = await _json(request)
        profile_admin.check_delete(name, body.get("confirm"))
        manager = context.managers.get()
        await _acting(request, lambda: profile_admin.delete(context.home, manager, name))
    except Exception as exc:
        return await _failed(request, "delete", exc, profile=name)
    finally:
        await run_in_threadpool(context.rows.invalidate)
    await record(request, EVENT, "delete", "ok", profile=name)
    return JSONResponse({"ok": True, "profile": name, "detail": f"deleted profile {name!r}"})


# -- settings and persona ----------------------------------------------------------------


@router.get("/api/profiles/{name}/settings")
async def settings_form(request: Request, name: str) -> Response:
    if not known_profile(request, name):
        return no_profile()
    try:
        form = await run_in_threadpool(profile_admin.settings_form, ctx(request).home, name)
    except HermesError as exc:
        return error(409, "unreadable", exc.message)
    return JSONResponse(form)


@router.post("/api/profiles/{name}/settings/review")
async def review_settings(request: Request, name: str) -> Response:
    """The unified diffs a save would write; nothing is written, nothing recorded."""
    if not known_profile(request, name):
        return no_profile()
    try:
        body = await _json(request)
        plan = await run_in_threadpool(profile_admin.plan_edit, ctx(request).home, name, body)
    except BadBody as exc:
        return error(400, "bad_request", str(exc))
    except FieldErrors as exc:
        return _invalid(exc)
    except Stale as exc:
        return error(409, "stale", str(exc))
    except HermesError as exc:
        return error(409, "unreadable", exc.message)
    return JSONResponse(plan.to_json())


@router.put("/api/profiles/{name}/settings")
async def save_settings(request: Request, name: str) -> Response:
    if not known_profile(request, name):
        await record(request, EVENT, "edit", "not_found")
        return no_profile()
    home = ctx(request).home

    def plan_and_save() -> profile_admin.Saved:
        plan = profile_admin.plan_edit(home, name, body)
        return profile_admin.save(home, plan)

    try:
        body = await _json(request)
        saved = await _acting(request, plan_and_save)
    except Exception as exc:
        return await _failed(request, "edit", exc, profile=name)
    result = "ok" if saved.outcome is None or saved.outcome.applied else "not_applied"
    await record(request, EVENT, "edit", result, profile=name, changed=",".join(saved.changed))
    form = await run_in_threadpool(profile_admin.settings_form, home, name)
    return JSONResponse(
        {
            "ok": True,
            **saved.to_json(),
            "config_version": form["config_version"],
            "persona_version": form["persona_version"],
        }
    )


# -- the gateway key ---------------------------------------------------------------------


@router.post("/api/profiles/{name}/key/rotate")
async def rotate_key(request: Request, name: str) -> Response:
    """The one answer that carries a key: the new one, for the page to show once."""
    if not known_profile(request, name):
        await record(request, EVENT, "rotate_key", "not_found")
        return no_profile()
    home = ctx(request).home
    try:
        key, outcome = await _acting(request, lambda: profile_admin.rotate(home, name))
    except Exception as exc:
        return await _failed(request, "rotate_key", exc, profile=name)
    result = "ok" if outcome.applied else "not_applied"
    await record(request, EVENT, "rotate_key", result, profile=name)
    return JSONResponse(
        {"ok": True, "profile": name, "api_key": key, "reload": outcome.to_json()},
        headers={"cache-control": "no-store"},
    )


# -- client snippets ---------------------------------------------------------------------


def _dashboard_host(request: Request) -> str:
    """The host the operator reached the dashboard by (its public URL's when set)."""
    public = ctx(request).settings.public_url
    host = urlsplit(public).hostname if public else request.url.hostname
    if host and ":" in host:
        host = f"[{host}]"
    return snippets.safe_host(host)


def _ingress_port() -> int:
    from hermes_container.config import INGRESS_DEFAULT_PORT, env_port

    try:
        return env_port("HERMES_INGRESS_PORT", INGRESS_DEFAULT_PORT)
    except HermesError:
        return INGRESS_DEFAULT_PORT


@router.get("/api/profiles/{name}/client")
async def client_snippets(request: Request, name: str) -> Response:
    if not known_profile(request, name):
        return no_profile()
    home = ctx(request).home
    host = _dashboard_host(request)

    def build() -> list[snippets.Snippet]:
        from hermes_container.config import read_port

        try:
            port = read_port(home.profile_dir(name))
        except HermesError:
            port = None
        own_host = snippets.gateway_host(home, name, host)
        return snippets.client_snippets(name, host, port, _ingress_port(), own_host)

    made = await run_in_threadpool(build)
    return JSONResponse(
        {
            "profile": name,
            "key_variable": snippets.KEY_VARIABLE,
            "snippets": [asdict(s) for s in made],
        }
    )
