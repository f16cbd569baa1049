"""`hermes healthcheck [--liveness | --readiness] [--json] [--timeout S]`.

Without a flag: the container HEALTHCHECK. `--liveness` and `--readiness` are the
Kubernetes probes (deploy/kubernetes/): see hermes_container.healthcheck for what each
one checks and why they differ.
"""

from __future__ import annotations

import argparse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# What the last line says, for each probe: (passed, failed).
VERDICTS = {
    "health": ("healthy", "unhealthy"),
    "liveness": ("live", "not live"),
    "readiness": ("ready", "not ready"),
}

# Why a probe can have nothing to check (liveness always checks the supervision tree).
NOTHING = {
    "health": "dashboard disabled, no gateway desired running",
    "liveness": "",
    "readiness": "no ingress, no gateway desired running",
}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "healthcheck",
        help="exit 0 when the dashboard (if enabled) and every desired-running gateway answer",
        description="Without a flag: the image's HEALTHCHECK (the dashboard if enabled, the "
        "ingress, every desired-running gateway). --liveness and --readiness are the "
        "Kubernetes probes.",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--liveness",
        dest="mode",
        action="store_const",
        const="liveness",
        help="the supervision tree runs and the dashboard (if enabled) answers; "
        "no profile's gateway can fail it",
    )
    which.add_argument(
        "--readiness",
        dest="mode",
        action="store_const",
        const="readiness",
        help="every desired-running gateway is ready and answers, and so does the ingress",
    )
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    parser.add_argument(
        "--timeout", type=float, default=3.0, help="seconds per HTTP probe (default: 3)"
    )
    # It never logs and only reads.
    parser.set_defaults(handler=_run, mode="health", setup_logging=False, as_root="keep")


def _run(args: argparse.Namespace) -> int:
    from hermes_container.errors import UsageError
    from hermes_container.healthcheck import healthcheck

    if not 0 < args.timeout < float("inf"):  # also refuses nan
        raise UsageError(f"--timeout must be a positive number of seconds, not {args.timeout:g}")
    results = healthcheck(timeout=args.timeout, mode=args.mode)
    passed = all(r.ok for r in results)
    if args.json:
        import json

        body = {
            "probe": args.mode,
            "healthy": passed,
            "checks": [r.to_json() for r in results],
        }
        print(json.dumps(body, indent=2))
    else:
        for result in results:
            print(f"{'ok  ' if result.ok else 'FAIL'} {result.name}: {result.detail}")
        if not results:
            print(f"ok   nothing to check ({NOTHING[args.mode]})")
        print(VERDICTS[args.mode][0 if passed else 1])
    return 0 if passed else 1  # what docker's HEALTHCHECK and Kubernetes expect
