"""Ended sessions, kept across restarts in `$HERMES_HOME/dashboard/revoked.json`.

A session cookie is self-contained (signed, not looked up), so logging out only ends
it for everyone if the dashboard remembers the session id until the cookie would have
expired anyway. Those ids live in memory for the per-request check (a dict lookup)
and in this file, rewritten atomically (temp file, fsync, rename; mode 0600) on each
change, with expired entries pruned and at most MAX_ENTRIES kept:

    {"version": 1, "generation": "<random>", "revoked": {"<sid>": <expiry, epoch s>}}

Failing closed: every login session records the `generation` current when it was
made, and only sessions of the current generation are valid. Whenever the list
cannot be trusted, a new generation starts, which ends every existing session (users
log in again; nobody is locked out):
- the file is missing (first start, or deleted), unreadable or corrupt (a corrupt one
  is kept beside it as `revoked.json.corrupt` and a warning is logged);
- the list would exceed MAX_ENTRIES (dropping entries would revive sessions);
- the file cannot be written at start: the new generation then lives in memory only,
  so sessions end at every restart, like the in-memory fallback of the signing key.
A crash between writing the temp file and the rename leaves the old file intact; the
orphaned `.revoked.json.*.tmp` is removed at the next start.

Another process may end every session too: `hermes dashboard login-url --rotate` writes
a new generation (`end_all_sessions`) while the dashboard runs. Writers take an flock on
the file's directory and merge what is on disk before they write, so neither
loses the other's change, and the running dashboard notices a file it did not write
(`refresh`, a stat at most once a second) and adopts its generation at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from hermes_container.fsutil import atomic_write_json

REVOCATIONS_FILE = Path("dashboard", "revoked.json")
REFRESH_INTERVAL = 1.0  # seconds between two looks at the file for outside changes
MAX_ENTRIES = 10_000
VERSION = 1
FILE_MODE = 0o600
_GENERATION = re.compile(r"[A-Za-z0-9_-]{8,64}")
_MAX_SID = 128

log = logging.getLogger("hermes.dashboard")


def new_generation() -> str:
    return secrets.token_urlsafe(12)


class RevocationStore:
    """Revoked session ids and the current generation; `path=None` keeps them in memory."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.time,
        on_reset: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path
        self.max_entries = max_entries
        self.generation = new_generation()
        self.on_reset = on_reset
        self._clock = clock
        self._revoked: dict[str, float] = {}
        self._lock = threading.Lock()  # guards the dict (held briefly, also on the loop)
        self._write_lock = threading.Lock()  # one writer at a time, latest snapshot wins
        self.reset_reason: str | None = None
        self._stamp: tuple[int, int, int] | None = None  # the file as we last read or wrote it
        self._next_look = 0.0  # monotonic time of the next refresh() stat

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.time,
    ) -> RevocationStore:
        """The store from `path`; a new generation (see the module doc) when it cannot
        be trusted. `reset_reason` then says why: missing, unreadable, corrupt,
        overflow, unwritable."""
        store = cls(path, max_entries=max_entries, clock=clock)
        _remove_orphaned_temps(path)
        reason = store._read()
        if reason is None and not store.save():
            # Logouts of this run could not outlive it: let no session outlive it either.
            store.generation = new_generation()
            reason = "unwritable"
        elif reason is not None:
            store.save()  # the new generation, so the next start keeps it
        if reason is not None:
            store.reset_reason = reason
            if reason != "missing":
                log.warning(
                    "session revocations in %s could not be trusted (%s): every existing "
                    "dashboard session has ended; users must log in again",
                    path,
                    reason,
                )
        return store

    def _read(self) -> str | None:
        assert self.path is not None
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return "missing"
        except OSError as exc:
            log.warning("cannot read %s: %s", self.path, exc.strerror)
            return "unreadable"
        parsed = _parse(raw)
        if parsed is None:
            with contextlib.suppress(OSError):
                os.replace(self.path, self.path.with_name(self.path.name + ".corrupt"))
            return "corrupt"
        generation, revoked = parsed
        now = self._clock()
        revoked = {sid: until for sid, until in revoked.items() if until >= now}
        self._stamp = _stamp(self.path)  # judged now: refresh() must not take it back in
        if len(revoked) > self.max_entries:
            return "overflow"
        self.generation, self._revoked = generation, revoked
        return None

    def refresh(self, *, force: bool = False) -> None:
        """Adopt a change another process made to the file (a new generation, more
        revoked ids). Cheap enough for every request: one stat, at most once a second."""
        if self.path is None:
            return
        now = time.monotonic()
        if not force and now < self._next_look:
            return
        self._next_look = now + REFRESH_INTERVAL
        stamp = _stamp(self.path)
        if stamp is None or stamp == self._stamp:
            return
        try:
            parsed = _parse(self.path.read_bytes())
        except OSError:
            return
        if parsed is None:  # a broken file is judged at the next start (module doc)
            return
        generation, revoked = parsed
        with self._lock:
            if generation != self.generation:
                # Every session of the old generation has ended; its revoked ids with it.
                self.generation, self._revoked = generation, {}
            self._revoked.update(revoked)
            self._stamp = stamp

    def is_revoked(self, sid: str) -> bool:
        # Entries are pruned lazily: an expired one only matches a cookie that has
        # expired anyway.
        return sid in self._revoked

    def add(self, sid: str, expires_at: float) -> None:
        """Revoke `sid` in memory (effective at once); `save()` makes it durable."""
        reset = False
        with self._lock:
            now = self._clock()
            if len(self._revoked) >= self.max_entries:
                self._revoked = {s: t for s, t in self._revoked.items() if t >= now}
            if len(self._revoked) >= self.max_entries:
                # Dropping entries would revive logged-out sessions: end them all.
                self.generation = new_generation()
                self._revoked = {}
                reset = True
            self._revoked[sid] = expires_at
        if reset:
            self.reset_reason = "overflow"
            log.warning(
                "more than %d revoked dashboard sessions: every session has ended",
                self.max_entries,
            )
            if self.on_reset is not None:
                self.on_reset("overflow")

    def revoke(self, sid: str, expires_at: float) -> bool:
        self.add(sid, expires_at)
        return self.save()

    def save(self) -> bool:
        """Write the current state atomically; False (and a warning) when it cannot."""
        if self.path is None:
            return True
        with self._write_lock:
            try:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                with _dir_locked(self.path):
                    self.refresh(force=True)  # first take in what another process wrote
                    with self._lock:
                        now = self._clock()
                        self._revoked = {s: t for s, t in self._revoked.items() if t >= now}
                        data = {
                            "version": VERSION,
                            "generation": self.generation,
                            "revoked": dict(self._revoked),
                        }
                    atomic_write_json(self.path, data, mode=FILE_MODE)
                    self._stamp = _stamp(self.path)
            except OSError as exc:
                log.warning(
                    "cannot write %s (%s): logouts since the last write are forgotten "
                    "at the next restart",
                    self.path,
                    exc.strerror,
                )
                return False
        return True

    def __len__(self) -> int:
        return len(self._revoked)


