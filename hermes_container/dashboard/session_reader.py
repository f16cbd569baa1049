"""A profile's `sessions.db` as the sessions browser and the playground see it.

The gateway writes one row per chat completion (gateway/sessions.py): the messages the
client sent and the reply, which the gateway's writer thread has already rebuilt from
the provider's JSON or SSE chunks into `response_text` (a stream cut short keeps the
part that arrived, with status 499). This module only reads those rows, and deletes a
session's rows on request; no FastAPI here, the routes are in sessions_api.py and
playground_api.py.

Reads open the file read-only (exchange_series.open_readonly) with a short busy
timeout: under WAL a reader never blocks the gateway's writer, nor waits for it. A
delete is one `BEGIN IMMEDIATE` transaction that waits for the writer as long as the
writer would wait for us (its own busy timeout), so a delete racing an exchange being
recorded is serialised by SQLite, never lost or half done. An exchange that finishes
after the delete lands in the session again (with the history its client sent).

A session's transcript: clients differ in what they send. `hermes chat` sends only the
new message; SDK clients (and the playground) resend the whole conversation each time.
So each exchange contributes only the messages that do not continue what the
transcript already shows: the longest run at the start of its request that repeats the
transcript's tail is skipped. Search runs SQLite `LIKE` over the reply and the message
contents (the schema has no full-text index, and adding one is the gateway's business).
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from hermes_container.dashboard.exchange_series import open_readonly

# X-Hermes-Session's rule, as the gateway checks it (gateway/http_api._SESSION_ID).
SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
# The gateway's writer waits this long for a lock (gateway/sessions.connect: 5000 ms);
# a delete waits as long, so neither side gives up first.
WRITE_BUSY_TIMEOUT_S = 5.0
PAGE_DEFAULT = 50
PAGE_MAX = 200
QUERY_MAX = 200
PREVIEW_CHARS = 160
SNIPPET_CONTEXT = 60
TRANSCRIPT_MAX_EXCHANGES = 1000
HISTORY_MAX_MESSAGES = 100
HISTORY_MAX_CHARS = 200_000
CLIENT_GONE = 499
_ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})
_JSON_ESCAPED = re.compile(r'["\\\x00-\x1f]')

_SUMMARY = """
SELECT g.session_id, g.first_at, g.last_at, g.exchanges, l.model, f.request_messages
FROM (SELECT session_id, MIN(id) AS first_id, MAX(id) AS last_id, MIN(started_at) AS first_at,
             MAX(finished_at) AS last_at, COUNT(*) AS exchanges
      FROM exchanges {where} GROUP BY session_id) AS g
JOIN exchanges AS f ON f.id = g.first_id
JOIN exchanges AS l ON l.id = g.last_id
"""
_LIST = _SUMMARY.format(where="") + " ORDER BY g.last_id DESC LIMIT ? OFFSET ?"
_ONE = _SUMMARY.format(where="WHERE session_id = ?")
_COLUMNS = (
    "id, started_at, finished_at, model, stream, request_messages, response_text, "
    "prompt_tokens, completion_tokens, total_tokens, latency_ms, status, error"
)
_ROWS = f"SELECT {_COLUMNS} FROM exchanges WHERE session_id = ? ORDER BY id"  # noqa: S608
_LATEST_ROWS = f"SELECT {_COLUMNS} FROM exchanges WHERE session_id = ? ORDER BY id DESC LIMIT ?"  # noqa: S608
# A message content matches: its text (json_extract unescapes it), not the JSON around it
# (a search for `role` must not find every row). Rows the raw text cannot match are
# skipped first, cheaply, when the query has no character JSON would escape.
_CONTENT_MATCH = (
    "EXISTS (SELECT 1 FROM json_each(CASE WHEN json_valid(e.request_messages) "
    "THEN e.request_messages ELSE '[]' END) AS m "
    "WHERE json_extract(m.value, '$.content') LIKE :pattern ESCAPE '\\')"
)
_HITS = """
SELECT e.session_id, MIN(e.id) AS hit_id, COUNT(*) AS hits, MAX(e.id) AS last_hit
FROM exchanges AS e
WHERE e.response_text LIKE :pattern ESCAPE '\\' OR ({prefilter} {content})
GROUP BY e.session_id ORDER BY last_hit DESC LIMIT :limit OFFSET :offset
"""


T = TypeVar("T")


class SessionsUnavailable(Exception):
    """The database exists but cannot be read or written now (locked, corrupt)."""


@dataclass(frozen=True)
class Page:
    offset: int = 0
    limit: int = PAGE_DEFAULT


def db_error(exc: sqlite3.Error) -> SessionsUnavailable:
    return SessionsUnavailable(f"sessions database unavailable: {exc}")


def text_of(content: Any) -> str:
    """A message content as text: a string, or the text parts of a parts list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, dict):
                parts.append(f"[{part.get('type') or 'part'}]")
        return "\n".join(parts)
    return "" if content is None else json.dumps(content, ensure_ascii=False)


