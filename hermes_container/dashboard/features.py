"""Dashboard features whose modules are imported on the first request to one of them.

The board (Kanban and jobs: the board's store, dispatcher and schedules), the event
views, the sessions browser and playground, and the profile editor (difflib, the config
schema) are about 2 MB of modules that a dashboard whose users only watch the overview
never needs (bench/bench_dashboard.py: RSS after three OAuth logins, 71.9 -> 69.8 MB).
The app includes a feature's routers the first time a request for one of its paths
passes the auth gate and CSRF check (LoadFeatures is the innermost middleware), so an
unauthenticated request never makes the process load anything. `app.state.kanban`
and `app.state.kanban_watch` load the board when first read, wherever from.

tests/unit/test_dashboard_features.py checks that every route of every feature is
matched by its pattern and that the overview's paths load none of them.
"""

from __future__ import annotations

import importlib
import re
import threading
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import State

from hermes_container.dashboard.asgi import ASGIApp, Receive, Scope, Send
from hermes_container.home import HermesHome

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fastapi import FastAPI

PACKAGE = "hermes_container.dashboard"


class Feature:
    """Route modules loaded together, the requests that need them ("METHOD /path",
    matched whole), and the app.state attributes they provide."""

    __slots__ = ("loaded", "modules", "name", "pattern", "provides")

    def __init__(
        self, name: str, modules: tuple[str, ...], pattern: str, provides: tuple[str, ...] = ()
    ) -> None:
        self.name = name
        self.modules = modules
        self.pattern = re.compile(pattern)
        self.provides = provides
        self.loaded = False

    def wants(self, method: str, path: str) -> bool:
        return self.pattern.fullmatch(f"{method} {path}") is not None

    def import_modules(self) -> list[Any]:
        return [importlib.import_module(f"{PACKAGE}.{name}") for name in self.modules]


def features() -> tuple[Feature, ...]:
    """A fresh table for one app (each app loads its own)."""
    return (
        Feature(
            "board",
            ("kanban_api", "kanban_page", "jobs_api", "jobs_page"),
            r"\S+ /(api/)?(kanban|jobs)(/.*)?",
            provides=("kanban", "kanban_watch"),
        ),
        Feature(
            "events",
            ("events_api", "events_page"),
            r"\S+ /(api/)?events(/.*)?|\S+ /api/activity(/.*)?"
            r"|\S+ /api/profiles/[^/]+/(timeline|charts)(/.*)?",
        ),
        Feature(
            "sessions",
            ("sessions_api", "sessions_page", "playground_api", "playground_page"),
            r"\S+ /(api/)?(sessions|playground)(/.*)?",
        ),
        Feature(
            "profile editor",
            ("profiles_api",),
            # Not GET /api/profiles(/<name>): the overview's and profile page's polls.
            r"\S+ /api/provider(/.*)?|(?!GET )\S+ /api/profiles(/[^/]+)?"
            r"|\S+ /api/profiles/[^/]+/(settings|key|client)(/.*)?",
        ),
    )


class Features:
    """The app's lazily loaded features: load one, and close what they opened."""

    def __init__(self, app: FastAPI, home: HermesHome) -> None:
        self.app = app
        self.home = home
        self.table = features()
        self._lock = threading.Lock()
        self.any_pending: re.Pattern[str] | None = None  # one match per request: ~1 us
        self._rebuild()

    def _rebuild(self) -> None:
        pending = [f"(?:{f.pattern.pattern})" for f in self.table if not f.loaded]
        self.any_pending = re.compile("|".join(pending)) if pending else None

    def wanted(self, method: str, path: str) -> list[Feature]:
        return [f for f in self.table if not f.loaded and f.wants(method, path)]

    def providing(self, attribute: str) -> Feature | None:
        return next((f for f in self.table if attribute in f.provides), None)

    def load(self, feature: Feature) -> None:
        """Import the feature's modules (if not yet) and include their routers."""
        with self._lock:
            if feature.loaded:
                return
            modules = feature.import_modules()
            if "kanban" in feature.provides:
                self._open_board()
            for module in modules:
                self.app.include_router(module.router)
            feature.loaded = True
            self._rebuild()

    def _open_board(self) -> None:
        from hermes_container.dashboard.kanban_board import KanbanBoard
        from hermes_container.dashboard.kanban_live import BoardWatch

        board = KanbanBoard(self.home)  # opens the board's store on first use
        self.app.state.kanban = board
        self.app.state.kanban_watch = BoardWatch(board)

    def close(self) -> None:
        state = self.app.state
        if isinstance(state, FeatureState) and state.holds("kanban"):
            state.kanban_watch.close()
            state.kanban.close()


class FeatureState(State):
    """app.state whose feature attributes (the board) load their feature on first read."""

    def __init__(self, features: Features, state: dict[str, Any] | None = None) -> None:
        super().__init__(state)
        object.__setattr__(self, "_features", features)

    @property
    def features(self) -> Features:
        loader: Features = object.__getattribute__(self, "_features")
        return loader

    def holds(self, key: str) -> bool:
        return key in self._state

    def __getattr__(self, key: Any) -> Any:
        try:
            return super().__getattr__(key)
        except AttributeError:
            feature = self.features.providing(key) if isinstance(key, str) else None
            if feature is None or feature.loaded:
                raise
            self.features.load(feature)
            return super().__getattr__(key)


def install(app: FastAPI, home: HermesHome) -> Features:
    """Give `app` its lazily loaded features; add LoadFeatures as the innermost middleware
    (call before adding the others)."""
    loader = Features(app, home)
    app.state = FeatureState(loader, dict(app.state._state))
    app.add_middleware(LoadFeatures, features=loader)
    return loader


class LoadFeatures:
    """Pure ASGI: before routing, load the features this request needs. The imports run
    in the threadpool (a first visit to a feature must not stall every other request);
    the routers are included here, on the event loop, between two requests' routing."""

    def __init__(self, app: ASGIApp, features: Features) -> None:
        self.app = app
        self.features = features

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        pending = self.features.any_pending
        if pending is not None and scope["type"] in ("http", "websocket"):
            method, path = scope.get("method", "GET"), scope["path"]
            if pending.fullmatch(f"{method} {path}"):
                for feature in self.features.wanted(method, path):
                    await run_in_threadpool(feature.import_modules)
                    self.features.load(feature)
        await self.app(scope, receive, send)
