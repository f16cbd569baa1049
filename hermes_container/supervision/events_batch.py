"""Record one event per profile in a single ledger append.

`events.append.record` is one SQLite transaction per event; registering or reconciling
50 profiles that way cost 50 transactions (and 50 spool checks), 1-2 ms each, paid at
boot while gateways start. This builds the same events (same kind, actor, data) and
hands them to `events.append.write` together: one transaction, same never-raise and
spool-when-busy behaviour.
"""

from __future__ import annotations

import logging

from hermes_container.errors import HermesError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path
    from typing import Any

log = logging.getLogger("hermes.events")


def record_each(root: Path, kind: str, entries: Iterable[tuple[str, Mapping[str, Any]]]) -> bool:
    """Append one `kind` event per (profile, data) pair; True when they reached the
    ledger itself. The actor is what `record` would pick: the context's, else the
    process's."""
    from hermes_container.events.actor import process_actor
    from hermes_container.events.append import ACTOR, write
    from hermes_container.events.ledger import make_pending

    who = ACTOR.get() or process_actor()
    try:
        events = [
            make_pending(kind, profile=profile, actor=who, data=data) for profile, data in entries
        ]
    except HermesError as exc:
        log.error("events not recorded: %s", exc.message)
        return False
    return write(root, events)
