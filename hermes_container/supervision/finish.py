"""The decision behind `hermes _slot-finish <profile> <exit> <signal>`, which a slot's
`finish` script runs (the command, in hermes_container.commands.supervision, prints).

s6-supervise runs it after every death of the gateway (as the home owner: the script
drops privileges first), bounded by `timeout-finish`, so it imports little. It decides:

- the death was asked for (`s6-svc -d`, container stop, `gateway restart`): not a crash;
- exit 78 (configuration error): record `startup_failed` + reason, exit 125 (park);
- too many deaths in the window (HERMES_CRASH_LOOP_MAX in HERMES_CRASH_LOOP_WINDOW s):
  record `crashed`, exit 125 (park);
- anything else: record `crashed` and the exit, exit 0 so s6 restarts it.

Desired state is never touched here: a `docker stop` must not turn `running` into `stopped`.
"""

from __future__ import annotations

import os
import re
import signal as signals
import time
from pathlib import Path

from hermes_container.errors import EXIT_CONFIG, EXIT_PARK, HermesError
from hermes_container.events.append import record
from hermes_container.home import HermesHome
from hermes_container.state import read_state, write_observed
from hermes_container.supervision import history
from hermes_container.supervision.svstat import svstat
from hermes_container.tail import lines_backwards

PARK = EXIT_PARK
DEFAULT_LOOP_MAX = 5
DEFAULT_LOOP_WINDOW = 60.0
KILLED = 256  # s6 passes 256 as the exit code when the process died of a signal


def loop_limits(env: dict[str, str] | os._Environ[str] = os.environ) -> tuple[int, float]:
    """(max deaths, window seconds); bad values fall back to the defaults."""
    try:
        most = int(env.get("HERMES_CRASH_LOOP_MAX", DEFAULT_LOOP_MAX))
    except ValueError:
        most = DEFAULT_LOOP_MAX
    try:
        window = float(env.get("HERMES_CRASH_LOOP_WINDOW", DEFAULT_LOOP_WINDOW))
    except ValueError:
        window = DEFAULT_LOOP_WINDOW
    return (most if most >= 1 else DEFAULT_LOOP_MAX, window if window > 0 else DEFAULT_LOOP_WINDOW)


def describe_exit(exit_code: int, signum: int) -> tuple[int, str]:
    """(exit code to record, human reason); a signal death records 128+signal like a shell."""
    if exit_code == KILLED:
        try:
            name = signals.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        return 128 + signum, f"killed by {name}"
    return exit_code, f"exited with status {exit_code}"


# s6-log's `T` prefix: "2026-01-02 03:04:05.123456789  message"
_LOG_STAMP = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?\s+")


def last_log_line(log_file: Path, limit: int = 8192) -> str | None:
    """The gateway's last words from s6-log's `current` (timestamp stripped)."""
    for line in lines_backwards(log_file, limit):
        message = _LOG_STAMP.sub("", line).strip().removeprefix("hermes: error: ")
        if message and not message.startswith("hermes: gateway"):
            return message[:300]
    return None


def config_error_reason(home: HermesHome, profile: str, started_at: str | None) -> str:
    state = read_state(home.profile_dir(profile), warn=False)
    if state.gateway_state == "startup_failed" and state.exit_reason:
        return state.exit_reason  # the gateway said why itself
    line = last_log_line(home.gateway_log_dir(profile) / "current")
    return line or "configuration error (exit 78)"


def finish(
    home: HermesHome, profile: str, exit_code: int, signum: int, slot_dir: Path, now: float
) -> int:
    profile_dir = home.profile_dir(profile)
    recorded_code, how = describe_exit(exit_code, signum)
    wanted_up = svstat(str(slot_dir)).wanted_up
    died_of = signum if exit_code == KILLED else None
    if not wanted_up or history.take_restart_request(slot_dir, now):
        # Asked to go down (s6-svc -d/-t, container stop): not a crash. The gateway
        # records `stopped` itself on SIGTERM; cover the case it could not.
        record(
            home.root,
            "gateway.exited",
            profile=profile,
            expected=True,
            code=recorded_code,
            signal=died_of,
            how=how,
        )
        state = read_state(profile_dir, warn=False)
        if state.gateway_state in ("starting", "running", "stopping"):
            write_observed(profile_dir, gateway_state="stopped", pid=None, exit_code=recorded_code)
        return 0
    # The exit and what follows it (parked or restarted) go to the ledger together, in
    # one transaction: whole and in order, whatever else appends meanwhile.
    exited: dict[str, object] = {
        "expected": False,
        "code": recorded_code,
        "signal": died_of,
        "how": how,
    }

    hist = history.read_history(slot_dir)
    hist.restarts += 1
    hist.deaths.append(now)
    history.write_history(slot_dir, hist)

    if exit_code == EXIT_CONFIG:
        reason = config_error_reason(home, profile, None)
        write_observed(
            profile_dir,
            gateway_state="startup_failed",
            pid=None,
            exit_code=EXIT_CONFIG,
            exit_reason=reason,
        )
        history.park(slot_dir, f"startup_failed: {reason}")
        _tell(home, profile, exited, "gateway.parked", reason=f"startup_failed: {reason}")
        return PARK

    most, window = loop_limits()
    recent = hist.recent(window, now)
    if len(recent) >= most:
        reason = f"crash loop: {len(recent)} crashes in {window:g}s (last: {how})"
        write_observed(
            profile_dir,
            gateway_state="crashed",
            pid=None,
            exit_code=recorded_code,
            exit_reason=reason,
        )
        history.park(slot_dir, reason)
        _tell(home, profile, exited, "gateway.parked", reason=reason)
        return PARK

    _tell(home, profile, exited, "gateway.restarted", restarts=hist.restarts)
    write_observed(
        profile_dir,
        gateway_state="crashed",
        pid=None,
        exit_code=recorded_code,
        exit_reason=f"{how}; restarting",
    )
    return 0


def _tell(
    home: HermesHome, profile: str, exited: dict[str, object], then: str, **data: object
) -> None:
    """Record `gateway.exited` and the event that follows it in one append."""
    from hermes_container.events.append import write
    from hermes_container.events.ledger import make_pending

    try:
        events = [
            make_pending("gateway.exited", profile=profile, actor="supervisor", data=exited),
            make_pending(then, profile=profile, actor="supervisor", data=data),
        ]
    except HermesError:  # pragma: no cover - the kinds above are in the catalogue
        return
    write(home.root, events)


def settle(
    profile: str, exit_code: int, signum: int, slot_dir: Path | None = None
) -> tuple[int, str | None]:
    """(exit code for s6, message for stderr or None) of one death; `slot_dir` defaults
    to the current directory (s6 runs finish in the slot dir).

    Never lets an error turn into a restart storm: an error is a message and exit 0.
    """
    home = HermesHome.from_env()
    where = slot_dir or Path.cwd()
    try:
        result = finish(home, profile, exit_code, signum, where, time.time())
    except Exception as exc:  # finish must not fail: s6 would just restart anyway
        return 0, f"hermes _slot-finish {profile}: {type(exc).__name__}: {exc}"
    if result == PARK:
        return result, f"hermes: gateway {profile!r} parked: {history.parked_reason(where)}"
    return result, None
