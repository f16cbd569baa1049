"""The dashboard's Jobs page and its API, against a real board (SQLite in the home).

The API is driven like the page drives it: loopback token mode, the CSRF token taken
from the rendered page, JSON bodies. What was written is checked through a store of
the test's own (the jobs' rows, runs and events), bad input against the real
`hermes jobs add` (the same one-line message), and every action in the audit log and
the event ledger.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from starlette.testclient import TestClient

from hermes_container.dashboard.app import create_app
from hermes_container.dashboard.auth.allowlist import Allowlist
from hermes_container.dashboard.auth.public_paths import is_public_path
from hermes_container.dashboard.jobs_live import stream_job_events
from hermes_container.dashboard.jobs_view import JobsView, newest_id
from hermes_container.dashboard.kanban_board import KanbanBoard
from hermes_container.dashboard.kanban_live import SAFETY_POLL_S, BoardWatch
from hermes_container.dashboard.settings import DashboardSettings, OidcConfig
from hermes_container.events.ledger import Ledger
from hermes_container.home import HermesHome
from hermes_container.kanban.jobs import book
from hermes_container.kanban.jobs.api import Jobs
from hermes_container.kanban.jobs.settings import JobsSettings
from hermes_container.kanban.jobs.spec import Step, build
from hermes_container.kanban.model import Holder
from hermes_container.kanban.store import DATABASE_URL_ENV, Store, open_store
from tests.conftest import free_port, run_hermes

TOKEN = "jobs-test-token"
LOCAL = "http://127.0.0.1:9119"
HOLDER = Holder(host="elsewhere", pid=4242)
BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
def store(home: HermesHome, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
    board = open_store(home)
    yield board
    board.close()


@pytest.fixture
def anonymous(home: HermesHome, store: Store) -> Iterator[TestClient]:
    """Token mode, no token sent."""
    app = create_app(DashboardSettings(session_token=TOKEN), home=home, manager=None)
    with TestClient(app, base_url=LOCAL, follow_redirects=False) as tc:
        yield tc


@pytest.fixture
def client(anonymous: TestClient) -> TestClient:
    """The page's own scripts: the token on every request, the page's CSRF token on POSTs."""
    page = anonymous.get("/jobs")  # the page carries the token itself, as Kanban does
    assert page.status_code == 200, page.text
    anonymous.headers["X-Hermes-Session-Token"] = TOKEN
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
    assert match
    anonymous.headers["X-CSRF-Token"] = match.group(1)
    return anonymous


def add(client: TestClient, **fields: Any) -> dict[str, Any]:
    fields.setdefault("profile", "alpha")
    fields.setdefault("prompt", "summarise the night")
    response = client.post("/api/jobs", json=fields)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_one_line_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert "\n" not in response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "detail"} and body["detail"], body
    return body


def job_events(store: Store) -> list[tuple[str, str]]:
    return [(e.job, e.kind) for e in Jobs(store).events(0, limit=10_000)]


def audit_actions(home: HermesHome) -> list[dict[str, Any]]:
    lines = home.auth_log.read_text().splitlines() if home.auth_log.exists() else []
    return [r for r in map(json.loads, lines) if r["event"] == "jobs_action"]


def ledger_actions(home: HermesHome) -> list[tuple[str, dict[str, Any]]]:
    ledger = Ledger(home.root)
    try:
        return [(e.actor, e.data) for e in ledger.iterate(0) if e.kind == "dashboard.action"]
    finally:
        ledger.close()


def dead_letter(store: Store, run_id: int, error: str = "provider on fire") -> int:
    """Fail the run's first task as a dispatcher would (a job with max_retries 0 gives up
    at once), then let the jobs follow the board: the run is dead-lettered."""
    jobs = Jobs(store)
    task_id = jobs.get_run(run_id).first_task
    assert task_id is not None
    run = store.claim(HOLDER, task_id=task_id)
    assert run is not None
    assert store.fail(run, error).status == "blocked"
    jobs.follow()
    assert jobs.get_run(run_id).state == "dead_lettered"
    return task_id


# -- the gate ---------------------------------------------------------------------------

GATED_READS = [
    "/api/jobs",
    "/api/jobs/job/nightly",
    "/api/jobs/dead",
    "/api/jobs/preview?every=5m",
    "/api/jobs/stream",
]
GATED_WRITES = [
    "/api/jobs",
    "/api/jobs/job/nightly/pause",
    "/api/jobs/job/nightly/resume",
    "/api/jobs/job/nightly/run",
    "/api/jobs/runs/1/retry",
]
A_JOB = {"name": "nightly", "profile": "alpha", "prompt": "secret plan", "every": "1h"}


def test_nothing_jobs_is_public() -> None:
    for target in ["/jobs", *GATED_READS, *GATED_WRITES]:
        assert not is_public_path(target.partition("?")[0]), target


def test_token_mode_needs_the_token_and_csrf(anonymous: TestClient, store: Store) -> None:
    # The page itself is left out, as on the Kanban page: loopback mode may serve a page
    # without the header (it hands its scripts the token); every API call needs it.
    for target in GATED_READS:
        assert anonymous.get(target).status_code == 401, target
    for target in GATED_WRITES:
        assert anonymous.post(target, json=A_JOB).status_code == 401, target

    anonymous.headers["X-Hermes-Session-Token"] = TOKEN
    refused = anonymous.post("/api/jobs", json=A_JOB)
    assert refused.status_code == 403 and refused.json()["error"] == "csrf_failed"
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', anonymous.get("/jobs").text)
    assert csrf
    cross = anonymous.post(
        "/api/jobs",
        json=A_JOB,
        headers={"X-CSRF-Token": csrf.group(1), "Origin": "http://evil.example"},
    )
    assert cross.status_code == 403
    assert Jobs(store).all() == []
    ok = anonymous.post("/api/jobs", json=A_JOB, headers={"X-CSRF-Token": csrf.group(1)})
    assert ok.status_code == 201, ok.text
    assert [j.name for j in Jobs(store).all()] == ["nightly"]
    for action in ("pause", "run"):  # and the actions, too, want the CSRF token
        no_csrf = anonymous.post(f"/api/jobs/job/nightly/{action}")
        assert no_csrf.status_code == 403
    assert Jobs(store).get("nightly").paused is False
    assert Jobs(store).runs("nightly") == []


def test_oauth_mode_without_a_session_gets_nothing(home: HermesHome, store: Store) -> None:
    settings = DashboardSettings(
        host="0.0.0.0",
        mode="oauth",
        oidc=OidcConfig("http://127.0.0.1:9", "client", "secret"),
        allowlist=Allowlist.build(emails=["alice@example.com"]),
        public_url="http://127.0.0.1:9119",
    )
    Jobs(store).add(build(name="nightly", steps=(Step("alpha", "secret plan"),), every="1h"))
    app = create_app(settings, home=home, manager=None)
    with TestClient(app, base_url=LOCAL, follow_redirects=False) as anonymous:
        page = anonymous.get("/jobs")
        assert page.status_code == 303 and page.headers["location"] == "/login?next=/jobs"
        for target in GATED_READS:
            response = anonymous.get(target)
            assert response.status_code == 401, target
            assert "secret plan" not in response.text
        for target in GATED_WRITES:
            assert anonymous.post(target, json=A_JOB).status_code == 401, target
    assert Jobs(store).get("nightly").paused is False
    assert Jobs(store).runs("nightly") == []


# -- the page ---------------------------------------------------------------------------


def test_page_has_the_form_with_profiles_and_zones(client: TestClient) -> None:
    html = client.get("/jobs").text
    assert re.search(r'<select id="jobs-profile"[^>]*>.*?<option value="alpha">', html, re.S)
    assert '<option value="Europe/Berlin">' in html  # the zone suggestions
    assert re.search(r'<option value="latest" selected>latest</option>', html)
    assert re.search(r'<option value="skip" selected>skip</option>', html)
    assert 'placeholder="30s"' in html and 'placeholder="600s"' in html
    assert '<script src="/static/jobs.js" defer></script>' in html
    assert 'id="jobs-preview"' in html and 'id="jobs-dead-runs"' in html
    assert '<a href="/jobs">Jobs</a>' in client.get("/").text
    assert '<a href="/jobs">Jobs</a>' in client.get("/kanban").text
    for asset in ("/static/jobs.js", "/static/jobs.css"):
        assert client.get(asset).status_code == 200, asset


# -- adding jobs ------------------------------------------------------------------------


def test_add_then_list(client: TestClient, store: Store, home: HermesHome) -> None:
    added = add(
        client,
        name="nightly",
        prompt="what happened overnight?",
        cron="30 2 * * *",
        timezone="Europe/Berlin",
        max_retries="2",
        retry_delay="10s",
        catchup="none",
        overlap="queue",
        timeout="",  # an empty form field means the default
        deliver="",
    )
    assert added["secret"] is None  # no delivery, no secret
    assert added["schedule_text"] == "cron 30 2 * * * (Europe/Berlin)"
    stored = Jobs(store).get("nightly")
    spec = stored.spec
    assert spec.steps == (Step("alpha", "what happened overnight?"),)
    assert (spec.max_retries, spec.retry_delay, spec.timeout) == (2, 10.0, None)
    assert (spec.catchup, spec.overlap, spec.deliver) == ("none", "queue", None)
    assert stored.next_slot is not None and stored.next_slot > time.time()
    local = datetime.fromtimestamp(stored.next_slot, BERLIN)
    assert (local.hour, local.minute) in ((2, 30), (3, 0))  # 03:00 on a spring-forward night

    pipeline = add(
        client,
        name="relay",
        profile=None,
        prompt=None,
        steps=[{"profile": "alpha", "prompt": "draft"}, {"profile": "default", "prompt": "edit"}],
        every="90s",
    )
    assert pipeline["profiles"] == ["alpha", "default"]
    assert Jobs(store).get("relay").spec.steps == (Step("alpha", "draft"), Step("default", "edit"))

    listed = client.get("/api/jobs").json()
    assert [j["name"] for j in listed["jobs"]] == ["nightly", "relay"]
    nightly = listed["jobs"][0]
    assert nightly["schedule_text"] == "cron 30 2 * * * (Europe/Berlin)"
    assert nightly["next_slot"] == stored.next_slot
    assert nightly["paused"] is False and nightly["last_outcome"] is None
    assert nightly["history"] == [] and nightly["in_flight"] == 0
    assert listed["dead"] == {"runs": 0, "deliveries": 0}
    assert listed["boards"] == ["default"]
    assert [k for _job, k in job_events(store)] == ["added", "added"]

    actions = audit_actions(home)
    assert [(a["action"], a["job"], a["result"], a["user"]) for a in actions] == [
        ("add", "nightly", "ok", "local"),
        ("add", "relay", "ok", "local"),
    ]
    assert ledger_actions(home) == [
        ("dashboard:local", {"action": "jobs.add", "result": "ok", "job": "nightly"}),
        ("dashboard:local", {"action": "jobs.add", "result": "ok", "job": "relay"}),
    ]


def test_the_delivery_secret_is_shown_once(
    client: TestClient, store: Store, home: HermesHome
) -> None:
    response = client.post("/api/jobs", json={**A_JOB, "deliver": "https://hooks.example/hermes"})
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    secret = response.json()["secret"]
    assert isinstance(secret, str) and len(secret) >= 32
    assert store.transact(lambda tx: book.secret_of(tx, "nightly")) == secret
    # Nothing else shows it: not the list, the job, the queue, the page, the records.
    for target in ("/api/jobs", "/api/jobs/job/nightly", "/api/jobs/dead", "/jobs"):
        shown = client.get(target)
        assert shown.status_code == 200 and secret not in shown.text, target
    assert secret not in home.auth_log.read_text()
    assert all(secret not in json.dumps(data) for _actor, data in ledger_actions(home))


# Bad input and the `hermes jobs add` arguments that say the same (None: the CLI has
# no spelling of it); both refuse with one line, the same one, and write nothing.
BAD_ADDS: list[tuple[dict[str, Any], list[str] | None]] = [
    (
        {"cron": "61 * * * *"},
        ["--cron", "61 * * * *"],
    ),
    ({"profile": "ghost", "every": "5m"}, ["--profile", "ghost", "--every", "5m"]),
    ({"every": "5m", "retry_delay": "0s"}, ["--every", "5m", "--retry-delay", "0s"]),
    ({"every": "5m", "timezone": "Mars/Olympus"}, ["--every", "5m", "--timezone", "Mars/Olympus"]),
    ({"every": "5m", "cron": "* * * * *"}, ["--every", "5m", "--cron", "* * * * *"]),
    ({}, []),
    ({"name": "Bad Name", "every": "5m"}, ["--every", "5m"]),
    ({"at": "2001-01-01T00:00:00Z"}, ["--at", "2001-01-01T00:00:00Z"]),
    ({"every": "5m", "max_retries": "lots"}, ["--every", "5m", "--max-retries", "lots"]),
    ({"every": "1s", "timeout": "2d"}, ["--every", "1s", "--timeout", "2d"]),
    ({"every": "5m", "overlap": "sometimes"}, None),
    ({"every": "5m", "max_retries": True}, None),
    ({"every": "5m", "colour": "red"}, None),
    ({"every": "5m", "deliver": "ftp://files.example/x"}, None),
    ({"every": "5m", "prompt": "   "}, None),
    ({"every": "5m", "profile": None, "prompt": None, "steps": "alpha: go"}, None),
    ({"every": ["5m"]}, None),
]


@pytest.mark.parametrize(("fields", "cli"), BAD_ADDS)
def test_bad_input_is_refused_as_the_cli_refuses_it(
    client: TestClient,
    store: Store,
    home: HermesHome,
    fields: dict[str, Any],
    cli: list[str] | None,
) -> None:
    payload = {"name": "nightly", "profile": "alpha", "prompt": "go", **fields}
    payload = {k: v for k, v in payload.items() if v is not None}
    body = assert_one_line_error(client.post("/api/jobs", json=payload), 400)
    assert body["error"] == "invalid"
    assert Jobs(store).all() == [] and job_events(store) == []
    assert audit_actions(home)[-1]["result"] == "invalid"
    if cli is not None:
        profile = payload.get("profile", "alpha")
        done = run_hermes(
            "jobs", "add", payload["name"], "--profile", profile, "--prompt", "go", *cli,
            env={"HERMES_HOME": str(home.root)},
        )  # fmt: skip
        assert done.returncode == 2, done
        assert done.stderr.strip() == f"hermes: error: {body['detail']}"


@pytest.mark.parametrize("payload", [b"not json", b"[1, 2]", b'"a string"', b"[" * 100_000])
def test_a_body_that_is_not_an_object_is_refused(
    client: TestClient, store: Store, payload: bytes
) -> None:
    response = client.post(
        "/api/jobs", content=payload, headers={"content-type": "application/json"}
    )
    assert assert_one_line_error(response, 400)["error"] == "bad_request"
    assert Jobs(store).all() == []


def test_a_name_taken_or_a_board_missing(client: TestClient, store: Store) -> None:
    add(client, name="nightly", every="1h")
    before = Jobs(store).get("nightly")
    taken = assert_one_line_error(client.post("/api/jobs", json={**A_JOB, "every": "5m"}), 400)
    assert taken["detail"] == "job 'nightly' already exists"
    assert Jobs(store).get("nightly") == before
    missing = client.post("/api/jobs", json={**A_JOB, "name": "other", "board": "nope"})
    assert assert_one_line_error(missing, 404)["error"] == "not_found"
    assert [j.name for j in Jobs(store).all()] == ["nightly"]


# -- the schedule preview ---------------------------------------------------------------


def test_preview_shows_the_next_five_slots_and_writes_nothing(
    client: TestClient, store: Store
) -> None:
    before = time.time()
    cron = client.get(
        "/api/jobs/preview", params={"cron": "30 2 * * *", "timezone": "Europe/Berlin"}
    )
    assert cron.status_code == 200, cron.text
    shown = cron.json()
    assert shown["schedule_text"] == "cron 30 2 * * * (Europe/Berlin)"
    slots = [s["at"] for s in shown["slots"]]
    assert len(slots) == 5 and slots == sorted(set(slots)) and slots[0] > before
    days = [datetime.fromtimestamp(s, BERLIN) for s in slots]
    assert all((d.hour, d.minute) in ((2, 30), (3, 0)) for d in days)
    assert [(b.date() - a.date()).days for a, b in itertools.pairwise(days)] == [1] * 4
    for slot, day in zip(shown["slots"], days, strict=True):
        assert slot["local"] == day.strftime("%Y-%m-%d %H:%M:%S %Z")
        assert slot["local"].endswith((" CET", " CEST"))
        assert slot["utc"].endswith("Z")

    # An interval counts from the next whole second, as the job would once added.
    every = client.get("/api/jobs/preview", params={"every": "90s"}).json()
    slots = [s["at"] for s in every["slots"]]
    assert every["schedule_text"] == "every 1m 30s"
    assert math.ceil(before) + 90 <= slots[0] <= math.ceil(time.time()) + 90
    assert [b - a for a, b in itertools.pairwise(slots)] == [90.0] * 4

    # A naive time is in the given zone; a one-time schedule has one slot.
    once = client.get(
        "/api/jobs/preview", params={"at": "2099-01-02T03:00", "timezone": "Asia/Tokyo"}
    )
    expected = datetime(2099, 1, 2, 3, 0, tzinfo=ZoneInfo("Asia/Tokyo")).timestamp()
    assert [s["at"] for s in once.json()["slots"]] == [expected]
    assert once.json()["slots"][0]["local"] == "2099-01-02 03:00:00 JST"
    assert Jobs(store).all() == [] and job_events(store) == []


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ({"cron": "nope"}, "bad cron expression 'nope'"),
        ({"every": "soon"}, "--every 'soon': expected a duration"),
        ({"every": "0.5s"}, "an interval must be between 1s and 366d"),
        ({}, "give exactly one schedule"),
        ({"cron": "* * * * *", "every": "5m"}, "give exactly one schedule"),
        ({"every": "5m", "timezone": "Nowhere/Land"}, "unknown time zone 'Nowhere/Land'"),
        ({"at": "2001-01-01T00:00:00Z"}, "that time is in the past"),
        ({"at": "tomorrow"}, "--at 'tomorrow': expected an ISO time"),
        ({"every": "5m", "name": "x"}, "unknown field(s): name"),
    ],
)
def test_preview_of_a_bad_schedule_says_why(
    client: TestClient, query: dict[str, str], detail: str
) -> None:
    body = assert_one_line_error(client.get("/api/jobs/preview", params=query), 400)
    assert body["detail"].startswith(detail), body


# -- actions ----------------------------------------------------------------------------


def test_pause_resume_and_run_now(client: TestClient, store: Store, home: HermesHome) -> None:
    add(client, name="nightly", every="1h", prompt="count the sheep")
    paused = client.post("/api/jobs/job/nightly/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["paused"] is True and paused.json()["next_slot"] is None
    assert Jobs(store).get("nightly").paused is True
    row = client.get("/api/jobs").json()["jobs"][0]
    assert row["paused"] is True and row["next_slot"] is None
    assert client.get("/api/jobs/job/nightly").json()["next_slots"] == []

    resumed = client.post("/api/jobs/job/nightly/resume")
    assert resumed.status_code == 200 and resumed.json()["paused"] is False
    stored = Jobs(store).get("nightly")
    assert stored.paused is False and resumed.json()["next_slot"] == stored.next_slot

    ran = client.post("/api/jobs/job/nightly/run")
    assert ran.status_code == 200, ran.text
    run = ran.json()
    assert run["state"] == "active" and run["manual"] is True
    (task,) = store.list_tasks()
    assert (task.id, task.assignee, task.body) == (run["task"], "alpha", "count the sheep")
    assert task.idempotency_key == f"job:nightly:{run['slot_name']}"
    row = client.get("/api/jobs").json()["jobs"][0]
    assert [(h["id"], h["state"], h["task"]) for h in row["history"]] == [
        (run["id"], "active", task.id)
    ]
    assert row["in_flight"] == 1 and row["last_outcome"] is None
    assert [k for _job, k in job_events(store)] == ["added", "paused", "resumed", "scheduled"]

    for action in ("pause", "resume", "run"):
        assert_one_line_error(client.post(f"/api/jobs/job/ghost/{action}"), 404)
        assert_one_line_error(client.post(f"/api/jobs/job/Not%20A%20Name/{action}"), 404)
    assert_one_line_error(client.post("/api/jobs/job/nightly/remove"), 404)
    assert Jobs(store).get("nightly").paused is False

    recorded = [(a["action"], a["result"]) for a in audit_actions(home)]
    assert recorded[:4] == [("add", "ok"), ("pause", "ok"), ("resume", "ok"), ("run", "ok")]
    assert ("pause", "not_found") in recorded
    assert audit_actions(home)[3]["run"] == run["id"]
    ledger = [data for _actor, data in ledger_actions(home)]
    assert ledger[1:4] == [
        {"action": "jobs.pause", "result": "ok", "job": "nightly"},
        {"action": "jobs.resume", "result": "ok", "job": "nightly"},
        {"action": "jobs.run", "result": "ok", "job": "nightly", "run": str(run["id"])},
    ]


def test_a_dead_letter_is_listed_and_retried(
    client: TestClient, store: Store, home: HermesHome
) -> None:
    add(client, name="flaky", every="1h", max_retries="0", prompt="ask the oracle")
    run_id = client.post("/api/jobs/job/flaky/run").json()["id"]
    task_id = dead_letter(store, run_id, "HTTP 502: provider on fire")

    dead = client.get("/api/jobs/dead").json()
    assert dead["deliveries"] == []
    (entry,) = dead["runs"]
    assert (entry["id"], entry["job"], entry["kind"], entry["state"]) == (
        run_id, "flaky", "run", "dead_lettered"
    )  # fmt: skip
    assert entry["failed_task"] == task_id and entry["profile"] == "alpha"
    assert "provider on fire" in entry["error"] and entry["prompt"] == "ask the oracle"
    assert entry["attempts"] == 1 and entry["failures"] == 1
    listed = client.get("/api/jobs").json()
    assert listed["dead"] == {"runs": 1, "deliveries": 0}
    row = listed["jobs"][0]
    assert row["last_outcome"] == "dead_lettered" and row["in_flight"] == 0
    assert [h["state"] for h in row["history"]] == ["dead_lettered"]

    retried = client.post(f"/api/jobs/runs/{run_id}/retry")
    assert retried.status_code == 200, retried.text
    assert (retried.json()["state"], retried.json()["retried"]) == ("active", "run")
    assert store.get_task(task_id).status == "todo"  # the board's promote makes it ready
    assert client.get("/api/jobs/dead").json()["runs"] == []
    assert_one_line_error(client.post(f"/api/jobs/runs/{run_id}/retry"), 409)
    assert_one_line_error(client.post("/api/jobs/runs/999/retry"), 404)
    assert_one_line_error(client.post("/api/jobs/runs/abc/retry"), 404)

    # The retried run finishes: one run in the history, completed, with two attempts.
    store.promote()
    board_run = store.claim(HOLDER, task_id=task_id)
    assert board_run is not None
    store.complete(board_run, "the oracle spoke")
    Jobs(store).follow()
    row = client.get("/api/jobs").json()["jobs"][0]
    assert row["last_outcome"] == "completed"
    assert [(h["id"], h["state"]) for h in row["history"]] == [(run_id, "completed")]
    (shown,) = client.get("/api/jobs/job/flaky").json()["runs"]
    assert (shown["state"], shown["attempts"]) == ("completed", 2)
    retries = [(a["result"], a["run"]) for a in audit_actions(home) if a["action"] == "retry"]
    assert retries == [("ok", run_id), ("conflict", run_id), ("not_found", 999)]
    assert {"action": "jobs.retry", "result": "ok", "job": "flaky", "run": str(run_id)} in [
        data for _actor, data in ledger_actions(home)
    ]


def test_a_dead_delivery_is_listed_and_retried(client: TestClient, store: Store) -> None:
    add(client, name="hook", every="1h", deliver="http://127.0.0.1:9/hook")
    run_id = client.post("/api/jobs/job/hook/run").json()["id"]
    jobs = Jobs(store)
    task_id = jobs.get_run(run_id).first_task
    board_run = store.claim(HOLDER, task_id=task_id)
    assert board_run is not None
    store.complete(board_run, "done")
    jobs.follow()
    (item,) = jobs.lease_deliveries(1, 10.0)
    jobs.record_delivery(item, "connection refused", None, JobsSettings(delivery_max_attempts=1))
    assert jobs.get_run(run_id).delivery == "dead"

    dead = client.get("/api/jobs/dead").json()
    assert dead["runs"] == []
    (entry,) = dead["deliveries"]
    assert (entry["id"], entry["kind"], entry["state"]) == (run_id, "delivery", "completed")
    assert entry["error"] == "connection refused" and entry["delivery_attempts"] == 1
    assert client.get("/api/jobs").json()["dead"] == {"runs": 0, "deliveries": 1}

    retried = client.post(f"/api/jobs/runs/{run_id}/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json()["retried"] == "delivery"
    assert jobs.get_run(run_id).delivery == "pending"
    assert client.get("/api/jobs/dead").json()["deliveries"] == []


def test_a_job_in_detail(client: TestClient, store: Store) -> None:
    long_prompt = "step one, in detail. " * 40
    steps = [{"profile": "alpha", "prompt": long_prompt}, {"profile": "default", "prompt": "b"}]
    add(client, name="relay", every="10m", profile=None, prompt=None, steps=steps)
    listed = client.get("/api/jobs").json()["jobs"][0]
    assert len(listed["steps"][0]["prompt"]) < len(long_prompt)  # the list keeps it short
    shown = client.get("/api/jobs/job/relay").json()
    assert shown["steps"] == [
        {"profile": "alpha", "prompt": long_prompt},
        {"profile": "default", "prompt": "b"},
    ]
    slots = [s["at"] for s in shown["next_slots"]]
    assert slots[0] == Jobs(store).get("relay").next_slot
    assert [b - a for a, b in itertools.pairwise(slots)] == [600.0] * 4
    assert shown["runs"] == []
    client.post("/api/jobs/job/relay/run")
    (run,) = client.get("/api/jobs/job/relay").json()["runs"]
    assert [(t["profile"], t["status"]) for t in run["tasks"]] == [
        ("alpha", "ready"),
        ("default", "todo"),
    ]
    assert_one_line_error(client.get("/api/jobs/job/ghost"), 404)
    assert_one_line_error(client.get("/api/jobs/job/Bad%20Name"), 404)


def test_an_unreachable_board_is_a_503(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    client.app.state.kanban.close()  # type: ignore[attr-defined]
    monkeypatch.setenv(DATABASE_URL_ENV, f"postgresql://hermes@127.0.0.1:{free_port()}/board")
    assert assert_one_line_error(client.get("/api/jobs"), 503)["error"] == "board_unavailable"
    response = client.post("/api/jobs", json=A_JOB)
    assert assert_one_line_error(response, 503)["error"] == "board_unavailable"


# -- live updates -----------------------------------------------------------------------


def test_newest_id_finds_the_last_event() -> None:
    for top in (0, 1, 2, 7, 64, 1000, 12345):
        asked: list[int] = []

        def has_after(after: int, top: int = top) -> bool:
            asked.append(after)
            return after < top

        assert newest_id(has_after) == top
        assert len(asked) <= 2 * max(1, top).bit_length() + 2  # look-ups, not a scan


def test_the_stream_wakes_on_a_job_event(home: HermesHome, store: Store) -> None:
    """A job added by another store (the CLI, another dashboard) reaches an open stream
    through the board's wake-up, well before the safety poll would."""
    kanban = KanbanBoard(home)
    watch = BoardWatch(kanban)
    view = JobsView(kanban)
    jobs = Jobs(store)
    jobs.add(build(name="first", steps=(Step("alpha", "one"),), every="1h"))

    async def connected() -> bool:
        return False

    async def scenario() -> None:
        last = await asyncio.to_thread(view.last_event_id)
        assert last == 1
        stream = stream_job_events(watch, view, last, connected)
        assert b'"last_event_id": 1' in await anext(stream)
        waiting = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.5)
        assert not waiting.done() and watch.listening
        started = time.monotonic()
        await asyncio.to_thread(jobs.pause, "first")
        message = await asyncio.wait_for(waiting, SAFETY_POLL_S)
        assert time.monotonic() - started < SAFETY_POLL_S / 2
        assert message.startswith(b"event: events\n")
        events = json.loads(message.decode().split("data: ", 1)[1])
        assert [(e["id"], e["job"], e["kind"]) for e in events] == [(2, "first", "paused")]
        await stream.aclose()
        assert not watch.listening

    try:
        asyncio.run(scenario())
    finally:
        watch.close()
        kanban.close()


def test_the_stream_endpoint_checks_since(client: TestClient) -> None:
    for bad in ("x", "-1", "1.5", "99999999999999999999999"):
        assert_one_line_error(client.get("/api/jobs/stream", params={"since": bad}), 400)