def _messages(raw: str | None) -> list[dict[str, str]]:
    """The request's messages as (role, text) dicts; anything malformed is left out."""
    try:
        items = json.loads(raw or "[]")
    except ValueError:
        return []
    found = []
    for item in items if isinstance(items, list) else ():
        if isinstance(item, dict):
            role = item.get("role")
            found.append(
                {
                    "role": role[:32] if isinstance(role, str) and role else "unknown",
                    "content": text_of(item.get("content")),
                }
            )
    return found


def _preview(raw: str | None) -> str:
    for message in _messages(raw):
        if message["role"] == "user":
            text = " ".join(message["content"].split())
            return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"
    return ""


def _summary(row: tuple[Any, ...]) -> dict[str, Any]:
    session_id, first_at, last_at, exchanges, model, first_request = row
    return {
        "session_id": session_id,
        "first_at": first_at,
        "last_at": last_at,
        "exchange_count": exchanges,
        "model": model,
        "preview": _preview(first_request),
    }


def _read(db: Path, work: Callable[[sqlite3.Connection], T]) -> T | None:
    """`work` on a read-only connection; None when the table does not exist yet."""
    try:
        conn = open_readonly(db)
    except sqlite3.Error as exc:
        raise db_error(exc) from None
    try:
        return work(conn)
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):  # created, the gateway not yet through its schema
            return None
        raise db_error(exc) from None
    except sqlite3.Error as exc:
        raise db_error(exc) from None
    finally:
        conn.close()


def _next(offset: int, shown: int, more: bool) -> int | None:
    return offset + shown if more else None


def list_sessions(db: Path, page: Page) -> dict[str, Any]:
    """One page of sessions, the most recently active first."""

    def work(conn: sqlite3.Connection) -> dict[str, Any]:
        rows = conn.execute(_LIST, (page.limit + 1, page.offset)).fetchall()
        total = conn.execute("SELECT COUNT(DISTINCT session_id) FROM exchanges").fetchone()[0]
        more = len(rows) > page.limit
        rows = rows[: page.limit]
        return {
            "sessions": [_summary(r) for r in rows],
            "total": total,
            "offset": page.offset,
            "next_offset": _next(page.offset, len(rows), more),
        }

    empty = {"sessions": [], "total": 0, "offset": page.offset, "next_offset": None}
    if not db.exists():
        return empty  # the gateway has not recorded anything yet
    result = _read(db, work)
    return empty if result is None else result


def _exchange(row: tuple[Any, ...]) -> dict[str, Any]:
    (ex_id, started, finished, model, stream, request, reply, prompt, completion, total) = row[:10]
    latency, status, error = row[10:]
    try:
        sent: Any = json.loads(request or "[]")
    except ValueError:
        sent = request  # kept as stored: an export hides nothing
    return {
        "id": ex_id,
        "started_at": started,
        "finished_at": finished,
        "model": model,
        "stream": bool(stream),
        "request_messages": sent,
        "response_text": reply,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total,
        "latency_ms": latency,
        "status": status,
        "error": error,
    }


def _overlap(shown: list[tuple[str, str]], sent: list[tuple[str, str]]) -> int:
    """How many messages at the start of `sent` repeat the end of `shown`."""
    if not shown or not sent:
        return 0
    last = shown[-1]
    for k in range(min(len(sent), len(shown)), 0, -1):
        if sent[k - 1] == last and shown[len(shown) - k :] == sent[:k]:
            return k
    return 0


