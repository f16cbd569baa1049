"""The event ledger: appended in the same transaction as the change it records.

Ids must be monotonic in commit order, or a reader following `events_since(last_id)`
could skip an event whose transaction took a smaller id but committed later. SQLite
serialises writers, so that holds there by itself. On PostgreSQL identity values are
handed out at INSERT, not at COMMIT, so `flush` first takes one transaction-scoped
advisory lock: ids are then allocated and committed one transaction at a time. Events
are written last in every transaction, so that lock is held only from here to COMMIT.
"""

from __future__ import annotations

import json

from hermes_container.kanban.model import Event
from hermes_container.kanban.tx import Tx

# Any fixed key works: it names "the event ledger" among this database's advisory locks.
EVENT_LEDGER_LOCK = 0x6B616E62  # "kanb"
# The PostgreSQL channel a committed change is announced on (payload: the board's slug);
# dispatchers and live views LISTEN on it instead of polling (see wake.py).
NOTIFY_CHANNEL = "hermes_kanban"


def flush(tx: Tx) -> set[str]:
    """Write the transaction's queued events; the boards they belong to."""
    if not tx.pending_events and not tx.pending_job_events:
        return set()
    postgres = tx.dialect.name == "postgresql"
    if postgres:
        tx.one("SELECT pg_advisory_xact_lock(?)", (EVENT_LEDGER_LOCK,))
    # executemany inserts the rows one after another, in the order they were queued,
    # so ids stay in that order too.
    if tx.pending_events:
        tx.many(
            "INSERT INTO kanban_events (task_id, board, kind, data, at) VALUES (?, ?, ?, ?, ?)",
            tx.pending_events,
        )
    if tx.pending_job_events:
        tx.many(
            "INSERT INTO kanban_job_events (job, board, run_id, slot, kind, data, at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            tx.pending_job_events,
        )
    changed = {event[1] for event in tx.pending_events}
    if tx.pending_job_events:
        changed.update(event[1] for event in tx.pending_job_events)
    if postgres:
        # Delivered at COMMIT and only then, so a listener never sees an uncommitted change.
        for board in sorted(changed):
            tx.one("SELECT pg_notify(?, ?)", (NOTIFY_CHANNEL, board))
    tx.pending_events.clear()
    tx.pending_job_events.clear()
    return changed


def since(tx: Tx, after_id: int, board: str | None, task_id: int | None, limit: int) -> list[Event]:
    sql = "SELECT id, task_id, board, kind, data, at FROM kanban_events WHERE id > ?"
    params: list[object] = [after_id]
    if board is not None:
        sql += " AND board = ?"
        params.append(board)
    if task_id is not None:
        sql += " AND task_id = ?"
        params.append(task_id)
    params.append(limit)
    return [
        Event(
            id=int(row[0]),
            task_id=int(row[1]),
            board=row[2],
            kind=row[3],
            data=json.loads(row[4]),
            at=float(row[5]),
        )
        for row in tx.all(sql + " ORDER BY id LIMIT ?", params)
    ]
