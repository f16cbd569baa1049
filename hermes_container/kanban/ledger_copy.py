"""The board's events and the jobs' events, carried into the container's event ledger
exactly once.

The board keeps its own append-only event list (written in the same transaction as the
change it records: the board's source of truth). The ledger gets a copy of each, as
`kanban.<kind>` with the board's event id, board and task. The copy and the ledger's
cursor for this board store move in one ledger transaction, and each copy carries a
unique source key, so a crash between the board's write and the copy neither loses an
event (the cursor has not moved: it is copied next time) nor doubles one. Job events
(kanban/jobs) are carried the same way, as `job.<kind>`, on a cursor of their own.
"""

from __future__ import annotations

from functools import partial

from hermes_container.events.ledger import Ledger, Pending, make_pending
from hermes_container.events.model import JOB_PREFIX
from hermes_container.kanban.store import Store

PAGE = 1000


def stream_name(store: Store) -> str:
    """Which board store the cursor follows: one per database, not per board."""
    return f"board:{store.identity}"


def carry(store: Store, ledger: Ledger, *, limit_pages: int = 20) -> int:
    """Copy the board and job events the ledger has not seen; how many were new."""
    return carry_board(store, ledger, limit_pages) + carry_jobs(store, ledger, limit_pages)


def carry_jobs(store: Store, ledger: Ledger, limit_pages: int) -> int:
    from hermes_container.kanban.jobs.book import events_since

    stream = f"jobs:{store.identity}"
    after = ledger.cursor(stream)
    copied = 0
    for _ in range(limit_pages):
        page = store.transact(partial(events_since, after_id=after, limit=PAGE), write=False)
        if not page:
            break
        batch = []
        for event in page:
            data = {"job": event.job, "run_id": event.run_id, "slot": event.slot}
            data.update(event.data)
            profile = event.data.get("profile")
            batch.append(
                make_pending(
                    f"{JOB_PREFIX}{event.kind}",
                    profile=profile if isinstance(profile, str) else None,
                    actor="jobs",
                    data=data,
                    at=event.at,
                    source=f"{stream}:{event.id}",
                )
            )
        after = page[-1].id
        copied += ledger.write(batch, cursor=(stream, after))
        if len(page) < PAGE:
            break
    return copied


def carry_board(store: Store, ledger: Ledger, limit_pages: int) -> int:
    stream = stream_name(store)
    after = ledger.cursor(stream)
    copied = 0
    for _ in range(limit_pages):  # bounded per call: a huge backlog goes over ticks
        page = store.events_since(after, limit=PAGE)
        if not page:
            break
        batch: list[Pending] = []
        # The profile of each event is its task's assignee (most board events do not
        # name it): one query per page, so a profile's history includes its tasks.
        assignees = {t.id: t.assignee for t in store.get_tasks([e.task_id for e in page]).values()}
        for event in page:
            data = {"board": event.board, "task_id": event.task_id, "board_event_id": event.id}
            data.update(event.data)
            profile = event.data.get("assignee") or assignees.get(event.task_id)
            batch.append(
                make_pending(
                    f"kanban.{event.kind}",
                    profile=profile if isinstance(profile, str) else None,
                    actor="board",
                    data=data,
                    at=event.at,
                    source=f"{stream}:{event.id}",
                )
            )
        after = page[-1].id
        copied += ledger.write(batch, cursor=(stream, after))
        if len(page) < PAGE:
            break
    return copied
