"""The board as the dashboard's Kanban page sees it: snapshots, task views and actions.

Every method here is synchronous (the store is) and is called from the threadpool by
kanban_api.py, never on the event loop. The store is opened on first use, so a
dashboard whose board is never looked at creates no database, and opened again after
a failure (a PostgreSQL server that was down at start).

What leaves this module is JSON for a logged-in user, built field by field: a run's
token (the holder's secret) is never part of it.
"""

from __future__ import annotations

import threading
from dataclasses import asdict
from typing import Any

from hermes_container.errors import UsageError
from hermes_container.home import HermesHome
from hermes_container.kanban.boards import validate_slug
from hermes_container.kanban.dispatcher import Dispatcher
from hermes_container.kanban.errors import InvalidTransition, NotFound
from hermes_container.kanban.model import ARCHIVED, RUNNING, STATUSES, Event, Run, Task
from hermes_container.kanban.runs import cap
from hermes_container.kanban.settings import SettingsFile
from hermes_container.kanban.store import Store, open_store
from hermes_container.profiles import list_profiles

# Cards per column in a snapshot; a column with more says so (`more`), and the list
# API (?status=) reaches the rest. Archived tasks only pile up, so fewer of them.
COLUMN_LIMIT = 100
ARCHIVED_LIMIT = 30
CARD_ERROR_CHARS = 300
TASK_EVENTS_LIMIT = 1000
LIST_LIMIT_MAX = 1000
RECLAIM_REASON = "reclaimed from the dashboard"


def run_json(run: Run) -> dict[str, Any]:
    """A run without its token."""
    return {
        "id": run.id,
        "task_id": run.task_id,
        "host": run.host,
        "pid": run.pid,
        "claimed_at": run.claimed_at,
        "claim_expires_at": run.claim_expires_at,
        "finished_at": run.finished_at,
        "outcome": run.outcome,
        "error": run.error,
        "latency_ms": run.latency_ms,
        "tokens": run.tokens,
    }


def task_json(task: Task) -> dict[str, Any]:
    data = asdict(task)
    data["parents"] = list(task.parents)
    return data


def card_json(task: Task, now: float) -> dict[str, Any]:
    """What a card shows: no body or result (they can be long), a short last error."""
    error = task.last_error
    if error is not None and len(error) > CARD_ERROR_CHARS:
        error = error[: CARD_ERROR_CHARS - 1] + "…"
    return {
        "id": task.id,
        "title": task.title,
        "status": task.status,
        "assignee": task.assignee,
        "priority": task.priority,
        "attempts": task.attempts,
        "consecutive_failures": task.consecutive_failures,
        "parents": list(task.parents),
        "created_at": task.created_at,
        "age_s": max(0.0, now - task.created_at),
        "not_before": task.not_before,
        "last_error": error,
        "has_result": task.result is not None,
    }


def event_json(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "task_id": event.task_id,
        "kind": event.kind,
        "data": event.data,
        "at": event.at,
    }


def last_event_id(store: Store) -> int:
    """The newest event id on the store, found in O(log n) indexed look-ups
    (events_since has no reverse scan): "is there an event after x" holds exactly for
    x below the newest id, so search for the first x where it fails."""
    if not store.events_since(0, limit=1):
        return 0
    low, high = 0, 1  # an event after `low`; is there one after `high`?
    while store.events_since(high, limit=1):
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        if store.events_since(middle, limit=1):
            low = middle
        else:
            high = middle
    return high


