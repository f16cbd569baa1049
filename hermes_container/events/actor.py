"""Who is acting, for the ledger's `actor` field: set once per process by the CLI entry
point from its command (cheap to import: `hermes --help` loads it; the plain `gateway
status`, which records nothing, skips it), and per request by the dashboard
(`acting_as("dashboard:<user>")` in events.append)."""

from __future__ import annotations

# The command word -> the actor of everything that command records.
COMMAND_ACTORS = {
    "_slot-finish": "supervisor",
    "supervise": "supervisor",
    "reconcile": "boot",
    "gateway": "cli",
    "dashboard": "dashboard",
    "_dashboard-finish": "supervisor",
}

_process_actor = "cli"


def set_process_actor(command: str | None, action: str | None = None) -> None:
    """The actor of this process from its parsed command and action (never from raw
    argv: `hermes -p run gateway start` is someone at the CLI, not the gateway)."""
    global _process_actor
    actor = COMMAND_ACTORS.get(command or "", "cli")
    if command == "gateway" and action == "run":
        actor = "gateway"  # the gateway process itself, not someone running the CLI
    if command == "kanban" and action == "daemon":
        actor = "dispatcher"
    _process_actor = actor


def process_actor() -> str:
    return _process_actor
