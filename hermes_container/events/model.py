"""The ledger's record: one thing that happened in the container.

Kinds are dotted, the layer first (`gateway.exited`, `kanban.completed`), so a reader can
filter a whole layer by its prefix. The catalogue below is the list docs and the
dashboard show; `append` accepts only these, so a typo cannot start a new kind nobody
reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KINDS: dict[str, str] = {
    # supervision
    "slot.registered": "a profile's gateway slot was added to the supervision tree",
    "slot.removed": "a profile's gateway slot was taken out of the tree",
    "gateway.starting": "the gateway process started (pid)",
    "gateway.ready": "the gateway listens and answers (pid, port)",
    "gateway.exited": "the gateway process ended (exit code or signal, expected or not)",
    "gateway.restarted": "s6 started the gateway again after an unexpected exit",
    "gateway.parked": "the slot was parked: kept down until someone acts (why)",
    "gateway.stopped": "the gateway was stopped on request",
    "gateway.reloaded": "the gateway applied its settings anew on SIGHUP (the changed keys)",
    "gateway.reload_rejected": "the gateway refused its new settings on SIGHUP; the old serve",
    "desired.changed": "a profile's desired state changed (from, to, by whom)",
    "boot.reconciled": "the boot reconciler restored a profile (desired, action)",
    # profiles
    "profile.created": "a profile was created",
    "profile.deleted": "a profile was deleted",
    "profile.config_changed": "a profile's settings changed (the keys, never secret values)",
    "profiles.applied": "the declarative profiles file changed profiles (what, never secrets)",
    "profiles.rejected": "the declarative profiles file was refused; nothing was applied (why)",
    # dashboard
    "dashboard.login": "someone signed in to the dashboard",
    "dashboard.denied": "a dashboard sign-in or request was refused",
    "dashboard.action": "an action from the dashboard (a gateway, task, job, session or chat)",
}
BOARD_PREFIX = "kanban."  # every board event is carried as kanban.<its kind>
JOB_PREFIX = "job."  # every job event (kanban/jobs/model.py EVENT_KINDS) as job.<its kind>
ACTOR_MAX = 120


def known_kind(kind: str) -> bool:
    return kind in KINDS or any(
        kind.startswith(prefix) and len(kind) > len(prefix) for prefix in (BOARD_PREFIX, JOB_PREFIX)
    )


@dataclass(frozen=True, slots=True)
class LedgerEvent:
    id: int  # monotonic, never reused (also across rotation)
    at: float  # Unix seconds, when it happened (a spooled event keeps its own time)
    kind: str
    profile: str | None
    actor: str  # cli, dashboard:<user>, boot, supervisor, gateway, dispatcher, ...
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at,
            "kind": self.kind,
            "profile": self.profile,
            "actor": self.actor,
            "data": self.data,
        }
