"""The dashboard's audit trail: security events, with pre-auth noise kept apart.

- `$HERMES_HOME/logs/dashboard-auth.log` holds the security events: login_success,
  login_denied, logout, refresh, session_ended, revocations_reset, and the actions taken
  from the dashboard: gateway_action, kanban_action, jobs_action, sessions_action,
  playground_action.
  Only a logged-in user, or an identity a provider vouched for (login_denied), can
  cause one, and login_denied is rate-limited per client too, so unauthenticated
  traffic cannot rotate the real events out of it.
- `$HERMES_HOME/logs/dashboard-preauth.log` holds what any client can cause:
  login_start, login_failure, and `suppressed` aggregates. It has its own, smaller
  rotation, and a token bucket per client: past a short burst, a client's events are
  only counted, and one `suppressed` record per client reports the count later (on
  the next pre-auth event after FLUSH_INTERVAL, when the audit page is viewed, or at
  shutdown).

Both files are JSON lines, mode 0600, size-rotated. Records never carry tokens, codes,
cookies or secrets: any key that looks like one is dropped before writing, `ip` must
parse as an address, and free-text values are length-capped. Login failure reasons are
mapped to a fixed set by the caller (`reasons.reason_code`), so a client cannot put
text of its choice into either log.
"""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import logging.handlers
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hermes_container.dashboard.auth.ratelimit import ClientLimiter, Suppressed, client_key
from hermes_container.tail import lines_backwards
from hermes_container.timeutil import utc_now_iso

MAX_BYTES = 1_000_000
BACKUPS = 3
PREAUTH_FILE = "dashboard-preauth.log"
PREAUTH_MAX_BYTES = 256 * 1024
PREAUTH_BACKUPS = 1
FLUSH_INTERVAL = 60.0
FILE_MODE = 0o600
_FORBIDDEN = ("token", "code", "cookie", "secret", "password", "state", "nonce", "verifier")
_MAX_TEXT = 300
_TAIL_BYTES = 256 * 1024

log = logging.getLogger("hermes.dashboard")


def clean_ip(value: object) -> str | None:
    """The address in canonical form, `invalid` for anything that is not one."""
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(str(value)[:64]))
    except ValueError:
        return "invalid"


def scrub(fields: dict[str, Any]) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for key, value in fields.items():
        if any(word in key.lower() for word in _FORBIDDEN):
            continue
        if key == "ip":
            value = clean_ip(value)
        elif isinstance(value, str):
            value = value[:_MAX_TEXT]
        elif not isinstance(value, int | float | bool | type(None)):
            value = str(value)[:_MAX_TEXT]
        clean[key] = value
    return clean


def preauth_limiter() -> ClientLimiter:
    # A login attempt is 2 events (start, failure); 10 at once and then one a minute
    # per client is far above what a person clicking "log in" produces.
    return ClientLimiter(rate=1 / 60, burst=10, global_rate=2.0, global_burst=100)


def denial_limiter() -> ClientLimiter:
    # login_denied needs a real provider login, but a scripted GitHub account can
    # repeat one every second; this keeps it from rotating the security log.
    return ClientLimiter(rate=1 / 300, burst=5, global_rate=1 / 10, global_burst=30)


class _PrivateRotatingHandler(logging.handlers.RotatingFileHandler):
    """RotatingFileHandler whose files are created (and kept) 0600 whatever the umask."""

    def _open(self) -> io.TextIOWrapper:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(self.baseFilename, flags, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)  # a file left by an older version may be 0644
            return open(fd, "a", encoding=self.encoding, errors=self.errors)
        except BaseException:
            os.close(fd)
            raise


