"""The dashboard's logins, denials and actions (gateways, board, jobs, sessions, the
playground, profile management), in the ledger.

The auth audit log stays the security record (rate-limited, scrubbed, its own file);
the ledger gets the events a history view needs, with the few fields it shows, never
tokens or subjects. Fed through AuditLog.observer, beside the metrics' counters.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hermes_container.events.append import record

Observer = Callable[[str, dict[str, Any]], None]

# audit event -> (ledger kind, the fields it keeps)
_KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "login_success": ("dashboard.login", ("user", "provider")),
    "login_denied": ("dashboard.denied", ("user", "provider", "reason")),
    "gateway_action": ("dashboard.action", ("action", "result")),
    "kanban_action": ("dashboard.action", ("action", "task", "result")),
    "jobs_action": ("dashboard.action", ("action", "job", "run", "result")),
    "sessions_action": ("dashboard.action", ("action", "session", "result")),
    "playground_action": ("dashboard.action", ("action", "session", "result")),
    "profiles_action": ("dashboard.action", ("action", "result")),
}
# Board, jobs, sessions, playground and profile actions say whose they are
# (`kanban.create`, `jobs.pause`, `sessions.delete`, `playground.chat`,
# `profiles.rotate_key`); a gateway action keeps its bare name (`restart`), as the
# ledger has always had it.
_ACTION_PREFIX = {
    "kanban_action": "kanban.",
    "jobs_action": "jobs.",
    "sessions_action": "sessions.",
    "playground_action": "playground.",
    "profiles_action": "profiles.",
}


def ledger_observer(root: Path) -> Observer:
    def observe(event: str, fields: dict[str, Any]) -> None:
        mapped = _KINDS.get(event)
        if mapped is None:
            return
        kind, keep = mapped
        data = {key: str(fields[key]) for key in keep if fields.get(key) is not None}
        if "action" in data:
            data["action"] = _ACTION_PREFIX.get(event, "") + data["action"]
        user = fields.get("user")
        profile = fields.get("profile")
        record(
            root,
            kind,
            profile=profile if isinstance(profile, str) else None,
            actor=f"dashboard:{user}" if isinstance(user, str) and user else "dashboard",
            data=data,
        )

    return observe


def chain(*observers: Observer | None) -> Observer:
    """One observer that tells each of `observers` in turn."""
    present = [o for o in observers if o is not None]

    def observe(event: str, fields: dict[str, Any]) -> None:
        for observer in present:
            observer(event, fields)

    return observe
