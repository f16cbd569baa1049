"""sessions.db: one row per exchange, written off the request path, readable under WAL."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import types
from pathlib import Path
from typing import Any

import httpx
import pytest

from hermes_container.gateway import sessions
from hermes_container.gateway.sessions import Exchange, SessionStore, parse_reply, parse_stream
from hermes_container.home import SESSIONS_DB
from tests.conftest import free_port, wait_for
from tests.fake_upstream import FakeUpstream
from tests.unit.conftest import GatewayProc, GatewayProfile


def _rows(db: Path, count: int) -> list[dict[str, Any]]:
    def fetch() -> list[dict[str, Any]] | None:
        if not db.exists():
            return None
        with sqlite3.connect(db) as conn:
            conn.row_factory = sqlite3.Row
            try:
                rows = conn.execute("SELECT * FROM exchanges ORDER BY id").fetchall()
            except sqlite3.OperationalError:
                return None
        return [dict(r) for r in rows] if len(rows) >= count else None

    rows: list[dict[str, Any]] = wait_for(fetch, what=f"{count} sessions.db rows")
    return rows


def test_exchanges_are_recorded(gateway: GatewayProc, fake_upstream: FakeUpstream) -> None:
    profile = gateway.profile
    messages = [{"role": "user", "content": "remember me"}]
    with profile.client(headers={**profile.auth, "x-hermes-session": "chat-42"}) as c:
        c.post("/v1/chat/completions", json={"messages": messages}).raise_for_status()
        fake_upstream.set(chunks=["str", "eamed"], usage={"prompt_tokens": 1, "total_tokens": 3})
        with c.stream(
            "POST", "/v1/chat/completions", json={"messages": messages, "stream": True}
        ) as r:
            r.read()
    plain, streamed = _rows(profile.dir / SESSIONS_DB, 2)
    for row in (plain, streamed):
        assert row["session_id"] == "chat-42" and row["status"] == 200 and row["error"] is None
        assert json.loads(row["request_messages"]) == messages  # as the client sent them
        assert row["model"] == "test-model" and row["latency_ms"] > 0
        assert row["started_at"] <= row["finished_at"] and row["started_at"].endswith("Z")
    assert plain["stream"] == 0 and plain["response_text"] == "echo: remember me"
    assert (plain["prompt_tokens"], plain["completion_tokens"], plain["total_tokens"]) == (7, 3, 10)
    assert streamed["stream"] == 1 and streamed["response_text"] == "streamed"
    assert (streamed["prompt_tokens"], streamed["completion_tokens"]) == (1, None)
    with sqlite3.connect(profile.dir / SESSIONS_DB) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_failed_exchanges_are_recorded_with_status(profile: GatewayProfile) -> None:
    profile.configure(model={"base_url": f"http://127.0.0.1:{free_port()}/v1"})
    profile.start()
    with profile.client(headers=profile.auth) as c:
        response = c.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}
        )
    assert response.status_code == 502
    (row,) = _rows(profile.dir / SESSIONS_DB, 1)
    assert row["status"] == 502 and "cannot connect" in row["error"]
    assert row["session_id"] == response.headers["x-hermes-session"]
    assert row["response_text"] is None


def test_queued_rows_are_flushed_on_sigterm(gateway: GatewayProc) -> None:
    profile = gateway.profile
    with profile.client(headers=profile.auth) as c:
        for i in range(20):
            body = {"messages": [{"role": "user", "content": f"m{i}"}]}
            c.post("/v1/chat/completions", json=body).raise_for_status()
    assert gateway.terminate() == 0
    with sqlite3.connect(profile.dir / SESSIONS_DB) as conn:
        assert conn.execute("SELECT count(*) FROM exchanges").fetchone()[0] == 20


def test_store_writes_batches_from_its_thread(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "s.db")
    store.start()
    now = time.time()
    for i in range(50):
        store.record(
            Exchange(f"s{i % 2}", now, now + 0.01, "m", False, [{"i": i}], 200, body=b"{}")
        )
    store.close()
    with sqlite3.connect(tmp_path / "s.db") as conn:
        counts = conn.execute(
            "SELECT session_id, count(*) FROM exchanges GROUP BY session_id"
        ).fetchall()
    assert counts == [("s0", 25), ("s1", 25)]


def _count(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM exchanges").fetchone()[0])


def test_one_odd_exchange_costs_no_other_its_row(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "s.db")
    store.start()
    now = time.time()
    for i in range(5):
        messages: list[Any] = [{"i": i}] if i != 2 else [{"not json": {1, 2}}]
        store.record(Exchange("s", now, now, "m", False, messages, 200, body=b"{}"))
    store.close()
    with sqlite3.connect(tmp_path / "s.db") as conn:
        rows = conn.execute("SELECT request_messages FROM exchanges ORDER BY id").fetchall()
    assert [json.loads(r[0])[0]["i"] for r in rows] == [0, 1, 3, 4]


def test_writer_lets_go_of_the_gil_between_slices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every PACE_WORK_S of work, a sleep: the event loop never waits for a whole batch."""
    clock = [0.0]
    sleeps: list[tuple[float, str]] = []

    def perf_counter() -> float:
        clock[0] += sessions.PACE_WORK_S * 2  # each look at the clock: past a slice
        return clock[0]

    def sleep(seconds: float) -> None:
        sleeps.append((seconds, threading.current_thread().name))

    fake_time = types.SimpleNamespace(
        perf_counter=perf_counter, sleep=sleep, strftime=time.strftime, gmtime=time.gmtime
    )
    monkeypatch.setattr(sessions, "time", fake_time)
    store = SessionStore(tmp_path / "s.db")
    store.start()
    now = time.time()
    for i in range(40):
        store.record(Exchange("s", now, now, "m", False, [{"i": i}], 200, body=b"{}"))
    # Written while serving (closing, nothing is left to make room for: no pauses).
    wait_for(lambda: _count(tmp_path / "s.db") == 40, what="40 rows")
    store.close()
    # Every row is a step past a whole slice: one pause each, however the rows were
    # batched (a loaded machine may split them).
    assert len(sleeps) == 40
    assert set(sleeps) == {(sessions.PACE_PAUSE_S, "sessions-writer")}


