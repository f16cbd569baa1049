"""`hermes dashboard [--host H] [--port P]`: the web dashboard (imports FastAPI lazily),
and the hidden `_dashboard-finish` its supervised slot's finish script runs."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("dashboard", help="serve the web dashboard")
    parser.add_argument(
        "--host", default=None, help="bind address (default: $HERMES_DASHBOARD_HOST or 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, default=None, help="port (default: $HERMES_DASHBOARD_PORT or 9119)"
    )
    parser.set_defaults(handler=_run)

    # Hidden (no help). The one finish decision for the dashboard's slot, in the image
    # (s6-rc's dashboard/finish) and under `hermes supervise --dashboard` alike. It
    # writes nothing, so root need not drop, and it never logs.
    finish = subparsers.add_parser("_dashboard-finish")
    finish.add_argument("exit_code", type=int, help="the dashboard's exit code, from s6")
    finish.set_defaults(handler=_finish, as_root="keep", setup_logging=False)


def _run(args: argparse.Namespace) -> int:
    from hermes_container.config import is_port
    from hermes_container.dashboard.serve import serve
    from hermes_container.errors import UsageError

    if args.port is not None and not is_port(args.port):
        raise UsageError(f"--port must be a port number (1-65535), not {args.port}")
    return serve(host=args.host, port=args.port)


def _finish(args: argparse.Namespace) -> int:
    """Park after a configuration error (exit 78): a restart cannot fix it, and a restart
    loop would bury the message that names the fix. Any other exit is restarted."""
    from hermes_container.errors import EXIT_CONFIG, EXIT_PARK

    if args.exit_code != EXIT_CONFIG:
        return 0
    # On stdout, like the dashboard's own message just before it: one stream, in order.
    print(
        f"dashboard: configuration error (exit {EXIT_CONFIG}, see the message above); "
        "parked until the configuration is fixed and the container (or `hermes "
        "supervise`) restarted",
        flush=True,
    )
    return EXIT_PARK
