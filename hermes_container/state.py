"""`gateway_state.json`: a profile's desired state (user intent) and observed state.

Desired fields are written only by user intent (`gateway start/stop`, dashboard
actions, `profile create --start`); observed fields only by the gateway and its
finish script. Each writer holds a per-profile flock for its read-modify-write and
replaces the file atomically, so neither side can clobber the other's fields and a
reader never sees a half-written file. A missing or corrupt file reads as unknown.
"""

from __future__ import annotations

from hermes_container.fsutil import atomic_write_json, locked
from hermes_container.home import DEFAULT_PROFILE, STATE_FILE
from hermes_container.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, Literal

    DesiredState = Literal["running", "stopped"]

DESIRED_STATES: tuple[str, ...] = ("running", "stopped")
OBSERVED_STATES: tuple[str, ...] = (
    "starting",
    "running",
    "stopping",
    "stopped",
    "crashed",
    "startup_failed",
)
DESIRED_FIELDS = frozenset({"desired_state", "desired_updated_at"})
LOCK_NAME = ".gateway_state.lock"


# The keys of the file this version knows, in the order they are written.
FILE_KEYS: tuple[str, ...] = (
    "desired_state",
    "desired_updated_at",
    "gateway_state",
    "pid",
    "started_at",
    "updated_at",
    "exit_code",
    "exit_reason",
    "port",
    # Live reload (SIGHUP): why the last reload was refused (the settings in force are
    # older than the files), and which change waits for a restart (the listener's
    # port/host). Both cleared by a reload that applies cleanly, and at each start.
    "config_rejected",
    "restart_needed",
    # Reloads this gateway process has answered (applied or rejected): 0 at its start,
    # so `gateway reload` can tell its own answer from an older one.
    "reloads",
)
_KNOWN_KEYS = frozenset(FILE_KEYS)
# Everything but the desired state is what the gateway and its finish script observe.
OBSERVED_FIELDS = _KNOWN_KEYS - DESIRED_FIELDS


class GatewayState(Record):
    __slots__ = (*FILE_KEYS, "extra", "problem")

    def __init__(
        self,
        desired_state: str | None = None,
        desired_updated_at: str | None = None,
        gateway_state: str | None = None,
        pid: int | None = None,
        started_at: str | None = None,
        updated_at: str | None = None,
        exit_code: int | None = None,
        exit_reason: str | None = None,
        port: int | None = None,
        config_rejected: str | None = None,
        restart_needed: str | None = None,
        reloads: int | None = None,
        extra: dict[str, Any] | None = None,
        problem: str | None = None,
    ) -> None:
        self.desired_state = desired_state
        self.desired_updated_at = desired_updated_at
        self.gateway_state = gateway_state
        self.pid = pid
        self.started_at = started_at
        self.updated_at = updated_at
        self.exit_code = exit_code
        self.exit_reason = exit_reason
        self.port = port
        self.config_rejected = config_rejected
        self.restart_needed = restart_needed
        self.reloads = reloads
        # Keys written by a newer version are kept verbatim on rewrite.
        self.extra: dict[str, Any] = {} if extra is None else extra
        # Why the file could not be read ("missing", "corrupt: ..."), None when it was fine.
        self.problem = problem

    @property
    def known(self) -> bool:
        return self.problem is None

    def to_json(self) -> dict[str, Any]:
        return {**self.extra, **{key: getattr(self, key) for key in FILE_KEYS}}


def _validate(raw: dict[str, Any]) -> GatewayState:
    state = GatewayState(extra={k: v for k, v in raw.items() if k not in _KNOWN_KEYS})
    desired = raw.get("desired_state")
    if desired is not None and desired not in DESIRED_STATES:
        raise ValueError(f"desired_state {desired!r} is not one of {DESIRED_STATES}")
    observed = raw.get("gateway_state")
    if observed is not None and observed not in OBSERVED_STATES:
        raise ValueError(f"gateway_state {observed!r} is not one of {OBSERVED_STATES}")
    for key in ("pid", "exit_code", "port", "reloads"):
        value = raw.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise ValueError(f"{key} must be an integer")
    for key in (
        "desired_updated_at",
        "started_at",
        "updated_at",
        "exit_reason",
        "config_rejected",
        "restart_needed",
    ):
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{key} must be a string")
    for key in _KNOWN_KEYS:
        setattr(state, key, raw.get(key))
    return state


def read_state(profile_dir: Path, *, warn: bool = True) -> GatewayState:
    """Read a profile's state file; missing or corrupt yields an empty, unknown state."""
    path = profile_dir / STATE_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return GatewayState(problem="missing")
    except OSError as exc:
        return _unknown(path, f"unreadable: {exc.strerror}", warn)
    import json  # only now: a profile that never ran has no file, and `gateway status` no json

    try:
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("top level is not an object")
        return _validate(raw)
    except ValueError as exc:
        return _unknown(path, f"corrupt: {exc}", warn)


def desired_or_default(profile: str, state: GatewayState) -> str | None:
    """What `profile` should be doing: its recorded desired state; with none recorded,
    `running` for the `default` profile (first boot, or an upgrade from an image without
    state files) and None (no intent) for any other. Reads only: the boot reconciler
    writes the default down itself."""
    if state.desired_state is not None:
        return state.desired_state
    return "running" if profile == DEFAULT_PROFILE else None


def _unknown(path: Path, problem: str, warn: bool) -> GatewayState:
    if warn:
        import logging  # lazy: the status path never warns, and logging costs ~15 ms

        logging.getLogger("hermes.state").warning(
            "%s is %s; treating the state as unknown", path, problem
        )
    return GatewayState(problem=problem)


def _update(
    profile_dir: Path, changes: dict[str, Any], previous: dict[str, Any] | None = None
) -> GatewayState:
    """Apply `changes` under the state lock; `previous` receives the values replaced."""
    with locked(profile_dir / LOCK_NAME):
        state = read_state(profile_dir)
        for key, value in changes.items():
            if previous is not None:
                previous[key] = getattr(state, key)
            setattr(state, key, value)
        state.problem = None
        atomic_write_json(profile_dir / STATE_FILE, state.to_json())
        return state


def write_desired(
    profile_dir: Path, desired: str, previous: dict[str, Any] | None = None
) -> GatewayState:
    """Record user intent; observed fields are left exactly as they are. `previous`
    receives the replaced values (its "desired_state" says whether this changed it)."""
    if desired not in DESIRED_STATES:
        raise ValueError(f"desired state must be one of {DESIRED_STATES}, not {desired!r}")
    from hermes_container.timeutil import utc_now_iso  # writers only: off the status path

    changes = {"desired_state": desired, "desired_updated_at": utc_now_iso()}
    return _update(profile_dir, changes, previous)


def write_observed(profile_dir: Path, **observed: Any) -> GatewayState:
    """Record what the gateway is doing; desired fields are never touched here."""
    unknown = set(observed) - OBSERVED_FIELDS
    if unknown:
        raise ValueError(f"not observed fields: {sorted(unknown)}")
    gateway_state = observed.get("gateway_state")
    if gateway_state is not None and gateway_state not in OBSERVED_STATES:
        raise ValueError(f"gateway_state must be one of {OBSERVED_STATES}")
    from hermes_container.timeutil import utc_now_iso

    observed.setdefault("updated_at", utc_now_iso())
    return _update(profile_dir, observed)
