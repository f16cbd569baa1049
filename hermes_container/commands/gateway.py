"""`hermes gateway run|start|stop|restart|status [--all] [--json] [--timeout S]`,
`hermes gateway reload [--all] [--timeout S]`, and `hermes status` (= `gateway status --all`).

The commands and everything they print; the supervision package only returns values.
Inside a live tree: write the desired state, then `s6-svc -u|-d|-t`, then wait (bounded)
for ready/down and report. Outside one, record the desired state and say how to get a
tree (`hermes supervise`, or the container) instead of forking a gateway ourselves.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse  # only for annotations: `gateway status` runs without argparse (cli.py)
    from pathlib import Path
    from typing import Any

    from hermes_container.home import HermesHome
    from hermes_container.supervision.s6 import S6Manager
    from hermes_container.supervision.service_status import ServiceStatus

NO_TREE = "none (no supervised tree is running)"
REDIRECT_START_WAIT = 30.0
RELOAD_WAIT = 10.0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("gateway", help="run or control a profile's gateway")
    sub = parser.add_subparsers(dest="gateway_command", metavar="<action>", required=True)

    run = sub.add_parser("run", help="run the gateway in the foreground (what a slot runs)")
    run.add_argument("--supervised", action="store_true", help="started by an s6 slot")
    run.add_argument("--notify-fd", type=int, default=None, help="s6 readiness fd")
    run.add_argument("--replace", action="store_true", help="stop a running instance first")
    run.add_argument(
        "--no-supervise", action="store_true", help="never redirect to the supervision tree"
    )
    run.set_defaults(handler=_run)

    zygote = sub.add_parser(
        "zygote",
        help="serve pre-imported gateways to the slots (opt-in: HERMES_GATEWAY_ZYGOTE)",
    )
    zygote.add_argument(
        "--socket",
        default=None,
        help="its Unix socket (default: what HERMES_GATEWAY_ZYGOTE names, "
        "else $HERMES_HOME/run/gateway-zygote.sock)",
    )
    zygote.add_argument("--notify-fd", type=int, default=None, help="s6 readiness fd")
    zygote.set_defaults(handler=_zygote)

    for action, text in (
        ("start", "start the gateway (desired state: running)"),
        ("stop", "stop the gateway (desired state: stopped)"),
        ("restart", "restart the gateway"),
        ("status", "show the gateway's state"),
    ):
        cmd = sub.add_parser(action, help=text)
        cmd.add_argument("--all", action="store_true", help="every profile")
        cmd.add_argument("--json", action="store_true")
        if action != "status":
            cmd.add_argument("--timeout", type=float, default=15.0, help="seconds to wait")
        else:
            cmd.add_argument(
                "--at",
                metavar="TIME",
                help="as it was then, replayed from the event ledger (ISO time or 15m/2h ago)",
            )
        if action == "status":
            cmd.set_defaults(**status_defaults())
        else:
            cmd.set_defaults(handler=_control, action=action, setup_logging=True, as_root="drop")

    reload = sub.add_parser(
        "reload", help="make the running gateway re-read its settings (SIGHUP), no restart"
    )
    reload.add_argument("--all", action="store_true", help="every running gateway")
    reload.add_argument(
        "--timeout", type=float, default=RELOAD_WAIT, help="seconds to wait for its answer"
    )
    reload.set_defaults(handler=_reload)

    # `hermes status`: upstream's short form of `gateway status --all`, the same handler
    # with the same fast path (cli.COMMANDS maps the word to this module).
    status = subparsers.add_parser("status", help="every profile's gateway (gateway status --all)")
    status.add_argument("--json", action="store_true")
    status.add_argument(
        "--at",
        metavar="TIME",
        help="as it was then, replayed from the event ledger (ISO time or 15m/2h ago)",
    )
    status.set_defaults(**status_defaults(), all=True)


def status_defaults() -> dict[str, object]:
    """What a status parser sets besides its arguments; also cli.status_args's, the
    fast path that parses plain status commands without argparse. Status only reads and
    never logs: no logging setup (nor its import), and a root caller may keep root."""
    return {"handler": _control, "action": "status", "setup_logging": False, "as_root": "keep"}


def _run(args: argparse.Namespace) -> int:
    # A bare `gateway run` (old images' container command) inside a live tree is
    # redirected: the slot runs the gateway, we start it and wait for SIGTERM.
    if not args.supervised and not args.no_supervise and os.environ.get("HERMES_S6_SCANDIR"):
        from hermes_container.home import HermesHome
        from hermes_container.supervision import get_manager

        manager = get_manager(HermesHome.from_env())
        if manager is not None:
            return _run_in_slot(manager, args.profile)
    if args.supervised:
        import sys

        from hermes_container.commands.gateway_launcher import hand_off

        hand_off(sys.argv)  # execs a thin launcher when a gateway zygote answers
    from hermes_container.gateway.runner import run_command

    return run_command(args)


def _zygote(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hermes_container.commands.gateway_launcher import run_forked_gateway
    from hermes_container.errors import UsageError
    from hermes_container.gateway.readiness import resolve_notify_fd
    from hermes_container.gateway.zygote import run_zygote
    from hermes_container.gateway.zygote_wire import ENV_VAR, socket_path

    # --socket, else the path the launchers will try, else the default one.
    path = args.socket or socket_path(os.environ) or socket_path({**os.environ, ENV_VAR: "1"})
    if not path or not os.path.isabs(path):
        raise UsageError(f"--socket must be an absolute path, not {path!r}")
    return run_zygote(Path(path), resolve_notify_fd(args.notify_fd), run_forked_gateway)


def _run_in_slot(manager: S6Manager, profile: str) -> int:
    """Start `profile`'s slot, then stay in the foreground until SIGTERM/SIGINT.

    Old images ran `gateway run` as the container's command; under s6 the slot owns the
    gateway. The stop signal (e.g. `docker stop`) leaves the desired state alone: the
    next boot restores it.
    """
    import signal

    watched = (signal.SIGTERM, signal.SIGINT)
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    try:
        print(
            f"hermes: a supervised tree is running; starting gateway {profile!r} in its slot "
            "(use --no-supervise to run it here instead)",
            flush=True,
        )
        status = manager.start(profile, wait=REDIRECT_START_WAIT)
        print(render_status(status, manager.name), flush=True)
        signal.sigwait(watched)
        return 0
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, watched)


def _control(args: argparse.Namespace) -> int:
    from hermes_container.errors import UsageError
    from hermes_container.home import HermesHome
    from hermes_container.supervision import get_manager
    from hermes_container.supervision.scandir import resolve_scandir

    home = HermesHome.from_env()
    action: str = args.action
    timeout = getattr(args, "timeout", None)
    if timeout is not None and not 0 < timeout < float("inf"):  # also refuses nan
        raise UsageError(f"--timeout must be a positive number of seconds, not {timeout:g}")
    if action == "status" and args.at is not None:
        return _status_at(home, args)
    profiles = _profiles(args, home)
    if action == "status":
        return _status(home, profiles, args)
    home.ensure_layout()  # `default` is the home itself: it may not exist yet
    manager = get_manager(home)
    if manager is None:
        return _without_tree(home, action, profiles, resolve_scandir(home))
    return _act(manager, action, profiles, args, timeout or 15.0)


def _reload(args: argparse.Namespace) -> int:
    """`gateway reload`: SIGHUP (through s6 when supervised), then the gateway's answer.

    With --all, gateways that are not running are skipped (a start reads the files
    anyway); any reload not sent, refused or unanswered makes the exit non-zero.
    """
    from hermes_container.errors import EXIT_FAILURE, HermesError, UsageError
    from hermes_container.home import HermesHome
    from hermes_container.supervision import live_scandir
    from hermes_container.supervision.reload import (
        reload_gateway,
        reloads_answered,
        wait_for_answer,
    )
    from hermes_container.supervision.service_status import gateway_status

    timeout: float = args.timeout
    if not 0 < timeout < float("inf"):
        raise UsageError(f"--timeout must be a positive number of seconds, not {timeout:g}")
    home = HermesHome.from_env()
    profiles = _profiles(args, home)
    if args.all:
        scandir = live_scandir(home)
        running = [p for p in profiles if gateway_status(home, scandir, p).up]
        for profile in profiles:
            if profile not in running:
                print(f"gateway {profile!r} is not running: skipped")
        profiles = running
    sent: dict[str, int] = {}
    failed = False
    for profile in profiles:
        before = reloads_answered(home, profile)
        reason = reload_gateway(home, profile)
        if reason is None:
            sent[profile] = before
        elif not args.all:
            raise HermesError(f"reload not sent: {reason}")
        else:
            print(f"gateway {profile!r}: reload not sent: {reason}")
            failed = True
    deadline = time.monotonic() + timeout
    for profile, before in sent.items():
        state = wait_for_answer(home, profile, before, max(0.0, deadline - time.monotonic()))
        name = f"gateway {profile!r}"
        if state is None:
            print(f"{name}: reload sent, no answer within {timeout:g}s; see `hermes logs`")
            failed = True
        elif state.config_rejected:
            print(f"{name}: config rejected: {state.config_rejected} (the old settings serve)")
            failed = True
        elif state.restart_needed:
            print(f"Reloaded {name}; restart needed: {state.restart_needed}")
        else:
            print(f"Reloaded {name}: new requests use the new settings")
    return EXIT_FAILURE if failed else 0


def _profiles(args: argparse.Namespace, home: HermesHome) -> list[str]:
    from hermes_container.profiles import list_profiles, require_profile

    if args.all:
        return list_profiles(home)
    require_profile(home, args.profile)
    return [args.profile]


def _status(home: HermesHome, profiles: list[str], args: argparse.Namespace) -> int:
    """`gateway status`: reads only; never loads the S6Manager (it builds slots)."""
    from hermes_container.supervision import live_scandir
    from hermes_container.supervision.service_status import MANAGER_NAME, gateway_status

    scandir = live_scandir(home)
    statuses = [gateway_status(home, scandir, p) for p in profiles]
    _emit(statuses, NO_TREE if scandir is None else MANAGER_NAME, args)
    if not args.json:
        # The container's, not one profile's: what the last apply of the declarative
        # profiles file came to, read from a small JSON file (no YAML on this path).
        from hermes_container.declared_result import status_line

        line = status_line(home)
        if line is not None:
            print(line)
    return 0


def _status_at(home: HermesHome, args: argparse.Namespace) -> int:
    """`gateway status --at TIME`: the ledger's answer (events.replay), no live reads."""
    import os
    import time

    from hermes_container.events.append import open_ledger
    from hermes_container.events.replay import project
    from hermes_container.names import validate_profile_name
    from hermes_container.supervision.service_status import ServiceStatus
    from hermes_container.timeutil import parse_when

    at = parse_when(args.at, "--at")
    if not args.all:
        validate_profile_name(args.profile)
    if os.geteuid() == 0:  # the ledger is the owner's file: read it as the owner
        from hermes_container.privileges import drop_to_home_owner

        drop_to_home_owner(home.root)
    ledger = open_ledger(home.root)
    states = project(ledger.iterate(0, until=at), at)
    names = sorted(states) if args.all else [args.profile]
    statuses = []
    for name in names:
        fields = states[name].to_json() if name in states else {"profile": name}
        statuses.append(
            ServiceStatus(
                **{
                    "registered": False,
                    "up": False,
                    "ready": False,
                    "pid": None,
                    "uptime_s": None,
                    "restarts": None,
                    "port": None,
                    "desired_state": None,
                    "gateway_state": None,
                    **fields,
                }
            )
        )
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
    _emit(statuses, f"event ledger replay at {stamp}", args)
    return 0


