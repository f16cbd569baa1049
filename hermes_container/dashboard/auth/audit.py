"""`$HERMES_HOME/logs/dashboard-auth.log`: one JSON object per line, size-rotated.

Events: login_start, login_success, login_failure, login_denied, logout, refresh,
gateway_action. Records never carry tokens, codes, cookies or secrets: any key that
looks like one is dropped before writing, and free-text values are length-capped.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import threading
from pathlib import Path
from typing import Any

from hermes_container.timeutil import utc_now_iso

MAX_BYTES = 1_000_000
BACKUPS = 3
_FORBIDDEN = ("token", "code", "cookie", "secret", "password", "state", "nonce", "verifier")
_MAX_TEXT = 300

log = logging.getLogger("hermes.dashboard")


def scrub(fields: dict[str, Any]) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for key, value in fields.items():
        if any(word in key.lower() for word in _FORBIDDEN):
            continue
        if isinstance(value, str):
            value = value[:_MAX_TEXT]
        elif not isinstance(value, int | float | bool | type(None)):
            value = str(value)[:_MAX_TEXT]
        clean[key] = value
    return clean


class AuditLog:
    def __init__(self, path: Path, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._handler: logging.handlers.RotatingFileHandler | None = None

    def _open(self) -> logging.handlers.RotatingFileHandler:
        if self._handler is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handler = logging.handlers.RotatingFileHandler(
                self.path, maxBytes=self.max_bytes, backupCount=self.backups, encoding="utf-8"
            )
        return self._handler

    def write(self, event: str, **fields: Any) -> None:
        record = {"ts": utc_now_iso(), "event": event, **scrub(fields)}
        line = json.dumps(record, separators=(",", ":"), sort_keys=False)
        try:
            with self._lock:
                handler = self._open()
                handler.emit(logging.makeLogRecord({"msg": line, "levelno": logging.INFO}))
        except OSError as exc:
            log.warning("cannot write the audit log %s: %s", self.path, exc.strerror)

    def tail(self, limit: int = 200) -> list[dict[str, Any]]:
        """The newest `limit` records, newest first; unreadable lines are skipped."""
        try:
            with self.path.open("rb") as fh:
                fh.seek(0, 2)
                size = fh.tell()
                fh.seek(max(0, size - 256 * 1024))
                lines = fh.read().decode("utf-8", "replace").splitlines()
        except FileNotFoundError:
            return []
        records = []
        for line in reversed(lines[-limit:]):
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