def end_all_sessions(path: Path) -> None:
    """Start a new generation in the file at `path`: every login session made so far
    has ended, in a running dashboard within a second (its `refresh`) and at the next
    start. Raises OSError when the file cannot be written."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _dir_locked(path):
        data = {"version": VERSION, "generation": new_generation(), "revoked": {}}
        atomic_write_json(path, data, mode=FILE_MODE)


@contextlib.contextmanager
def _dir_locked(path: Path) -> Iterator[None]:
    """An exclusive flock on the directory of `path`: the file itself is replaced by
    each write, so a lock on it would not be shared; the directory stays."""
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _parse(raw: bytes) -> tuple[str, dict[str, float]] | None:
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        return None
    generation, revoked = data.get("generation"), data.get("revoked")
    if not isinstance(generation, str) or not _GENERATION.fullmatch(generation):
        return None
    if not isinstance(revoked, dict):
        return None
    out: dict[str, float] = {}
    for sid, until in revoked.items():
        if not isinstance(sid, str) or not 0 < len(sid) <= _MAX_SID:
            return None
        if isinstance(until, bool) or not isinstance(until, int | float):
            return None
        out[sid] = float(until)
    return generation, out


def _remove_orphaned_temps(path: Path) -> None:
    """Temp files of a write that died before its rename (see fsutil.atomic_write_bytes)."""
    with contextlib.suppress(OSError):
        for orphan in path.parent.glob(f".{path.name}.*.tmp"):
            with contextlib.suppress(OSError):
                orphan.unlink()