def test_boolean_usage_is_no_token_count() -> None:
    now = time.time()
    body = b'{"choices": [{"message": {"content": "hi"}}], "usage": {"prompt_tokens": true}}'
    row = sessions.row_of(Exchange("s", now, now, "m", False, [], 200, body=body))
    assert row[sessions.PROMPT_TOKENS] is None and row[6] == "hi"


def test_parsers_tolerate_odd_replies() -> None:
    assert parse_reply(b"not json") == (None, {})
    assert parse_reply(b'{"choices": []}') == (None, {})
    assert parse_reply(b'{"choices": [{"message": {"content": "hi"}}], "usage": 3}') == ("hi", {})
    raw = (
        b'data: {"choices": [{"delta": {"role": "assistant"}}]}\n\n'
        b": keep-alive comment\n\n"
        b'data: {"choices": [{"delta": {"content": "a"}}]}\n\n'
        b"data: garbage\n\n"
        b'data: {"choices": [{"delta": {"content": "b"}}], "usage": {"total_tokens": 2}}\n\n'
        b"data: [DONE]\n\n"
    )
    assert parse_stream(raw) == ("ab", {"total_tokens": 2})
    assert parse_stream(b"") == (None, {})


def test_stream_lines_count_only_when_they_hold_one_json_value() -> None:
    raw = (
        b'data: {"choices": [{"delta": {"content": "a"}}]} {"x": 1}\n'  # two values
        b"data: \xff\xfe\n"  # not UTF-8
        b"data:\n"
        b"data: 1,2\n"
        b'data: {"choices": [{"delta": {"content": "b"}}]}\x0c\n'  # trailing space kind
        b'data:{"choices": [{"delta": {"content": "c"}}], "usage": {"total_tokens": 3}}\n'
        b"data: [DONE]\n"
        b'data: {"choices": [{"delta": {"content": "after done"}}]}\n'
    )
    assert parse_stream(raw) == ("bc", {"total_tokens": 3})


def test_times_are_iso_utc_with_milliseconds_across_seconds() -> None:
    base = 1_790_000_000.0
    for ts in (base + 0.0004, base + 0.9996, base + 1.25, base + 0.5, base + 86_400.001):
        expected = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))
        assert sessions._iso(ts) == f"{expected}.{int(ts * 1000) % 1000:03d}Z"


def test_health_is_not_recorded(gateway: GatewayProc) -> None:
    httpx.get(gateway.profile.url("/health"), trust_env=False).raise_for_status()
    assert gateway.terminate() == 0
    with sqlite3.connect(gateway.profile.dir / SESSIONS_DB) as conn:
        assert conn.execute("SELECT count(*) FROM exchanges").fetchone()[0] == 0


def test_unusable_sessions_db_is_one_line_and_recorded(profile: GatewayProfile) -> None:
    from tests.conftest import run_hermes

    (profile.dir / SESSIONS_DB).write_bytes(b"this is not a database, just junk" * 100)
    proc = run_hermes("gateway", "run", env={"HERMES_ALLOW_ROOT_GATEWAY": "1"})
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert f"cannot open {profile.dir / SESSIONS_DB}" in proc.stderr
    state = profile.state()
    assert state.gateway_state == "startup_failed" and state.pid is None
