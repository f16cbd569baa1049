"""`hermes ingress run [--host H] [--port P]`: every profile behind one OpenAI-compatible
port; `hermes ingress key [--rotate] [--json]`: the key that opens every profile."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("ingress", help="one port in front of every profile")
    sub = parser.add_subparsers(dest="ingress_command", metavar="<subcommand>", required=True)
    run = sub.add_parser("run", help="serve the ingress until stopped")
    run.add_argument(
        "--host", default=None, help="bind address (default: $HERMES_INGRESS_HOST or 127.0.0.1)"
    )
    run.add_argument(
        "--port", type=int, default=None, help="port (default: $HERMES_INGRESS_PORT or 8640)"
    )
    run.set_defaults(handler=_run)
    key = sub.add_parser("key", help="print the ingress key (generated on first use)")
    key.add_argument("--rotate", action="store_true", help="replace it with a new one")
    key.add_argument("--json", action="store_true", help="machine-readable output")
    key.set_defaults(handler=_key, setup_logging=False)


def _run(args: argparse.Namespace) -> int:
    import os

    from hermes_container.config import env_port, is_port
    from hermes_container.errors import UsageError
    from hermes_container.home import HermesHome
    from hermes_container.ingress.server import DEFAULT_HOST, DEFAULT_PORT, serve

    if args.port is not None and not is_port(args.port):
        raise UsageError(f"--port must be a port number (1-65535), not {args.port}")
    port = args.port if args.port is not None else env_port("HERMES_INGRESS_PORT", DEFAULT_PORT)
    host = args.host or os.environ.get("HERMES_INGRESS_HOST", "").strip() or DEFAULT_HOST
    return serve(HermesHome.from_env(), host, port)


def _key(args: argparse.Namespace) -> int:
    import json

    from hermes_container.home import HermesHome
    from hermes_container.ingress.keys import KeySource

    keys = KeySource(HermesHome.from_env())
    if args.rotate:
        key = keys.rotate()
    else:
        keys.ensure()
        key = keys.current().decode()
    if args.json:
        where = str(keys.path) if keys.fixed is None else None
        print(
            json.dumps({"key": key, "source": keys.origin, "file": where, "rotated": args.rotate})
        )
    else:
        print(key)
    return 0
