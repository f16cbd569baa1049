"""`hermes gateway run|start|stop|restart|status`."""

from __future__ import annotations

import argparse
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


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
        # status only reads and never logs: skip the logging setup (and its import), and
        # a root caller may keep root for it
        reads = action == "status"
        cmd.set_defaults(
            handler=_control,
            action=action,
            setup_logging=not reads,
            as_root="keep" if reads else "drop",
        )


def _run(args: argparse.Namespace) -> int:
    # A bare `gateway run` (old images' container command) inside a live tree is
    # redirected: the slot runs the gateway, we start it and wait for SIGTERM.
    if not args.supervised and not args.no_supervise and os.environ.get("HERMES_S6_SCANDIR"):
        from hermes_container.supervision.redirect import redirect_to_slot

        redirected = redirect_to_slot(args.profile)
        if redirected is not None:
            return redirected
    from hermes_container.gateway.runner import run_command

    return run_command(args)


def _control(args: argparse.Namespace) -> int:
    from hermes_container.supervision.commands import control_command

    return control_command(args)
