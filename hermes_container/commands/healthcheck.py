"""`hermes healthcheck [--json] [--timeout S]`: the container HEALTHCHECK."""

from __future__ import annotations

import argparse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "healthcheck",
        help="exit 0 when the dashboard (if enabled) and every desired-running gateway answer",
    )
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    parser.add_argument(
        "--timeout", type=float, default=3.0, help="seconds per HTTP probe (default: 3)"
    )
    # It never logs and only reads.
    parser.set_defaults(handler=_run, setup_logging=False, as_root="keep")


def _run(args: argparse.Namespace) -> int:
    from hermes_container.errors import UsageError
    from hermes_container.healthcheck import healthcheck

    if not 0 < args.timeout < float("inf"):  # also refuses nan
        raise UsageError(f"--timeout must be a positive number of seconds, not {args.timeout:g}")
    results = healthcheck(timeout=args.timeout)
    healthy = all(r.ok for r in results)
    if args.json:
        import json

        body = {"healthy": healthy, "checks": [r.to_json() for r in results]}
        print(json.dumps(body, indent=2))
    else:
        for result in results:
            print(f"{'ok  ' if result.ok else 'FAIL'} {result.name}: {result.detail}")
        if not results:
            print("ok   nothing to check (dashboard disabled, no gateway desired running)")
        print("healthy" if healthy else "unhealthy")
    return 0 if healthy else 1  # what docker's HEALTHCHECK expects