class KanbanBoard:
    """The dashboard process's one store and settings file, shared by every request."""

    def __init__(self, home: HermesHome) -> None:
        self.home = home
        self.settings = SettingsFile(home)
        self._store: Store | None = None
        self._lock = threading.Lock()

    @property
    def store(self) -> Store:
        with self._lock:
            if self._store is None:
                self._store = open_store(self.home)  # StoreUnavailable: 503, retried next time
            return self._store

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    def profiles(self) -> list[str]:
        return list_profiles(self.home)

    def check_assignee(self, name: str | None) -> str | None:
        """The form offers this home's profiles; anything else is refused here (a shared
        board's other hosts assign their own profiles with the CLI)."""
        if name is None:
            return None
        if name not in self.profiles():
            raise UsageError(f"{name[:64]!r} is not a profile here")
        return name

    # -- reads --------------------------------------------------------------------------

    def require_board(self, board: str) -> None:
        """A valid slug (422) of a board that exists, archived or not (404)."""
        validate_slug(board)
        if board not in {b.slug for b in self.store.list_boards(include_archived=True)}:
            raise NotFound(f"no board {board!r}")

    def snapshot(self, board: str) -> dict[str, Any]:
        self.require_board(board)
        store = self.store
        now = store.now()
        columns: dict[str, dict[str, Any]] = {}
        for status in STATUSES:
            limit = ARCHIVED_LIMIT if status == ARCHIVED else COLUMN_LIMIT
            tasks = store.list_tasks(board=board, status=status, limit=limit + 1)
            columns[status] = {
                "tasks": [card_json(t, now) for t in tasks[:limit]],
                "more": len(tasks) > limit,
            }
        running = store.running_counts(board)
        settings = self.settings.read()
        per_profile = cap(settings.max_in_progress_per_profile)
        names = self.profiles()
        # Assignees that are not profiles here (a shared board) still hold slots.
        names += sorted(set(running) - set(names))
        return {
            "board": board,
            "boards": [b.slug for b in store.list_boards()],
            "now": now,
            "columns": columns,
            "profiles": [
                {"name": name, "running": running.get(name, 0), "cap": per_profile}
                for name in names
            ],
            "running_total": sum(running.values()),
            "max_in_progress": cap(settings.max_in_progress),
            "max_in_progress_per_profile": per_profile,
            "warnings": list(settings.warnings),
        }

    def list_tasks(self, board: str, status: str | None, limit: int | None) -> list[Any]:
        self.require_board(board)
        store = self.store
        now = store.now()
        tasks = store.list_tasks(board=board, status=status, limit=limit or LIST_LIMIT_MAX)
        return [card_json(t, now) for t in tasks]

    def show(self, task_id: int) -> dict[str, Any]:
        store = self.store
        task = store.get_task(task_id)  # NotFound: 404
        data = task_json(task)
        data["runs"] = [run_json(r) for r in store.runs_of(task_id)]
        data["events"] = [
            event_json(e) for e in store.events_since(0, task_id=task_id, limit=TASK_EVENTS_LIMIT)
        ]
        data["now"] = store.now()
        return data

    def preview(self, board: str) -> dict[str, Any]:
        """The next tick as a dry run: what it would do, with nothing written."""
        self.require_board(board)
        dispatcher = Dispatcher(self.home, self.store, settings=self.settings.read)
        return dispatcher.tick(board, dry_run=True).to_json()

    def events_since(self, after: int, board: str, limit: int) -> list[Event]:
        return self.store.events_since(after, board=board, limit=limit)

    def last_event_id(self) -> int:
        return last_event_id(self.store)

    # -- writes -------------------------------------------------------------------------

    def create(
        self,
        *,
        board: str,
        title: str,
        body: str,
        assignee: str | None,
        priority: int,
        parents: list[int],
    ) -> dict[str, Any]:
        task = self.store.create_task(
            title,
            board=board,
            body=body,
            assignee=self.check_assignee(assignee),
            priority=priority,
            parents=parents,
        )
        return task_json(task)

    def assign(self, task_id: int, assignee: str | None) -> dict[str, Any]:
        self.store.get_task(task_id)  # an unknown task is a 404 before a bad name is a 422
        return task_json(
            self.store.assign(task_id, self.check_assignee(assignee), source="dashboard")
        )

    def unblock(self, task_id: int) -> dict[str, Any]:
        return task_json(self.store.unblock(task_id))

    def archive(self, task_id: int) -> dict[str, Any]:
        return task_json(self.store.archive(task_id))

    def reclaim(self, task_id: int) -> dict[str, Any]:
        """A running task back to ready, no failure counted (its run is closed, so the
        dispatcher still working on it can no longer record an outcome)."""
        task = self.store.get_task(task_id)
        if task.status != RUNNING or task.current_run is None:
            raise InvalidTransition(f"cannot reclaim task {task_id}: it is {task.status}")
        return task_json(self.store.release(task.current_run, reason=RECLAIM_REASON))
