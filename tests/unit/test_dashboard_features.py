"""Features loaded on first use: every route is reachable, the overview loads none of
them, an unauthenticated request loads nothing, and app.state.kanban still works."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any, cast

import pytest
from fastapi.routing import APIRoute
from starlette.testclient import TestClient

from hermes_container.dashboard.app import create_app
from hermes_container.dashboard.features import Feature, FeatureState, features
from hermes_container.dashboard.kanban_board import KanbanBoard
from hermes_container.dashboard.settings import DashboardSettings
from hermes_container.home import HermesHome
from tests.unit.dashboard_support import FakeManager

TOKEN = "features-token-1234"
AUTH = {"X-Hermes-Session-Token": TOKEN}
# What an open overview or profile page asks for, again and again.
OVERVIEW = [
    ("GET", "/"),
    ("GET", "/api/status"),
    ("GET", "/api/profiles"),
    ("GET", "/api/profiles/default"),
    ("GET", "/api/profiles/default/logs"),
    ("POST", "/api/profiles/default/gateway/restart"),
    ("GET", "/profiles/default"),
    ("GET", "/logs/audit"),
    ("GET", "/logs/boot"),
]


def _routes(feature: Feature) -> list[tuple[str, str]]:
    found = []
    for module in feature.import_modules():
        for route in module.router.routes:
            assert isinstance(route, APIRoute), route
            path = re.sub(r"\{[^}]+\}", "x1", route.path)
            found += [(method, path) for method in sorted(route.methods or ())]
    return found


@pytest.mark.parametrize("feature", features(), ids=lambda f: f.name)
def test_every_route_of_a_feature_loads_it(feature: Feature) -> None:
    routes = _routes(feature)
    assert routes, f"{feature.name} has no routes"
    missed = [f"{m} {p}" for m, p in routes if not feature.wants(m, p)]
    assert not missed, f"{feature.name}'s pattern misses {missed}"


def test_the_overview_needs_no_feature() -> None:
    for method, path in OVERVIEW:
        assert not [f.name for f in features() if f.wants(method, path)], (method, path)


@pytest.fixture
def client(home: HermesHome) -> Iterator[TestClient]:
    app = create_app(
        DashboardSettings(session_token=TOKEN),
        home=home,
        manager=cast(Any, FakeManager(["default"])),
    )
    with TestClient(app, base_url="http://127.0.0.1:9119", follow_redirects=False) as tc:
        yield tc


def loaded(client: TestClient) -> set[str]:
    state = client.app.state  # type: ignore[attr-defined]
    assert isinstance(state, FeatureState)
    return {f.name for f in state.features.table if f.loaded}


def test_features_load_on_their_first_authenticated_request(client: TestClient) -> None:
    assert client.get("/").status_code == 200
    for path in ("/api/status", "/api/profiles", "/api/profiles/default", "/profiles/default"):
        assert client.get(path, headers=AUTH).status_code == 200, path
    assert client.get("/api/profiles/default/logs?once=true", headers=AUTH).status_code == 200
    assert loaded(client) == set()
    assert client.get("/api/kanban/board").status_code == 401  # no token: nothing loads
    assert client.get("/api/sessions/default").status_code == 401
    assert loaded(client) == set()
    assert client.get("/kanban").status_code == 200  # a page: carries the token
    assert loaded(client) == {"board"}
    assert client.get("/api/jobs", headers=AUTH).status_code == 200  # same feature
    assert client.get("/api/events", headers=AUTH).status_code == 200
    assert client.get("/api/profiles/default/settings", headers=AUTH).status_code == 200
    assert loaded(client) == {"board", "events", "profile editor"}
    assert client.get("/playground").status_code == 200
    assert loaded(client) == {"board", "events", "profile editor", "sessions"}
    assert client.get("/api/kanban/nope", headers=AUTH).status_code == 404


def test_reading_the_board_from_app_state_loads_it(client: TestClient) -> None:
    board = client.app.state.kanban  # type: ignore[attr-defined]
    assert isinstance(board, KanbanBoard) and loaded(client) == {"board"}
    assert client.app.state.kanban is board  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        client.app.state.no_such_thing  # type: ignore[attr-defined]


PROBE = """
import sys
from starlette.testclient import TestClient
from hermes_container.dashboard.app import create_app
from hermes_container.dashboard.settings import DashboardSettings
from hermes_container.home import HermesHome
from hermes_container.profiles import ensure_default_profile
home = HermesHome.from_env()
ensure_default_profile(home)
app = create_app(DashboardSettings(session_token="t"), home=home, manager=None)
heavy = ("hermes_container.kanban.store", "hermes_container.kanban.dispatcher",
         "hermes_container.dashboard.session_reader", "difflib")
with TestClient(app, base_url="http://127.0.0.1:9119") as client:
    for path in ("/", "/api/profiles", "/api/status", "/logs/audit"):
        assert client.get(path, headers={"X-Hermes-Session-Token": "t"}).status_code == 200
    print("overview:", ",".join(m for m in heavy if m in sys.modules))
    assert client.get("/kanban").status_code == 200
    print("kanban:", ",".join(m for m in heavy if m in sys.modules))
"""


def test_a_fresh_dashboard_imports_the_board_only_when_asked(home: HermesHome) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "overview: ", lines
    assert "hermes_container.kanban.dispatcher" in lines[1], lines
