"""The dashboard's ledger views: the Events page and its API and stream, a profile's
timeline and request charts, the overview's restarts and board throughput.

Events are written by the real writers (`record`, the board's `carry`, profile
creation); request figures come from a real gateway's sessions.db, or from a large
sessions.db built with the gateway's own schema where the test is about its size.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import random
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from hermes_container.dashboard import exchange_series as series_module
from hermes_container.dashboard.app import create_app
from hermes_container.dashboard.auth.allowlist import Allowlist
from hermes_container.dashboard.auth.public_paths import is_public_path
from hermes_container.dashboard.context import PACKAGE_DIR
from hermes_container.dashboard.events_api import follow_ledger
from hermes_container.dashboard.exchange_series import WINDOWS, exchange_series, open_readonly
from hermes_container.dashboard.ledger_views import ledger_for, newest
from hermes_container.dashboard.settings import DashboardSettings, OidcConfig
from hermes_container.dashboard.timeline import LAYER_PREFIXES, describe
from hermes_container.events.append import open_ledger, record
from hermes_container.events.ledger import Ledger
from hermes_container.events.model import KINDS, LedgerEvent
from hermes_container.gateway.sessions import connect as sessions_connect
from hermes_container.home import HermesHome
from hermes_container.kanban.ledger_copy import carry
from hermes_container.kanban.model import Holder
from hermes_container.kanban.store import open_store
from tests.conftest import wait_for
from tests.fake_upstream import FakeUpstream
from tests.unit.conftest import GatewayProfile
from tests.unit.dashboard_support import clean_env, dashboard_process

TOKEN = "events-test-token"
LOCAL = "http://127.0.0.1:9119"
VENDOR = PACKAGE_DIR / "static" / "vendor" / "uplot"
GATED_READS = [
    "/api/events",
    "/api/events/stream",
    "/api/profiles/alpha/timeline",
    "/api/profiles/alpha/charts",
    "/api/activity",
]


def _app(home: HermesHome) -> Any:
    return create_app(DashboardSettings(session_token=TOKEN), home=home, manager=None)


@pytest.fixture
def client(home: HermesHome) -> Iterator[TestClient]:
    with TestClient(_app(home), base_url=LOCAL, follow_redirects=False) as tc:
        tc.headers["X-Hermes-Session-Token"] = TOKEN
        yield tc


def one_line_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert "\n" not in response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "detail"} and body["detail"], body
    return body


def every_event(home: HermesHome) -> list[LedgerEvent]:
    return list(open_ledger(home.root).iterate(0))


# -- the gate ---------------------------------------------------------------------------


def test_nothing_new_is_public() -> None:
    for target in ["/events", *GATED_READS]:
        assert not is_public_path(target), target


def test_token_mode_serves_the_page_but_no_data_without_the_token(home: HermesHome) -> None:
    with TestClient(_app(home), base_url=LOCAL, follow_redirects=False) as anonymous:
        page = anonymous.get("/events")
        # The loopback page carries the token to its own scripts, like /kanban.
        assert page.status_code == 200
        assert '<meta name="hermes-session-token"' in page.text
        for target in GATED_READS:
            assert anonymous.get(target).status_code == 401, target


def test_oauth_mode_without_a_session_gets_nothing(home: HermesHome) -> None:
    record(home.root, "gateway.exited", profile="alpha", actor="supervisor", how="secret-ish")
    settings = DashboardSettings(
        host="0.0.0.0",
        mode="oauth",
        oidc=OidcConfig("http://127.0.0.1:9", "client", "secret"),
        allowlist=Allowlist.build(emails=["alice@example.com"]),
        public_url="http://127.0.0.1:9119",
    )
    app = create_app(settings, home=home, manager=None)
    with TestClient(app, base_url=LOCAL, follow_redirects=False) as anonymous:
        page = anonymous.get("/events")
        assert page.status_code == 303 and page.headers["location"] == "/login?next=/events"
        for target in GATED_READS:
            response = anonymous.get(target)
            assert response.status_code == 401, target
            assert "secret-ish" not in response.text


# -- the Events page and its API ----------------------------------------------------------


def test_the_page_offers_every_kind_layer_and_profile(client: TestClient) -> None:
    html = client.get("/events").text
    for kind in KINDS:
        assert f'<option value="{kind}"' in html, kind
    for prefix in LAYER_PREFIXES:
        assert f'<option value="{prefix}">{prefix}*</option>' in html, prefix
    assert '<option value="kanban.completed"' in html
    assert re.search(r'<select id="events-profile"[^>]*>.*?<option value="alpha">', html, re.S)
    assert '<script src="/static/events.js" defer></script>' in html
    assert '<a href="/events">Events</a>' in client.get("/").text
    assert "recording off" not in html


def test_the_page_says_when_recording_is_off(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HERMES_EVENTS", "0")
    assert "recording off (HERMES_EVENTS=0)" in client.get("/events").text


def _seed(home: HermesHome, now: float) -> None:
    """A small history: two profiles, several layers, spread over three hours."""
    writes: list[tuple[str, str | None, float, dict[str, Any]]] = [
        ("gateway.starting", "alpha", now - 3 * 3600, {"pid": 10, "port": 9001}),
        ("gateway.ready", "alpha", now - 3 * 3600 + 1, {"pid": 10, "port": 9001}),
        ("gateway.starting", "default", now - 2 * 3600, {"pid": 20, "port": 9000}),
        ("desired.changed", "alpha", now - 2 * 3600 + 5, {"from": "running", "to": "stopped"}),
        ("gateway.stopped", "alpha", now - 3000, {"reason": "asked"}),
        ("dashboard.login", None, now - 1800, {"user": "alice"}),
        ("gateway.exited", "default", now - 60, {"expected": False, "code": 137, "signal": 9}),
        ("gateway.restarted", "default", now - 59, {"restarts": 1}),
    ]
    for kind, profile, at, data in writes:
        assert record(home.root, kind, profile=profile, actor="test", at=at, data=data)


def test_events_newest_first_with_filters(client: TestClient, home: HermesHome) -> None:
    now = time.time()
    _seed(home, now)
    everything = every_event(home)

    body = client.get("/api/events").json()
    assert [e["id"] for e in body["events"]] == [e.id for e in reversed(everything)]
    assert body["last_id"] == everything[-1].id and body["first_id"] == everything[0].id
    assert body["more"] is False
    first = body["events"][0]
    assert first["kind"] == "gateway.restarted" and first["title"] == "Restarted by the supervisor"
    assert first["detail"] == "restart #1" and first["tone"] == "warn"

    def kinds(**params: str) -> list[tuple[str, str | None]]:
        response = client.get("/api/events", params=params)
        assert response.status_code == 200, response.text
        return [(e["kind"], e["profile"]) for e in response.json()["events"]]

    assert kinds(profile="alpha", kind="gateway.") == [
        ("gateway.stopped", "alpha"),
        ("gateway.ready", "alpha"),
        ("gateway.starting", "alpha"),
    ]
    assert kinds(kind="gateway.starting") == [
        ("gateway.starting", "default"),
        ("gateway.starting", "alpha"),
    ]
    assert kinds(kind="dashboard.") == [("dashboard.login", None)]
    assert kinds(since="1h") == [
        ("gateway.restarted", "default"),
        ("gateway.exited", "default"),
        ("dashboard.login", None),
        ("gateway.stopped", "alpha"),
        ("profile.created", "alpha"),  # by the fixture, just now (an older id)
    ]
    until = datetime.fromtimestamp(now - 2 * 3600 + 10, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert kinds(profile="alpha", until=until) == [
        ("desired.changed", "alpha"),
        ("gateway.ready", "alpha"),
        ("gateway.starting", "alpha"),
    ]

    # Paging back with `before` gives the same list as one read, in order.
    seen: list[int] = []
    before = None
    while True:
        params = {"limit": "3", **({"before": str(before)} if before else {})}
        page = client.get("/api/events", params=params).json()
        seen += [e["id"] for e in page["events"]]
        if not page["more"]:
            break
        before = page["events"][-1]["id"]
    assert seen == [e.id for e in reversed(everything)]


@pytest.mark.parametrize(
    "params",
    [
        {"kind": "gateway"},
        {"kind": "nonsense.kind"},
        {"kind": "kanban."[:-1]},
        {"kind": "gate."},
        {"profile": "Not A Profile"},
        {"since": "yesterday"},
        {"until": "15x"},
        {"limit": "0"},
        {"limit": "501"},
        {"limit": "-1"},
        {"before": "x"},
    ],
)
def test_bad_filters_are_one_line_422s(client: TestClient, params: dict[str, str]) -> None:
    one_line_error(client.get("/api/events", params=params), 422)


def test_newest_matches_a_plain_filter_over_the_whole_ledger(tmp_path: Path) -> None:
    """Against brute force: sparse matches far back (the window grows), dense ones,
    prefixes, `before` and `accept`."""
    ledger = Ledger(tmp_path / "home")
    rng = random.Random(16)
    kinds = ["gateway.ready", "gateway.exited", "desired.changed", "kanban.completed"]
    from hermes_container.events.ledger import make_pending

    batch = [make_pending("gateway.parked", profile="rare", actor="t")]  # id 1 only
    for _ in range(6000):
        batch.append(
            make_pending(rng.choice(kinds), profile=rng.choice(["a", "b", "c"]), actor="t")
        )
    ledger.write(batch)
    everything = list(ledger.iterate(0))
    cases: list[tuple[int, int | None, dict[str, Any], Callable[[LedgerEvent], bool] | None]] = [
        (10, None, {"profile": "rare"}, None),
        (50, None, {"kind": "gateway."}, None),
        (7, 3000, {"profile": "a", "kind": "desired.changed"}, None),
        (500, None, {}, lambda e: e.kind.startswith("kanban.")),
        (5, 2, {}, None),
        (5, 1, {}, None),
    ]
    for limit, before, filters, accept in cases:

        def wanted(
            e: LedgerEvent,
            before: int | None = before,
            filters: dict[str, Any] = filters,
            accept: Callable[[LedgerEvent], bool] | None = accept,
        ) -> bool:
            if before is not None and e.id >= before:
                return False
            if "profile" in filters and e.profile != filters["profile"]:
                return False
            kind = filters.get("kind")
            if kind and not (e.kind.startswith(kind) if kind.endswith(".") else e.kind == kind):
                return False
            return accept is None or accept(e)

        expected = [e.id for e in everything if wanted(e)][-limit:][::-1]
        got = [e.id for e in newest(ledger, limit, before=before, accept=accept, **filters)]
        assert got == expected, (limit, before, filters)
    ledger.close()


# -- a profile's timeline -----------------------------------------------------------------


def test_timeline_is_the_profiles_own_history_without_board_events(
    client: TestClient, home: HermesHome
) -> None:
    now = time.time()
    _seed(home, now)
    record(home.root, "gateway.parked", profile="alpha", actor="supervisor", reason="crash loop")
    record(home.root, "profile.config_changed", profile="alpha", keys=["model.name", "gateway"])
    # A task assigned to alpha, completed: its events reach the ledger through the
    # board's own copier, with alpha as their profile, but stay off the timeline.
    store = open_store(home)
    try:
        task = store.create_task("t", assignee="alpha")
        run = store.claim(Holder(host="h", pid=1), task_id=task.id)
        assert run is not None
        store.complete(run, "ok")
        assert carry(store, open_ledger(home.root)) >= 2
    finally:
        store.close()
    assert any(e.kind == "kanban.created" and e.profile == "alpha" for e in every_event(home))

    body = client.get("/api/profiles/alpha/timeline").json()
    entries = body["entries"]
    assert [(e["kind"], e["title"]) for e in entries[:2]] == [
        ("profile.config_changed", "Config changed"),
        ("gateway.parked", "Parked"),
    ]
    assert entries[0]["detail"] == "model.name, gateway"
    assert entries[1]["detail"] == "crash loop" and entries[1]["tone"] == "bad"
    assert all(e["profile"] == "alpha" for e in entries)
    assert not any(e["kind"].startswith(("kanban.", "dashboard.")) for e in entries)
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, reverse=True)
    kinds = [e["kind"] for e in entries]
    assert kinds[-1] == "profile.created"  # the home fixture created alpha: a real write
    assert "desired.changed" in kinds and "gateway.stopped" in kinds
    desired = entries[kinds.index("desired.changed")]
    assert desired["title"] == "Desired state: running → stopped"

    limited = client.get("/api/profiles/alpha/timeline", params={"limit": "2"}).json()
    assert [e["id"] for e in limited["entries"]] == ids[:2] and limited["more"] is True
    older = client.get("/api/profiles/alpha/timeline", params={"before": str(ids[1])}).json()
    assert [e["id"] for e in older["entries"]] == ids[2:]
    one_line_error(client.get("/api/profiles/nobody/timeline"), 404)
    one_line_error(client.get("/api/profiles/alpha/timeline", params={"limit": "x"}), 422)


def test_describe_names_what_happened() -> None:
    def event(kind: str, **data: Any) -> LedgerEvent:
        return LedgerEvent(1, 0.0, kind, "p", "supervisor", data)

    crashed = describe(event("gateway.exited", expected=False, code=137, how="killed by SIGKILL"))
    assert (crashed["title"], crashed["detail"], crashed["tone"]) == (
        "Crashed",
        "killed by SIGKILL",
        "bad",
    )
    asked = describe(event("gateway.exited", expected=True, code=0))
    assert (asked["title"], asked["detail"], asked["tone"]) == (
        "Exited as asked",
        "exit code 0",
        "info",
    )
    ready = describe(event("gateway.ready", pid=5, port=8642))
    assert (ready["title"], ready["detail"], ready["tone"]) == ("Ready", "pid 5, port 8642", "ok")
    boot = describe(event("boot.reconciled", action="skipped", desired="running", error="bad"))
    assert boot["title"] == "Boot: skipped" and boot["tone"] == "bad"
    assert boot["detail"] == "desired=running error=bad"
    board = describe(event("kanban.completed", board="default", task_id=3, nested={"x": 1}))
    assert board["title"] == "kanban.completed" and board["detail"] == "board=default task_id=3"
    long = describe(event("gateway.parked", reason="x" * 1000))
    assert len(long["detail"]) == 300


# -- request charts -----------------------------------------------------------------------


def _chat(profile: GatewayProfile, stream: bool = False) -> tuple[int, float, float]:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    with profile.client(headers=profile.auth) as http:
        before = time.time()
        response = http.post("/v1/chat/completions", json=body)
        _ = response.content
        return response.status_code, before, time.time()


def _rows(db: Path) -> int:
    if not db.exists():
        return 0
    with open_readonly(db) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM exchanges").fetchone()[0])


def test_charts_count_the_requests_made_through_a_real_gateway(
    make_profile: Callable[[str], GatewayProfile],
    fake_upstream: FakeUpstream,
    hermes_home: HermesHome,
) -> None:
    alpha = make_profile("alpha")
    alpha.start()
    made: list[tuple[int, float, float]] = []
    for _ in range(4):
        made.append(_chat(alpha))
    made.append(_chat(alpha, stream=True))  # usage arrives in the stream's last chunk
    fake_upstream.set(status=500)
    made.append(_chat(alpha))
    fake_upstream.set(status=200)
    assert [status for status, _, _ in made] == [200] * 5 + [made[-1][0]]
    assert made[-1][0] >= 500
    db = alpha.dir / "sessions.db"
    wait_for(lambda: _rows(db) == 6, 10, "six exchanges in sessions.db")

    with TestClient(_app(hermes_home), base_url=LOCAL) as client:
        client.headers["X-Hermes-Session-Token"] = TOKEN
        hour = client.get("/api/profiles/alpha/charts").json()
        day = client.get("/api/profiles/alpha/charts", params={"window": "day"}).json()
        one_line_error(client.get("/api/profiles/alpha/charts", params={"window": "week"}), 422)
        one_line_error(client.get("/api/profiles/ghost/charts"), 404)
        empty = client.get("/api/profiles/default/charts").json()  # no gateway ran: no db

    assert hour["window"] == "hour" and hour["bucket_s"] == 60 and len(hour["t"]) == 60
    assert day["window"] == "day" and day["bucket_s"] == 900 and len(day["t"]) == 96
    assert hour["t"][-1] <= time.time() < hour["t"][-1] + 60  # the current minute is last
    for data in (hour, day):
        assert data["totals"] == {
            "requests": 6,
            "errors": 1,
            "tokens_in": 5 * 7,
            "tokens_out": 5 * 3,
            "tokens_reported": 5,
        }
        assert data["available"] is True and data["truncated"] is False
    # Each request in the bucket of the moment it finished (within the test's bounds).
    for status, before, after in made:
        possible = {math.floor(before / 60) * 60, math.floor(after / 60) * 60}
        assert any(hour["requests"][hour["t"].index(t)] for t in possible if t in hour["t"])
    counted = {t: n for t, n in zip(hour["t"], hour["requests"], strict=True) if n}
    assert sum(counted.values()) == 6
    assert hour["rate_per_min"] == [float(n) for n in hour["requests"]]
    slowest_ms = max(after - before for _, before, after in made) * 1000
    for i, n in enumerate(hour["requests"]):
        p50, p99 = hour["p50_ms"][i], hour["p99_ms"][i]
        if n:
            assert 0 < p50 <= p99 <= slowest_ms + 1, (p50, p99, slowest_ms)
            assert hour["error_rate"][i] == round(hour["errors"][i] / n, 4)
        else:
            assert p50 is None and p99 is None and hour["error_rate"][i] is None
    assert empty["totals"]["requests"] == 0 and empty["available"] is True


def _exchange_db(path: Path, finishes: list[tuple[float, float, int, int | None]]) -> None:
    """A sessions.db with the gateway's schema: (finished, latency_ms, status, tokens)."""
    conn = sessions_connect(path)
    with conn:
        conn.executemany(
            "INSERT INTO exchanges (session_id, started_at, finished_at, model, stream,"
            " request_messages, latency_ms, status, prompt_tokens, completion_tokens)"
            " VALUES ('s', ?, ?, 'm', 0, '[]', ?, ?, ?, ?)",
            [
                (
                    series_module.iso_ms(at - ms / 1000),
                    series_module.iso_ms(at),
                    ms,
                    status,
                    tokens,
                    None if tokens is None else tokens // 2,
                )
                for at, ms, status, tokens in finishes
            ],
        )
    conn.close()