class JsonLinesFile:
    """One size-rotated file of JSON records."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._handler: _PrivateRotatingHandler | None = None

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"))
        try:
            with self._lock:
                if self._handler is None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._handler = _PrivateRotatingHandler(
                        self.path, maxBytes=self.max_bytes, backupCount=self.backups,
                        encoding="utf-8",
                    )  # fmt: skip
                self._handler.emit(logging.makeLogRecord({"msg": line, "levelno": logging.INFO}))
        except OSError as exc:
            log.warning("cannot write the audit log %s: %s", self.path, exc.strerror)

    def tail(self, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` records, newest first (also from the last rotated file);
        unreadable lines are skipped."""
        records: list[dict[str, Any]] = []
        for path in (self.path, self.path.with_name(self.path.name + ".1")):
            for line in lines_backwards(path, _TAIL_BYTES):
                if len(records) >= limit:
                    return records
                try:
                    value = json.loads(line)
                except ValueError:
                    continue
                if isinstance(value, dict):
                    records.append(value)
        return records

    def close(self) -> None:
        with self._lock:
            if self._handler is not None:
                self._handler.close()
                self._handler = None


class AuditLog:
    """Both logs. `write` is for security events (a logged-in user's, or the
    dashboard's own); `client_event` for anything an unauthenticated client causes."""

    def __init__(
        self,
        path: Path,
        max_bytes: int = MAX_BYTES,
        backups: int = BACKUPS,
        *,
        preauth_path: Path | None = None,
        preauth: ClientLimiter | None = None,
        denials: ClientLimiter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.security = JsonLinesFile(path, max_bytes, backups)
        self.noise = JsonLinesFile(
            preauth_path or path.with_name(PREAUTH_FILE), PREAUTH_MAX_BYTES, PREAUTH_BACKUPS
        )
        self._limiters = {
            "preauth": preauth or preauth_limiter(),
            "login_denied": denials or denial_limiter(),
        }
        self._clock = clock
        self._lock = threading.Lock()
        self._next_flush = clock() + FLUSH_INTERVAL
        # Told of every event before any rate limit (the metrics' login counters).
        self.observer: Callable[[str, dict[str, Any]], None] | None = None

    @property
    def path(self) -> Path:
        return self.security.path

    def write(self, event: str, **fields: Any) -> None:
        if self.observer is not None:
            self.observer(event, fields)
        self.security.append({"ts": utc_now_iso(), "event": event, **scrub(fields)})

    def client_event(
        self, event: str, ip: str | None, *, security: bool = False, **fields: Any
    ) -> None:
        """An event an unauthenticated client caused, within that client's budget.

        `security=True` (a provider-verified identity was refused) writes to the
        security log; everything else goes to the pre-auth log.
        """
        if self.observer is not None:
            self.observer(event, fields)
        kind = "login_denied" if security else "preauth"
        with self._lock:
            allowed = self._limiters[kind].allow(client_key(ip))
            flush_due = self._clock() >= self._next_flush
        if allowed:
            target = self.security if security else self.noise
            target.append({"ts": utc_now_iso(), "event": event, **scrub({**fields, "ip": ip})})
        if flush_due:
            self.flush()

    def flush(self) -> None:
        """Write one `suppressed` record per client whose events were refused."""
        with self._lock:
            self._next_flush = self._clock() + FLUSH_INTERVAL
            pending = [(kind, s) for kind, lim in self._limiters.items() for s in lim.drain()]
        for kind, suppressed in pending:
            self.noise.append(_aggregate(kind, suppressed))

    def tail(self, limit: int = 200) -> list[dict[str, Any]]:
        """The newest security records, newest first."""
        return self.security.tail(limit)

    def noise_tail(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest pre-auth records (after writing pending aggregates), newest first."""
        self.flush()
        return self.noise.tail(limit)

    def close(self) -> None:
        self.flush()
        self.security.close()
        self.noise.close()


def _aggregate(kind: str, suppressed: Suppressed) -> dict[str, Any]:
    # `client` is our own bucket key (an address, an IPv6 /64, `others` or `unknown`).
    return {
        "ts": utc_now_iso(),
        "event": "suppressed",
        "of": kind,
        "client": suppressed.key,
        "count": suppressed.count,
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(suppressed.since)),
    }
