"""`sessions.db`: one row per exchange, written by a background thread.

The event loop only appends a record to a queue; JSON/SSE parsing and the SQLite
write happen on the writer thread, after the reply has been sent, so recording adds
nothing to a request's latency, nor, through the GIL, to another's: the writer works
in slices of at most PACE_WORK_S and lets go of the GIL between them (Pacer). WAL lets
the dashboard read while we write.

One row per chat completion that reached the relay (auth and validation failures
are not exchanges): `request_messages` as the client sent them (the persona is
SOUL.md, not repeated per row), `response_text` assembled from the reply or the
stream, token counts when the provider reported usage, `status` the HTTP status
the client got (499: the client went away mid-stream), `error` the reason if any.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hermes_container.errors import HermesError

log = logging.getLogger("hermes.gateway")

SCHEMA = """
CREATE TABLE IF NOT EXISTS exchanges (
    id                INTEGER PRIMARY KEY,
    session_id        TEXT    NOT NULL,
    started_at        TEXT    NOT NULL,
    finished_at       TEXT    NOT NULL,
    model             TEXT,
    stream            INTEGER NOT NULL,
    request_messages  TEXT    NOT NULL,
    response_text     TEXT,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    total_tokens      INTEGER,
    latency_ms        REAL    NOT NULL,
    status            INTEGER NOT NULL,
    error             TEXT
);
CREATE INDEX IF NOT EXISTS exchanges_session ON exchanges (session_id, id);
"""

_INSERT = """
INSERT INTO exchanges (session_id, started_at, finished_at, model, stream, request_messages,
    response_text, prompt_tokens, completion_tokens, total_tokens, latency_ms, status, error)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
CLOSE_WAIT_S = 5.0
FLUSH_INTERVAL_S = 0.2
Row = tuple[Any, ...]  # the values of _INSERT, in its order
PROMPT_TOKENS, COMPLETION_TOKENS = 7, 8  # their places in a Row
PACE_WORK_S = 0.0001
PACE_PAUSE_S = 0.00005


class Pacer:
    """Keeps a background thread's Python work in slices of at most PACE_WORK_S, with a
    sleep of PACE_PAUSE_S (no GIL held) between them: call it after each small step.

    Why: an event loop that wakes while another thread holds the GIL waits for it until
    that thread blocks, or up to the switch interval (5 ms) before CPython makes it let
    go. Built in one go, a batch of rows held the GIL for 8-9 ms of CPU (up to 20) every
    FLUSH_INTERVAL_S under bench_gateway.py's load: the batches overlapped 1-2 % of the
    requests but 30-70 % of the slowest 2 %, and were the relay's p99. A bare sleep(0)
    is no cure: the sleeper takes the GIL back before the waiter has woken. Paced, the
    writer still turns ~10,000 exchanges a second into rows, several times what one
    gateway serves.
    """

    def __init__(self) -> None:
        self._since = time.perf_counter()

    def __call__(self) -> None:
        if time.perf_counter() - self._since >= PACE_WORK_S:
            time.sleep(PACE_PAUSE_S)
            self._since = time.perf_counter()


@dataclass
class Exchange:
    """What the request path hands over: raw bytes, parsed later on the writer thread."""

    session_id: str
    started: float  # epoch seconds
    finished: float
    model: str
    stream: bool
    messages: list[Any]
    status: int
    error: str | None = None
    body: bytes = b""  # the upstream reply (JSON, or the SSE stream joined)
    chunks: list[bytes] = field(default_factory=list)

    @property
    def latency_ms(self) -> float:
        return round((self.finished - self.started) * 1000.0, 3)


# The last second _iso formatted and its text: a batch's times fall in a few seconds, so
# most rows reuse it (a tuple, swapped whole: safe to share between threads).
_last_second: tuple[int, str] = (-1, "")


def _iso(ts: float) -> str:
    """ISO 8601 UTC with milliseconds (strftime: several times cheaper than datetime)."""
    global _last_second
    second = int(ts)
    cached = _last_second
    if cached[0] != second:
        cached = _last_second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{int(ts * 1000) % 1000:03d}Z"


def _usage(obj: dict[str, Any]) -> dict[str, Any]:
    usage = obj.get("usage")
    return usage if isinstance(usage, dict) else {}


def parse_reply(body: bytes) -> tuple[str | None, dict[str, Any]]:
    """Text and usage of a non-streaming chat completion."""
    try:
        obj = json.loads(body)
        text = obj["choices"][0]["message"].get("content")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None, {}
    return (text if isinstance(text, str) else None), _usage(obj)