def transcript(rows: Iterable[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """The conversation in order: each exchange's new messages, then its answer (or its
    error). Every entry: role, content, exchange id, at, and for answers the status."""
    entries: list[dict[str, Any]] = []
    shown: list[tuple[str, str]] = []
    for row in rows:
        ex_id, started, finished, reply = row[0], row[1], row[2], row[6]
        status, error = row[11], row[12]
        sent = _messages(row[5])
        keys = [(m["role"], m["content"]) for m in sent]
        repeated = _overlap(shown, keys)
        for message in sent[repeated:]:
            entries.append({**message, "exchange": ex_id, "at": started})
        shown.extend(keys[repeated:])
        if reply is not None:
            entries.append(
                {
                    "role": "assistant",
                    "content": reply,
                    "exchange": ex_id,
                    "at": finished,
                    "status": status,
                    "error": error,
                }
            )
            shown.append(("assistant", reply))
        elif status != 200 or error:
            entries.append(
                {
                    "role": "error",
                    "content": f"HTTP {status}: {error or 'no answer'}",
                    "exchange": ex_id,
                    "at": finished,
                    "status": status,
                    "error": error,
                }
            )
    return entries


def read_session(db: Path, session_id: str) -> dict[str, Any] | None:
    """Summary, exchanges and transcript of the newest TRANSCRIPT_MAX_EXCHANGES
    exchanges of a session; None when the session has none."""

    def work(conn: sqlite3.Connection) -> dict[str, Any] | None:
        head = conn.execute(_ONE, (session_id,)).fetchone()
        if head is None:
            return None
        rows = conn.execute(_LATEST_ROWS, (session_id, TRANSCRIPT_MAX_EXCHANGES)).fetchall()
        rows.reverse()
        return {
            **_summary(head),
            "truncated": head[3] > len(rows),
            "exchanges": [_exchange(r) for r in rows],
            "messages": transcript(rows),
        }

    if not db.exists():
        return None
    return _read(db, work)


def export_session(db: Path, profile: str, session_id: str) -> dict[str, Any] | None:
    """Everything stored about a session (every exchange as stored, the transcript)."""

    def work(conn: sqlite3.Connection) -> dict[str, Any] | None:
        head = conn.execute(_ONE, (session_id,)).fetchone()
        if head is None:
            return None
        rows = conn.execute(_ROWS, (session_id,)).fetchall()
        return {
            "format": "hermes-session/1",
            "profile": profile,
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **_summary(head),
            "exchanges": [_exchange(r) for r in rows],
            "messages": transcript(rows),
        }

    if not db.exists():
        return None
    return _read(db, work)


def history(db: Path, session_id: str) -> list[dict[str, str]] | None:
    """The conversation to send with a session's next message (the newest messages that
    fit HISTORY_MAX_MESSAGES and HISTORY_MAX_CHARS); None when there is no such session."""
    found = read_session(db, session_id)
    if found is None:
        return None
    messages = [
        {"role": m["role"], "content": m["content"]}
        for m in found["messages"]
        if m["role"] in _ROLES and m["content"]
    ]
    kept: list[dict[str, str]] = []
    size = 0
    for message in reversed(messages[-HISTORY_MAX_MESSAGES:]):
        size += len(message["content"])
        if size > HISTORY_MAX_CHARS:
            break
        kept.append(message)
    kept.reverse()
    return kept


def like_pattern(query: str) -> str:
    escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def snippet(texts: Iterable[str], query: str) -> str:
    """SNIPPET_CONTEXT characters either side of the first occurrence of `query`."""
    needle = query.casefold()
    first = ""
    for text in texts:
        first = first or text
        at = text.casefold().find(needle)
        if at >= 0:
            start = max(0, at - SNIPPET_CONTEXT)
            end = min(len(text), at + len(query) + SNIPPET_CONTEXT)
            body = " ".join(text[start:end].split())
            return ("…" if start else "") + body + ("…" if end < len(text) else "")
    return " ".join(first[: 2 * SNIPPET_CONTEXT].split())


def search_sessions(db: Path, query: str, page: Page) -> dict[str, Any]:
    """Sessions with an exchange whose messages or answer contain `query` (ASCII letters
    case-insensitive, as SQLite's LIKE), the most recent hit first, with a snippet."""

    def work(conn: sqlite3.Connection) -> dict[str, Any]:
        # The raw JSON holds `query` verbatim unless JSON escapes one of its characters.
        prefilter = "" if _JSON_ESCAPED.search(query) else "e.request_messages LIKE :pattern "
        prefilter += "ESCAPE '\\' AND" if prefilter else ""
        sql = _HITS.format(prefilter=prefilter, content=_CONTENT_MATCH)
        params = {"pattern": like_pattern(query), "limit": page.limit + 1, "offset": page.offset}
        hits = conn.execute(sql, params).fetchall()
        more = len(hits) > page.limit
        hits = hits[: page.limit]
        found = []
        for session_id, hit_id, count, _last in hits:
            head = conn.execute(_ONE, (session_id,)).fetchone()
            row = conn.execute(
                "SELECT request_messages, response_text FROM exchanges WHERE id = ?", (hit_id,)
            ).fetchone()
            if head is None or row is None:
                continue
            texts = [m["content"] for m in _messages(row[0])] + [row[1] or ""]
            found.append(
                {
                    **_summary(head),
                    "hits": count,
                    "exchange": hit_id,
                    "snippet": snippet(texts, query),
                }
            )
        return {
            "query": query,
            "sessions": found,
            "offset": page.offset,
            "next_offset": _next(page.offset, len(hits), more),
        }

    empty = {"query": query, "sessions": [], "offset": page.offset, "next_offset": None}
    if not db.exists():
        return empty
    result = _read(db, work)
    return empty if result is None else result


def delete_session(db: Path, session_id: str) -> int:
    """Delete every exchange of a session in one transaction; how many there were."""
    if not db.exists():
        return 0
    uri = f"file:{quote(str(db))}?mode=rw"  # never creates a database
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=WRITE_BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as exc:
        raise db_error(exc) from None
    try:
        # Freed pages are zeroed: a deleted conversation is not left readable in the file.
        conn.execute("PRAGMA secure_delete = ON")
        conn.execute("BEGIN IMMEDIATE")
        try:
            deleted = conn.execute(
                "DELETE FROM exchanges WHERE session_id = ?", (session_id,)
            ).rowcount
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return int(deleted)
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return 0
        raise db_error(exc) from None
    except sqlite3.Error as exc:
        raise db_error(exc) from None
    finally:
        conn.close()
