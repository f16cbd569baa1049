"""`hermes gateway start|stop|restart|status [--all] [--json] [--timeout S]`.

Inside a live tree: write the desired state, then `s6-svc -u|-d|-t`, then wait (bounded)
for ready/down and report. Outside one, record the desired state and say how to get a
tree (`hermes supervise`, or the container) instead of forking a gateway ourselves.
"""

from __future__ import annotations

import json

from hermes_container.errors import EXIT_FAILURE, HermesError, UsageError
from hermes_container.home import HermesHome
from hermes_container.supervision.service_status import ServiceStatus
from hermes_container.timeutil import split_duration

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from pathlib import Path

    from hermes_container.supervision.s6 import S6Manager

NO_TREE = "none (no supervised tree is running)"


def _profiles(args: argparse.Namespace, home: HermesHome) -> list[str]:
    from hermes_container.profiles import list_profiles, require_profile

    if args.all:
        return list_profiles(home)
    require_profile(home, args.profile)
    return [args.profile]


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    days, hours, minutes, secs = split_duration(seconds)
    parts = [f"{days}d"] if days else []
    if hours or days:
        parts.append(f"{hours}h")
    if minutes or hours or days:
        parts.append(f"{minutes}m")
    parts.append(f"{secs}s")
    return " ".join(parts)


def describe(status: ServiceStatus) -> str:
    if status.up:
        return "running (ready)" if status.ready else "starting (not ready yet)"
    if status.parked:
        return f"parked ({status.gateway_state or 'failed'})"
    if not status.registered:
        return "not registered"
    return "down"


def render_status(status: ServiceStatus, manager: str) -> str:
    def show(value: object) -> str:
        return "-" if value is None else str(value)

    rows = [
        ("Profile", status.profile),
        ("Manager", manager),
        ("State", describe(status)),
        ("PID", show(status.pid)),
        ("Uptime", format_duration(status.uptime_s)),
        ("Ready", "yes" if status.ready else "no"),
        ("Restarts", show(status.restarts)),
        ("Port", show(status.port)),
        ("Desired", show(status.desired_state)),
        ("Gateway", show(status.gateway_state)),
    ]
    if status.exit_reason and not status.up:
        rows.append(("Reason", status.exit_reason))
    return "\n".join(f"{key + ':':<10} {value}" for key, value in rows)


def _status(home: HermesHome, profiles: list[str], args: argparse.Namespace) -> int:
    """`gateway status`: reads only; never loads the S6Manager (it builds slots)."""
    from hermes_container.supervision import live_scandir
    from hermes_container.supervision.service_status import MANAGER_NAME, gateway_status

    scandir = live_scandir(home)
    statuses = [gateway_status(home, scandir, p) for p in profiles]
    _emit(statuses, NO_TREE if scandir is None else MANAGER_NAME, args)
    return 0


def _emit(statuses: list[ServiceStatus], manager: str, args: argparse.Namespace) -> None:
    if args.json:
        items = [{**s.to_json(), "manager": manager} for s in statuses]
        print(json.dumps(items if args.all else items[0], indent=2))
    else:
        print("\n\n".join(render_status(s, manager) for s in statuses))


def control_command(args: argparse.Namespace) -> int:
    from hermes_container.supervision import get_manager
    from hermes_container.supervision.scandir import resolve_scandir

    home = HermesHome.from_env()
    action: str = args.action
    timeout = getattr(args, "timeout", None)
    if timeout is not None and not 0 < timeout < float("inf"):  # also refuses nan
        raise UsageError(f"--timeout must be a positive number of seconds, not {timeout:g}")
    profiles = _profiles(args, home)
    if action == "status":
        return _status(home, profiles, args)
    home.ensure_layout()  # `default` is the home itself: it may not exist yet
    manager = get_manager(home)
    if manager is None:
        return _without_tree(home, action, profiles, args, resolve_scandir(home))
    return _act(manager, action, profiles, args, timeout or 15.0)


def _act(
    manager: S6Manager,
    action: str,
    profiles: list[str],
    args: argparse.Namespace,
    timeout: float,
) -> int:
    import time

    # Issue every command first, then wait for all within one deadline.
    old_pids: dict[str, int | None] = {}
    for profile in profiles:
        if action == "start":
            manager.start(profile)
        elif action == "stop":
            manager.stop(profile)
        else:
            before = manager.status(profile)
            old_pids[profile] = before.pid
            manager.restart(profile)
    deadline = time.monotonic() + timeout
    results = []
    for profile in profiles:
        remaining = max(0.0, deadline - time.monotonic())
        if action == "stop":
            results.append(manager.wait_down(profile, remaining))
        else:
            results.append(manager.wait_ready(profile, remaining, old_pid=old_pids.get(profile)))
    if args.json:
        _emit(results, manager.name, args)
    failed = [s for s in results if not _reached(action, s)]
    if not args.json:
        for status in results:
            print(_outcome(action, status, timeout))
    return EXIT_FAILURE if failed else 0


def _reached(action: str, status: ServiceStatus) -> bool:
    return (not status.up) if action == "stop" else (status.up and status.ready)


def _outcome(action: str, status: ServiceStatus, timeout: float) -> str:
    name = f"gateway {status.profile!r}"
    if action == "stop":
        if not status.up:
            return f"Stopped {name} (desired: stopped)"
        return f"{name} is still up after {timeout:g}s (pid {status.pid})"
    if status.up and status.ready:
        verb = "Restarted" if action == "restart" else "Started"
        return f"{verb} {name}: pid {status.pid}, port {status.port}, ready"
    if status.parked:
        return (
            f"{name} failed and is parked: {status.exit_reason or status.gateway_state}; "
            "fix it, then `hermes gateway start`"
        )
    return f"{name} not ready after {timeout:g}s (state: {describe(status)}); see `hermes logs`"


def _without_tree(
    home: HermesHome, action: str, profiles: list[str], args: argparse.Namespace, scandir: Path
) -> int:
    from hermes_container.state import write_desired

    desired = "stopped" if action == "stop" else "running"
    for profile in profiles:
        write_desired(home.profile_dir(profile), desired)
    names = ", ".join(profiles)
    if action == "stop":
        print(f"Desired state of {names}: stopped (no supervised tree is running)")
        return 0
    raise HermesError(
        f"no supervised tree is running (no live s6-svscan on {scandir}); desired state of "
        f"{names} recorded as running: start the tree with `hermes supervise` (or run the "
        "container) and it will come up"
    )
