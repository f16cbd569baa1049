"""`hermes events [export] [--follow] [--since ID|TIME] [--profile P] [--kind K] [--json]`:
read the container's event ledger."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable
from typing import Any

FOLLOW_POLL_SECONDS = 0.5


def parse_since(text: str, now: float | None = None) -> tuple[int | None, float | None]:
    """--since: an event id (`1234`), or a moment (timeutil.parse_when): (after_id,
    since_time), one of them None."""
    from hermes_container.timeutil import parse_when

    value = text.strip()
    if value.isdigit():
        return max(0, int(value) - 1), None  # "since 5" includes event 5
    return None, parse_when(value, "--since", now)


def _kind_exists(kind: str) -> bool:
    from hermes_container.events.model import BOARD_PREFIX, JOB_PREFIX, KINDS, known_kind

    if kind.endswith("."):
        return kind in (BOARD_PREFIX, JOB_PREFIX) or any(k.startswith(kind) for k in KINDS)
    return known_kind(kind)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("events", help="the container's event ledger")
    parser.add_argument(
        "action", nargs="?", choices=("export",), help="export: JSON lines on stdout"
    )
    parser.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    parser.add_argument("--since", metavar="ID|TIME", help="event id, ISO time, or 15m/2h/1d ago")
    parser.add_argument("--profile", help="only this profile's events")
    parser.add_argument("--kind", help="only this kind (a trailing '.' matches a prefix)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many (not with -f)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.set_defaults(handler=_events)


def _line(event: Any) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(event.at))
    data = " ".join(f"{k}={v}" for k, v in sorted(event.data.items()) if v is not None)
    who = f" [{event.profile}]" if event.profile else ""
    return f"{event.id} {stamp} {event.kind}{who} by {event.actor} {data}".rstrip()


def _events(args: argparse.Namespace) -> int:
    from hermes_container.errors import UsageError
    from hermes_container.events.append import open_ledger
    from hermes_container.events.spool import deliver
    from hermes_container.home import HermesHome
    from hermes_container.names import validate_profile_name

    if args.profile is not None:
        validate_profile_name(args.profile)
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    if args.follow and args.action == "export":
        raise UsageError("export writes what exists now; it does not --follow")
    after, since = parse_since(args.since) if args.since else (0, None)
    home = HermesHome.from_env()
    ledger = open_ledger(home.root)
    with contextlib.suppress(Exception):  # busy: they come with a later read
        deliver(ledger)  # spooled events first, so they are not missed
    as_json = args.json or args.action == "export"
    if args.kind is not None and not _kind_exists(args.kind):
        raise UsageError(
            f"--kind {args.kind!r}: no such event kind (see docs/observability.md; "
            "a trailing '.' matches a prefix such as gateway.)"
        )
    filters = {"profile": args.profile, "kind": args.kind, "since": since}
    return print_events(
        ledger, after or 0, filters, follow=args.follow, limit=args.limit, as_json=as_json
    )


def print_events(
    ledger: Any,
    after: int,
    filters: dict[str, Any],
    *,
    follow: bool,
    limit: int | None,
    as_json: bool,
    keep: Callable[[Any], bool] | None = None,
) -> int:
    """Print the ledger's events after `after` that match `filters` (and `keep`), then,
    with `follow`, what comes, until interrupted."""
    printed = 0
    try:
        while True:
            # Every id up to `newest` has been committed: once read, none of them is
            # waited for again, filtered out or not (else a filter that hides the
            # newest events would spin on them without sleeping).
            newest = ledger.bounds()[1]
            for event in ledger.iterate(after, **filters):
                after = event.id
                if keep is not None and not keep(event):
                    continue
                print(json.dumps(event.to_json(), sort_keys=True) if as_json else _line(event))
                printed += 1
                if limit is not None and printed >= limit and not follow:
                    return 0
            if not follow:
                return 0
            after = max(after, newest)
            sys.stdout.flush()  # a pipe (`| grep`) sees each batch as it comes
            # Cheap: one indexed MAX(id) query twice a second.
            while ledger.bounds()[1] <= after:
                time.sleep(FOLLOW_POLL_SECONDS)
    except KeyboardInterrupt:
        return 0
