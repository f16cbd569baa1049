"""`hermes dashboard [--host H] [--port P]`: the web dashboard (imports FastAPI lazily)."""

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


def _run(args: argparse.Namespace) -> int:
    from hermes_container.dashboard.server import serve
    from hermes_container.errors import UsageError

    if args.port is not None and not 1 <= args.port <= 65535:
        raise UsageError(f"--port must be a port number (1-65535), not {args.port}")
    return serve(host=args.host, port=args.port)
