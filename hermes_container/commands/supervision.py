"""`hermes reconcile`, `hermes supervise`, `hermes logs`, and the hidden `_slot-finish`."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    reconcile = subparsers.add_parser(
        "reconcile", help="register every profile's slot and restore desired states (boot)"
    )
    reconcile.set_defaults(handler=_reconcile)

    supervise = subparsers.add_parser(
        "supervise", help="run the supervision tree on this host (no container needed)"
    )
    supervise.add_argument("--dashboard", action="store_true", help="also run the dashboard")
    # It drops to the home owner itself, and says so.
    supervise.set_defaults(handler=_supervise, as_root="self")

    logs = subparsers.add_parser("logs", help="show a gateway's logs")
    # Own dest: a subparser default would overwrite the global -p.
    logs.add_argument("-p", "--profile", dest="logs_profile", default=None, help="profile")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("-n", "--lines", type=int, default=50, help="lines to show (default 50)")
    logs.set_defaults(handler=_logs, as_root="keep")  # it only reads

    # Hidden (no help): what a slot's finish script runs.
    finish = subparsers.add_parser("_slot-finish")
    finish.add_argument("slot_profile")
    finish.add_argument("exit_code")
    finish.add_argument("signal", nargs="?", default="0")
    finish.set_defaults(handler=_slot_finish)


def _reconcile(args: argparse.Namespace) -> int:
    from hermes_container.home import HermesHome
    from hermes_container.reconcile import reconcile

    for record in reconcile(HermesHome.from_env()):
        print(
            f"{record.profile}: {record.action} (prior state {record.prior_state or 'none'}, "
            f"prior exit {record.prior_exit})"
        )
    return 0


def _supervise(args: argparse.Namespace) -> int:
    from hermes_container.home import HermesHome
    from hermes_container.supervision.host import supervise

    return supervise(HermesHome.from_env(), dashboard=args.dashboard)


def _logs(args: argparse.Namespace) -> int:
    from hermes_container.errors import UsageError
    from hermes_container.home import HermesHome
    from hermes_container.profiles import require_profile
    from hermes_container.supervision.logs import show_logs

    if args.lines < 0:
        raise UsageError(f"--lines must be 0 or more, not {args.lines}")
    home = HermesHome.from_env()
    profile = args.logs_profile or args.profile
    require_profile(home, profile)
    return show_logs(home.gateway_log_dir(profile), lines=args.lines, follow_it=args.follow)


def _slot_finish(args: argparse.Namespace) -> int:
    from hermes_container.supervision.finish import main

    return main(args.slot_profile, args.exit_code, args.signal)