def _expected(
    finishes: list[tuple[float, float, int, int | None]], start: float, bucket: int, count: int
) -> dict[str, list[Any]]:
    """The buckets computed the plain way, from parsed times."""
    got: dict[str, list[Any]] = {
        "requests": [0] * count,
        "errors": [0] * count,
        "tokens_in": [0] * count,
        "latency": [[] for _ in range(count)],
    }
    for at, ms, status, tokens in finishes:
        stamp = datetime.strptime(series_module.iso_ms(at), "%Y-%m-%dT%H:%M:%S.%fZ")
        index = int((stamp.replace(tzinfo=UTC).timestamp() // 1 - start) // bucket)
        if 0 <= index < count:
            got["requests"][index] += 1
            got["errors"][index] += status >= 400 and status != 499
            got["tokens_in"][index] += tokens or 0
            got["latency"][index].append(ms)
    return got


def _nearest_rank(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * p / 100) - 1)]


def test_a_large_sessions_db_is_read_by_its_window_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three days of exchanges: the hour and day figures equal a plain computation, and
    the hour's query does a small fraction of the work of a scan of the table."""
    now = 1_800_000_000.0
    rng = random.Random(7)
    finishes: list[tuple[float, float, int, int | None]] = []
    at = now - 3 * 86400
    while at < now:
        status = rng.choice([200] * 17 + [429, 499, 502])
        tokens = rng.choice([None, 10, 40]) if status == 200 else None
        finishes.append((at, round(rng.uniform(5, 900), 3), status, tokens))
        at += rng.uniform(1, 12)
    db = tmp_path / "sessions.db"
    _exchange_db(db, finishes)
    before = hashlib.sha256(db.read_bytes()).hexdigest()

    for window in WINDOWS.values():
        data = exchange_series(db, window, now).to_json()
        start, count = data["start"], len(data["t"])
        expected = _expected(finishes, start, window.bucket_s, count)
        assert data["requests"] == expected["requests"], window
        assert data["errors"] == expected["errors"], window
        assert data["tokens_in"] == expected["tokens_in"], window
        assert data["p50_ms"] == [_nearest_rank(v, 50) for v in expected["latency"]]
        assert data["p99_ms"] == [_nearest_rank(v, 99) for v in expected["latency"]]
        assert sum(data["requests"]) > 0

    # Work done, counted in SQLite VM steps: the hour's reads against a naive scan.
    steps = {"n": 0}

    def counting(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        conn.set_progress_handler(lambda: steps.__setitem__("n", steps["n"] + 1) or 0, 100)
        return conn

    with monkeypatch.context() as patch:
        patch.setattr(series_module, "open_readonly", counting)
        exchange_series(db, WINDOWS["hour"], now)
    windowed = steps["n"]
    # The same query without the binary search: from the first row of the file.
    steps["n"] = 0
    conn = counting(db)
    start = int(exchange_series(db, WINDOWS["hour"], now).start)
    conn.execute(
        series_module._ROWS,
        (start, 60, 0, series_module.iso_ms(start), series_module.iso_ms(now + 60), 10**6),
    ).fetchall()
    conn.close()
    naive = steps["n"]
    assert windowed * 10 < naive, (windowed, naive)

    # Read-only: the file is as it was, and the connection refuses writes.
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    with open_readonly(db) as ro, pytest.raises(sqlite3.OperationalError):
        ro.execute("DELETE FROM exchanges")


def test_truncation_keeps_the_newest_rows_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = 1_800_000_000.0
    finishes = [(now - 3000 + i * 10, 50.0, 200, 4) for i in range(300)]
    db = tmp_path / "sessions.db"
    _exchange_db(db, finishes)
    monkeypatch.setattr(series_module, "MAX_ROWS", 100)
    data = exchange_series(db, WINDOWS["hour"], now).to_json()
    assert data["truncated"] is True and data["totals"]["requests"] == 100
    newest_100 = _expected(finishes[-100:], data["start"], 60, 60)["requests"]
    assert data["requests"] == newest_100


def test_rows_slightly_out_of_id_order_are_still_counted(tmp_path: Path) -> None:
    """The clock stepped back between two batches: the binary search lands past rows
    that finished inside the window; the slack reads them anyway."""
    now = 1_800_000_000.0
    inside = [(now - 3500 + i, 10.0, 200, None) for i in range(50)]
    stepped_back = [(now - 4000 + i, 10.0, 200, None) for i in range(20)]
    later = [(now - 100 + i, 10.0, 200, None) for i in range(10)]
    db = tmp_path / "sessions.db"
    _exchange_db(db, inside[:25] + stepped_back + inside[25:] + later)
    data = exchange_series(db, WINDOWS["hour"], now).to_json()
    assert data["totals"]["requests"] == 60


def test_an_unreadable_sessions_db_is_reported_not_raised(tmp_path: Path) -> None:
    db = tmp_path / "sessions.db"
    db.write_bytes(b"this is not a database" * 100)
    data = exchange_series(db, WINDOWS["hour"], time.time()).to_json()
    assert data["available"] is False and "unreadable" in data["reason"]
    assert data["totals"]["requests"] == 0


# -- the overview's activity --------------------------------------------------------------


def test_activity_counts_restarts_of_the_last_day_and_completed_tasks(
    client: TestClient, home: HermesHome
) -> None:
    now = time.time()
    for profile, at in [("alpha", now - 60), ("alpha", now - 7200), ("alpha", now - 2 * 86400)]:
        record(home.root, "gateway.restarted", profile=profile, actor="supervisor", at=at)
    record(home.root, "gateway.restarted", profile="default", actor="supervisor", at=now - 5)
    record(home.root, "gateway.exited", profile="default", actor="supervisor", at=now - 5)
    store = open_store(home)
    try:
        holder = Holder(host="h", pid=1)
        for title in ("one", "two", "three"):
            task = store.create_task(title, assignee="alpha")
            run = store.claim(holder, task_id=task.id)
            assert run is not None
            if title == "three":
                store.fail(run, "no")
            else:
                store.complete(run, "ok")
        carry(store, open_ledger(home.root))
    finally:
        store.close()

    day = client.get("/api/activity").json()
    assert day["window"] == "day" and day["restarts_window_s"] == 86400
    assert day["restarts"] == {"alpha": 2, "default": 1}
    throughput = day["throughput"]
    assert throughput["bucket_s"] == 900 and len(throughput["t"]) == 96
    assert throughput["total"] == 2 and throughput["completed"][-1] == 2
    hour = client.get("/api/activity", params={"window": "hour"}).json()
    assert hour["throughput"]["bucket_s"] == 60 and hour["throughput"]["completed"][-1] == 2
    assert hour["restarts"] == day["restarts"]  # always the last day
    one_line_error(client.get("/api/activity", params={"window": "year"}), 422)
    html = client.get("/").text
    assert 'data-activity="restarts"' in html and 'id="activity"' in html


# -- live -------------------------------------------------------------------------------


def _sse(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    event, data = "message", []
    for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and data:
            yield event, json.loads("\n".join(data))
            event, data = "message", []


def test_the_stream_follows_matching_events_from_other_processes(home: HermesHome) -> None:
    """The real dashboard process; the events are appended by this test's process."""
    env = clean_env(HERMES_HOME=str(home.root), HERMES_DASHBOARD_SESSION_TOKEN=TOKEN)
    with dashboard_process(env) as (port, _proc):
        headers = {"X-Hermes-Session-Token": TOKEN}
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, headers=headers, timeout=10, trust_env=False) as http:
            last = http.get("/api/events").json()["last_id"]
            params = {"profile": "alpha", "kind": "gateway."}
            with http.stream("GET", "/api/events/stream", params=params) as stream:
                assert stream.status_code == 200
                assert stream.headers["content-type"].startswith("text/event-stream")
                messages = _sse(stream.iter_lines())
                assert next(messages) == ("hello", {"last_id": last})
                started = time.monotonic()
                record(home.root, "gateway.ready", profile="default", actor="t", pid=1)
                record(home.root, "kanban.created", profile="alpha", actor="board")
                record(home.root, "gateway.exited", profile="alpha", actor="t", signal=9)
                record(home.root, "gateway.restarted", profile="alpha", actor="t", restarts=1)
                got: list[dict[str, Any]] = []
                while len(got) < 2:
                    kind, events = next(messages)
                    assert kind == "events"
                    got += events
                assert time.monotonic() - started < 5.0
                assert [(e["kind"], e["profile"]) for e in got] == [
                    ("gateway.exited", "alpha"),
                    ("gateway.restarted", "alpha"),
                ]
                assert got[0]["title"] == "Crashed" and got[0]["id"] == last + 3
            # after= replays from where a reconnecting page left off.
            with http.stream(
                "GET", "/api/events/stream", params={"after": str(last), "kind": "kanban."}
            ) as again:
                replay = _sse(again.iter_lines())
                assert next(replay) == ("hello", {"last_id": last})
                kind, events = next(replay)
                assert kind == "events" and [e["kind"] for e in events] == ["kanban.created"]
            one_line_error(http.get("/api/events/stream", params={"kind": "x"}), 422)
            one_line_error(http.get("/api/events/stream", params={"after": "-1"}), 422)


def test_the_stream_ends_with_unavailable_when_the_ledger_fails(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "home")
    ledger.write([])
    ledger.close()  # every read now raises sqlite3.ProgrammingError

    async def run() -> list[bytes]:
        async def connected() -> bool:
            return False

        return [m async for m in follow_ledger(ledger, 0, {}, connected, poll_s=0.01)]

    messages = asyncio.run(run())
    assert messages[0].startswith(b"event: hello\n")
    assert messages[-1].startswith(b"event: unavailable\n") and len(messages) == 2


def test_a_root_dashboard_does_not_open_a_home_another_user_owns(home: HermesHome) -> None:
    if os.geteuid() != 0:
        assert ledger_for(home) is not None  # anyone but root may open it
        return
    events_dir = home.root / "events"
    before = sorted(p.name for p in events_dir.iterdir())
    os.chown(home.root, 4321, 4321)
    try:
        assert ledger_for(home) is None
        with TestClient(_app(home), base_url=LOCAL) as client:
            client.headers["X-Hermes-Session-Token"] = TOKEN
            for target in ("/api/events", "/api/profiles/alpha/timeline", "/api/activity"):
                one_line_error(client.get(target), 503)
            stream = client.get("/api/events/stream")
            one_line_error(stream, 503)
        assert sorted(p.name for p in events_dir.iterdir()) == before
    finally:
        os.chown(home.root, 0, 0)


# -- the chart library --------------------------------------------------------------------


def test_the_chart_library_is_pinned_licensed_and_served_locally(client: TestClient) -> None:
    version = (VENDOR / "VERSION.txt").read_text()
    assert "uPlot 1.6.32" in version and "MIT" in version
    for name in ("uPlot.iife.min.js", "uPlot.min.css"):
        digest = hashlib.sha256((VENDOR / name).read_bytes()).hexdigest()
        assert re.search(rf"^\s+{re.escape(name)}\s+{digest}$", version, re.M), name
    licence = (VENDOR / "LICENSE.txt").read_text()
    assert "MIT License" in licence and "Leon Sorokin" in licence
    served = client.get("/static/vendor/uplot/uPlot.iife.min.js")
    assert (
        served.status_code == 200 and served.content == (VENDOR / "uPlot.iife.min.js").read_bytes()
    )
    for path in ("/", "/profiles/alpha", "/events"):
        html = client.get(path).text
        # Every script and stylesheet comes from this dashboard: no CDN.
        sources = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', html)
        assert sources and all(s.startswith("/static/") for s in sources), (path, sources)
    profile = client.get("/profiles/alpha").text
    assert '<script src="/static/vendor/uplot/uPlot.iife.min.js" defer></script>' in profile
    for chart in ("rate", "latency", "errors", "tokens"):
        assert f'data-chart="{chart}"' in profile
    assert 'id="timeline"' in profile
    assert (
        client.get("/profiles/alpha")
        .headers["content-security-policy"]
        .startswith("default-src 'self'; script-src 'self';")
    )
