"""`record(...)`: how every layer writes to the ledger. It never raises and never blocks
for long: the caller is supervising something (a finish script, a gateway starting).

    from hermes_container.events.append import record
    record(home.root, "gateway.exited", profile="coder", actor="supervisor", code=137, signal=9)

Within the append budget the event is in the ledger; otherwise it is spooled and the
next successful append (by any process) delivers it. HERMES_EVENTS=0 turns the ledger
off entirely (nothing written, nothing spooled).
"""

from __future__ import annotations

import contextvars
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hermes_container.envflags import is_falsy
from hermes_container.errors import HermesError
from hermes_container.events import spool
from hermes_container.events.actor import process_actor
from hermes_container.events.ledger import Ledger, Pending, ledger_dir, make_pending

log = logging.getLogger("hermes.events")

_ledgers: dict[Path, Ledger] = {}
_ledgers_lock = threading.Lock()

# Who acts, when the caller does not say: the dashboard sets it per request
# ("dashboard:<user>"); otherwise the process's actor (events.actor) applies, so code
# deep below (write_desired's callers) need not pass it.
ACTOR: contextvars.ContextVar[str | None] = contextvars.ContextVar("hermes_actor", default=None)


@contextmanager
def acting_as(actor: str) -> Iterator[None]:
    token = ACTOR.set(actor)
    try:
        yield
    finally:
        ACTOR.reset(token)


def enabled() -> bool:
    return not is_falsy(os.environ.get("HERMES_EVENTS", ""))


def open_ledger(root: Path) -> Ledger:
    """This process's ledger for the home at `root` (opened once, then reused)."""
    with _ledgers_lock:
        ledger = _ledgers.get(root)
        if ledger is None:
            ledger = _ledgers[root] = Ledger(root)
        return ledger


def write(root: Path, events: list[Pending]) -> bool:
    """Append `events`, or spool them; True when they reached the ledger itself."""
    if not events or not enabled():
        return False
    if not may_write(root):
        # Root never creates files in a directory the hermes user controls; the
        # commands that record drop to the owner first, so this is a caller's bug.
        log.debug("event ledger: not written as root in %s", root)
        return False
    try:
        ledger = open_ledger(root)
        # What waited in the spool goes in first, so events keep the order they were
        # recorded in: a finish script's spooled `gateway.exited` before the new
        # gateway's `gateway.starting`, a writer's spooled event before its next one.
        # Still busy (sqlite3.Error): the new events are spooled behind it, a later
        # file name. An unreadable spool directory holds nothing up.
        try:
            spool.deliver(ledger)
        except OSError as exc:
            log.debug("event spool not delivered: %s", exc)
        ledger.write(events)
    except (sqlite3.Error, OSError) as exc:
        try:
            spool.put(ledger_dir(root), events)
            log.debug("ledger busy or unavailable (%s): %d event(s) spooled", exc, len(events))
        except OSError as spool_exc:  # the volume itself is failing: say so, go on
            log.warning("event ledger: %s; an event was dropped", spool_exc)
        return False
    return True


def may_write(root: Path, euid: int | None = None) -> bool:
    """Whether this process (effective uid `euid`, default its own) may write the ledger
    of the home at `root`: anyone but root may try (the file's modes decide); root only
    when neither the home nor its events directory belongs to another user, since
    root must not follow paths that user can change."""
    if (os.geteuid() if euid is None else euid) != 0:
        return True
    return all(_owner(path) in (0, None) for path in (root, ledger_dir(root)))


def _owner(path: Path) -> int | None:
    try:
        return path.stat().st_uid
    except OSError:
        return None


def record(
    root: Path,
    kind: str,
    *,
    profile: str | None = None,
    actor: str | None = None,
    at: float | None = None,
    data: Mapping[str, Any] | None = None,
    **fields: Any,
) -> bool:
    """Append one event whose data is `data` and `fields` together; never raises (a bad
    call is a bug, logged, not a crash)."""
    try:
        who = actor or ACTOR.get() or process_actor()
        body = {**(data or {}), **fields}
        event = make_pending(kind, profile=profile, actor=who, data=body, at=at)
    except HermesError as exc:
        log.error("event not recorded: %s", exc.message)
        return False
    return write(root, [event])