def _act(
    manager: S6Manager, action: str, profiles: list[str], args: argparse.Namespace, timeout: float
) -> int:
    from hermes_container.errors import EXIT_FAILURE
    from hermes_container.supervision.control import act, reached

    results = act(manager, action, profiles, timeout)
    if args.json:
        _emit(results, manager.name, args)
    else:
        for status in results:
            print(_outcome(action, status, timeout))
    return 0 if all(reached(action, s) for s in results) else EXIT_FAILURE


def _without_tree(home: HermesHome, action: str, profiles: list[str], scandir: Path) -> int:
    from hermes_container.errors import HermesError
    from hermes_container.events.desired import set_desired

    desired = "stopped" if action == "stop" else "running"
    for profile in profiles:
        set_desired(home, profile, desired)
    names = ", ".join(profiles)
    if action == "stop":
        print(f"Desired state of {names}: stopped (no supervised tree is running)")
        return 0
    raise HermesError(
        f"no supervised tree is running (no live s6-svscan on {scandir}); desired state of "
        f"{names} recorded as running: start the tree with `hermes supervise` (or run the "
        "container) and it will come up"
    )


# -- what the user reads ---------------------------------------------------------


def _emit(statuses: list[ServiceStatus], manager: str, args: argparse.Namespace) -> None:
    if args.json:
        import json  # only for --json: the plain status path otherwise does without it

        items = [{**s.to_json(), "manager": manager} for s in statuses]
        print(json.dumps(items if args.all else items[0], indent=2))
    else:
        print("\n\n".join(render_status(s, manager) for s in statuses))


def describe(status: ServiceStatus) -> str:
    if status.up:
        return "running (ready)" if status.ready else "starting (not ready yet)"
    if status.parked:
        return f"parked ({status.gateway_state or 'failed'})"
    if not status.registered:
        return "not registered"
    return "down"


def render_status(status: ServiceStatus, manager: str) -> str:
    from hermes_container.timeutil import format_duration

    def show(value: object) -> str:
        return "-" if value is None else str(value)

    rows = [
        ("Profile", status.profile),
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
    lines = [f"{key + ':':<10} {value}" for key, value in rows]
    # Whole sentences, not rows: `config rejected: <reason>` is the documented text.
    if status.config_rejected:
        lines.append(f"config rejected: {status.config_rejected}")
    if status.restart_needed:
        lines.append(f"restart needed: {status.restart_needed}")
    # Not aligned with the rows around it: upstream documents this line as exactly
    # `Manager: s6 (container supervisor)`, and scripts grep for that text.
    lines.insert(1, f"Manager: {manager}")
    return "\n".join(lines)


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
