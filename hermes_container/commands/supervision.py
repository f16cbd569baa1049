"""`hermes reconcile`, `hermes supervise`, `hermes logs`, and the hidden `_slot-finish`."""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from pathlib import Path
    from typing import Any


def register(subparsers: Any) -> None:
    reconcile = subparsers.add_parser(
        "reconcile", help="register every profile's slot and restore desired states (boot)"
    )
    # At boot 50 gateways start the moment the last `u` is sent: the interpreter's
    # teardown after that (~14 ms of CPU) competes with them for 300 ms of wall time
    # (bench_reconcile, A/B). Everything it wrote is committed by then.
    reconcile.set_defaults(handler=_reconcile, exit_without_teardown=True)

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
    finish.set_defaults(**finish_defaults())


def finish_defaults() -> dict[str, Any]:
    """What `_slot-finish` sets besides its arguments; cli.finish_args builds the same
    namespace without argparse. It logs nothing of its own (a warning still reaches
    stderr through logging's last resort), so logging is not set up."""
    return {"handler": _slot_finish, "setup_logging": False}


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

    return supervise(
        HermesHome.from_env(), dashboard=args.dashboard, say=lambda text: print(text, flush=True)
    )


def _logs(args: argparse.Namespace) -> int:
    from hermes_container.errors import UsageError
    from hermes_container.home import HermesHome
    from hermes_container.profiles import require_profile
    from hermes_container.supervision.logs import recent_lines

    if args.lines < 0:
        raise UsageError(f"--lines must be 0 or more, not {args.lines}")
    home = HermesHome.from_env()
    profile = args.logs_profile or args.profile
    require_profile(home, profile)
    log_dir = home.gateway_log_dir(profile)
    for line in recent_lines(log_dir, lines=args.lines, following=args.follow):
        print(line)
    sys.stdout.flush()
    if args.follow:
        print_followed(log_dir / "current")
    return 0


def print_followed(current: Path, stop_after: float | None = None) -> None:
    """Print what is appended to `current` as it comes (each piece flushed at once)."""
    from hermes_container.supervision.logs import follow

    for text in follow(current, stop_after):
        sys.stdout.write(text)
        sys.stdout.flush()


def _slot_finish(args: argparse.Namespace) -> int:
    return slot_finish(args.slot_profile, args.exit_code, args.signal)


def slot_finish(profile: str, exit_code: str, signum: str, slot_dir: str | None = None) -> int:
    """`_slot-finish`: s6's exit code and signal as given to the finish script; what the
    decision says (hermes_container.supervision.finish) goes to stderr. Never fails: a
    finish script that errors would only make s6 restart the gateway anyway."""
    try:
        code = int(exit_code)
        sig = int(signum or 0)
    except ValueError:
        print(f"hermes _slot-finish: bad exit/signal {exit_code!r} {signum!r}", file=sys.stderr)
        return 0
    from pathlib import Path

    from hermes_container.supervision.finish import settle

    result, message = settle(profile, code, sig, Path(slot_dir) if slot_dir else None)
    if message is not None:
        print(message, file=sys.stderr)
    return result
