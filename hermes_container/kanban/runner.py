"""Running one claimed task: a chat completion through the assignee's gateway, then the
outcome written to the board by the run's holder.

    200 with content   -> complete (the answer is the result; tokens from `usage`)
    429                -> rate_limited: ready again after Retry-After (or the cooldown);
                          not a failure
    anything else      -> fail: counted, retried after a backoff, blocked past the limit
    past max_runtime   -> time_out: counted like a failure
    connection refused -> release: the gateway stopped after the tick's probe; not counted

Stdlib http.client on loopback: the dispatcher stays small (no httpx import), and a
task's request is one connection that `abort()` can cut from another thread.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import json
import logging
import math
import socket
import threading
import time
from dataclasses import dataclass

from hermes_container.errors import HermesError
from hermes_container.kanban.errors import NotHolder
from hermes_container.kanban.gateways import LOOPBACK, Endpoint
from hermes_container.kanban.model import BLOCKED, RetryPolicy, Run, Task
from hermes_container.kanban.prompt import messages_for
from hermes_container.kanban.settings import KanbanSettings
from hermes_container.kanban.store import Store

log = logging.getLogger("hermes.kanban")

SESSION_HEADER = "x-hermes-session"
MAX_REPLY_BYTES = 16 * 1024 * 1024  # the gateway's own default gateway.max_response_bytes
MAX_ERROR_CHARS = 300


def session_id(task_id: int) -> str:
    return f"kanban-{task_id}"


@dataclass(frozen=True)
class Outcome:
    """How a run ended, as the tick and `dispatch` report it."""

    task_id: int
    kind: str  # completed | failed | gave_up | rate_limited | timed_out | gateway_down | lost
    detail: str = ""


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date; None if absent
    or unreadable."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - now
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _error_detail(body: bytes) -> str:
    try:
        error = json.loads(body)["error"]
        text = str(error["message"] if isinstance(error, dict) else error)
    except (ValueError, KeyError, TypeError):
        text = body.decode("utf-8", "replace").strip()
    return text[:MAX_ERROR_CHARS] or "no detail"


def _reply(body: bytes) -> tuple[str | None, int | None]:
    """The answer's text and total tokens, from an OpenAI chat.completion body."""
    try:
        obj = json.loads(body)
        content = obj["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None, None
    usage = obj.get("usage") if isinstance(obj, dict) else None
    tokens = usage.get("total_tokens") if isinstance(usage, dict) else None
    valid = isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0
    return (content if isinstance(content, str) else None), (tokens if valid else None)


class TaskRun:
    """One claimed task on its way through a gateway; `start()` runs it in a thread."""

    def __init__(
        self,
        store: Store,
        run: Run,
        task: Task,
        endpoint: Endpoint,
        settings: KanbanSettings,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.store, self.run, self.task = store, run, task
        self.endpoint, self.settings = endpoint, settings
        # A job's task retries on its job's delays; any other on the board's.
        self.policy = policy or settings.retry_policy
        self.outcome: Outcome | None = None
        self.lost = False  # the claim went to someone else: record nothing
        # The run was claimed a moment ago: max_runtime is measured from here on this
        # host's monotonic clock. run.claimed_at is the store's time (the PostgreSQL
        # server's, or a test's fake clock), which time.time() here need not agree with.
        self._started = time.monotonic()
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()
        self.thread = threading.Thread(
            target=self._main, name=f"kanban-task-{task.id}", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def done(self) -> bool:
        return not self.thread.is_alive()

    def abort(self) -> None:
        """Stop waiting for the gateway (the tick timed the run out, or it was taken)."""
        self.lost = True
        with self._lock:
            conn = self._conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)

    # -- the thread -------------------------------------------------------------------

    def _timeout(self) -> tuple[float, bool]:
        """Seconds to wait for the reply, and whether that is the task's max_runtime."""
        limit = self.settings.request_timeout_seconds
        if self.task.max_runtime is not None:
            left = self.task.max_runtime - (time.monotonic() - self._started)
            if left <= limit:
                return max(0.1, left), True
        return limit, False

    def _main(self) -> None:
        try:
            self.outcome = self._execute()
        except NotHolder as exc:
            self.outcome = Outcome(self.task.id, "lost", str(exc))
        except Exception as exc:  # the board is unreachable: the claim expires, reclaimed
            log.error("task %s: could not record its outcome: %s", self.task.id, exc)
            self.outcome = Outcome(self.task.id, "lost", str(exc))
        if self.outcome.kind == "lost":
            log.warning("task %s: %s", self.task.id, self.outcome.detail)

    def _execute(self) -> Outcome:
        task = self.task
        try:
            messages = messages_for(self.store, task)
        except HermesError as exc:
            return self._fail(f"cannot build the task's request: {exc}", None)
        body = json.dumps({"messages": messages, "stream": False}).encode()
        headers = {
            "authorization": f"Bearer {self.endpoint.api_key}",
            "content-type": "application/json",
            SESSION_HEADER: session_id(task.id),
        }
        timeout, is_runtime = self._timeout()
        started = time.monotonic()
        conn = http.client.HTTPConnection(LOOPBACK, self.endpoint.port, timeout=timeout)
        with self._lock:
            self._conn = conn
        try:
            conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
            response = conn.getresponse()
            reply = response.read(MAX_REPLY_BYTES + 1)
            status, retry_after = response.status, response.getheader("retry-after")
        except TimeoutError:
            latency = int((time.monotonic() - started) * 1000)
            if is_runtime:
                return self._record_timeout()
            return self._fail(f"no reply from the gateway within {timeout:g}s", latency)
        except ConnectionRefusedError:
            # Nothing listens on the gateway's port: it stopped between the tick's health
            # probe and this request, which never left. A gateway that is not running
            # is never the task's failure: hand the task back, as the tick would have.
            if self.lost:
                return Outcome(task.id, "lost", "the run was taken back while it ran")
            detail = f"the gateway of profile {self.endpoint.profile!r} is not running"
            self.store.release(self.run.id, reason=detail)
            return Outcome(task.id, "gateway_down", detail)
        except (OSError, http.client.HTTPException) as exc:
            latency = int((time.monotonic() - started) * 1000)
            if self.lost:
                return Outcome(task.id, "lost", "the run was taken back while it ran")
            what = type(exc).__name__ if not str(exc) else f"{type(exc).__name__}: {exc}"
            return self._fail(
                f"the gateway of profile {self.endpoint.profile!r} failed mid-request ({what})",
                latency,
            )
        finally:
            conn.close()
        latency = int((time.monotonic() - started) * 1000)
        if self.lost:
            return Outcome(task.id, "lost", "the run was taken back while it ran")
        if status == 200:
            if len(reply) > MAX_REPLY_BYTES:
                return self._fail(f"the reply is larger than {MAX_REPLY_BYTES} bytes", latency)
            content, tokens = _reply(reply)
            if not content or not content.strip():
                return self._fail("the gateway's reply has no answer text", latency)
            self.store.complete(self.run, content, latency_ms=latency, tokens=tokens)
            return Outcome(task.id, "completed")
        if status == 429:
            wait = retry_after_seconds(retry_after, time.time())
            if wait is None:
                wait = self.settings.rate_limit_cooldown_seconds
            self.store.rate_limited(self.run, wait)
            return Outcome(task.id, "rate_limited", f"retry after {wait:g}s")
        return self._fail(f"gateway answered HTTP {status}: {_error_detail(reply)}", latency)

    def _fail(self, error: str, latency: int | None) -> Outcome:
        after = self.store.fail(self.run, error, self.policy, latency_ms=latency)
        return Outcome(self.task.id, "gave_up" if after.status == BLOCKED else "failed", error)

    def _record_timeout(self) -> Outcome:
        after = self.store.time_out(self.run.id, self.policy)
        kind = "gave_up" if after.status == BLOCKED else "timed_out"
        return Outcome(self.task.id, kind, "ran past its max_runtime")
