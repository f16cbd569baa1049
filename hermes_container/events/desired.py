"""Desired-state changes into the ledger: every writer of user intent goes through here."""

from __future__ import annotations

from typing import Any

from hermes_container.events.append import record
from hermes_container.home import HermesHome
from hermes_container.state import GatewayState, write_desired


def set_desired(home: HermesHome, profile: str, desired: str) -> GatewayState:
    """write_desired, plus a `desired.changed` event (from, to; the actor says by whom)
    when the value actually changed."""
    previous: dict[str, Any] = {}
    state = write_desired(home.profile_dir(profile), desired, previous)
    before = previous.get("desired_state")
    if before != desired:
        record(home.root, "desired.changed", profile=profile, data={"from": before, "to": desired})
    return state