# JSONDecoder.raw_decode on text: a quarter of json.loads's cost on bytes for a stream's
# small pieces (json.loads detects the encoding and builds its call anew each time).
_decode = json.JSONDecoder().raw_decode


def _stream_events(raw: bytes) -> list[Any]:
    """The JSON values of an SSE stream's `data:` lines up to `[DONE]`, one per line;
    lines that do not hold exactly one JSON value are left out."""
    events: list[Any] = []
    for line in raw.splitlines():
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        try:
            text = data.decode()
            value, end = _decode(text)
        except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            continue
        if end == len(text):
            events.append(value)
    return events


def parse_stream(raw: bytes) -> tuple[str | None, dict[str, Any]]:
    """Concatenated delta contents and the last usage block of an SSE chat stream."""
    parts: list[str] = []
    usage: dict[str, Any] = {}
    for obj in _stream_events(raw):
        if not isinstance(obj, dict):
            continue
        usage = _usage(obj) or usage
        for choice in obj.get("choices") or ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str):
                parts.append(content)
    return ("".join(parts) if parts else None), usage


def row_of(ex: Exchange) -> Row:
    """The exchange as sessions.db stores it."""
    if ex.stream:
        text, usage = parse_stream(b"".join(ex.chunks))
    else:
        text, usage = parse_reply(ex.body) if ex.status == 200 else (None, {})

    return (
        ex.session_id,
        _iso(ex.started),
        _iso(ex.finished),
        ex.model,
        int(ex.stream),
        _encode_messages(ex.messages),
        text,
        _tokens(usage, "prompt_tokens"),
        _tokens(usage, "completion_tokens"),
        _tokens(usage, "total_tokens"),
        ex.latency_ms,
        ex.status,
        ex.error,
    )


def _tokens(usage: dict[str, Any], key: str) -> int | None:
    value = usage.get(key)
    return value if type(value) is int else None  # not bool, a subclass of int


# json.dumps(..., ensure_ascii=False) builds a new JSONEncoder on every call; this one is
# built once with the same settings and writes the same text.
_encode_messages = json.JSONEncoder(ensure_ascii=False).encode


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) the sessions database in WAL mode."""
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoints, fast
    db.execute("PRAGMA busy_timeout=5000")
    # The writer only appends: a big page cache buys nothing and, grown by traffic,
    # stays in every gateway's memory (2.0 MB after 20,000 rows at the default size).
    db.execute("PRAGMA cache_size=-256")
    db.executescript(SCHEMA)
    return db


class SessionStore:
    """Queue-fed writer thread; `record` never blocks the caller."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = connect(path)
        except sqlite3.Error as exc:
            raise HermesError(f"cannot open {path}: {exc}") from None
        self._queue: queue.SimpleQueue[Exchange | None] = queue.SimpleQueue()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sessions-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def record(self, exchange: Exchange) -> None:
        self._queue.put(exchange)

    def close(self) -> None:
        """Flush what is queued (bounded), then close the database."""
        self._closing.set()
        self._queue.put(None)
        self._thread.join(CLOSE_WAIT_S)
        if self._thread.is_alive():
            log.warning("sessions writer did not finish within %.0fs", CLOSE_WAIT_S)
            return
        self._db.close()

    def _run(self) -> None:
        done = False
        while not done:
            batch: list[Exchange] = []
            item = self._queue.get()
            if item is not None:
                # Let a burst gather: one wake-up and one transaction per interval.
                self._closing.wait(FLUSH_INTERVAL_S)
            while item is not None:
                batch.append(item)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            done = item is None
            if batch:
                self._write(self._rows(batch))

    def _rows(self, batch: list[Exchange]) -> list[Row]:
        rows, pace = [], Pacer()
        for exchange in batch:
            try:
                rows.append(row_of(exchange))
            except Exception as exc:  # one odd exchange never costs the others theirs
                log.error("could not record an exchange in %s: %s", self.path, exc)
            if not self._closing.is_set():  # closing: no request left to make room for
                pace()
        return rows

    def _write(self, rows: list[Row]) -> None:
        """One transaction; sqlite3 lets go of the GIL while SQLite works."""
        try:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(_INSERT, rows)
        except Exception as exc:  # the writer must outlive any one bad batch
            log.error("could not record %d exchange(s) in %s: %s", len(rows), self.path, exc)
