"""`hermes profiles apply [--file F] [--dry-run] [--json]`: the declarative profiles file.

The file is HERMES_PROFILES_FILE's unless --file names another; what it holds and how
it is applied is declared.py's. A file that cannot be applied is refused before
anything changes (exit 2, one line); a profile whose change fails is reported and the
others still apply (exit 1). The boot reconciler applies the same file at every start.
"""

from __future__ import annotations

import argparse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from hermes_container.declared import ApplyResult, Plan


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "profiles", help="apply the declarative profiles file (HERMES_PROFILES_FILE)"
    )
    sub = parser.add_subparsers(dest="profiles_command", metavar="<action>", required=True)
    apply = sub.add_parser(
        "apply", help="create, update (and with prune: true delete) profiles as the file says"
    )
    apply.add_argument("--file", metavar="F", help="the file (default: $HERMES_PROFILES_FILE)")
    apply.add_argument("--dry-run", action="store_true", help="show the plan, change nothing")
    apply.add_argument("--json", action="store_true", help="machine-readable output")
    apply.set_defaults(handler=_apply)


def _apply(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from hermes_container.declared import (
        PROFILES_FILE_ENV,
        apply,
        declared_path,
        load,
        make_plan,
        record_applied,
    )
    from hermes_container.errors import EXIT_FAILURE, UsageError
    from hermes_container.home import HermesHome

    if args.file is not None:
        if not args.file.strip():
            raise UsageError("--file must name a file")
        path = Path(args.file).expanduser().absolute()
    else:
        found = declared_path()
        if found is None:
            raise UsageError(f"no profiles file: give --file or set {PROFILES_FILE_ENV}")
        path = found
    home = HermesHome.from_env()
    declaration = load(path)  # everything from outside is read and checked first
    plan = make_plan(home, declaration)
    result = None
    if not args.dry_run:
        from hermes_container.supervision import get_manager

        result = apply(home, plan, manager=get_manager(home) if plan.changed else None)
        record_applied(home, path, result)
    if args.json:
        print(
            json.dumps(
                {
                    "file": str(path),
                    "prune": declaration.prune,
                    "dry_run": args.dry_run,
                    "plan": [item.to_json() for item in plan.profiles],
                    "result": None if result is None else result.to_json(),
                },
                indent=2,
            )
        )
    else:
        _print_plan(plan, dry_run=args.dry_run)
        if result is not None:
            _print_result(result)
    return EXIT_FAILURE if result is not None and result.failed else 0


def _print_plan(plan: Plan, *, dry_run: bool) -> None:
    declaration = plan.declaration
    prune = "true" if declaration.prune else "false"
    print(f"Profiles file {declaration.path} (prune: {prune})")
    for item in plan.profiles:
        what = f": {', '.join(item.changes)}" if item.changes else ""
        problem = f" (will fail: {item.problem})" if item.problem else ""
        print(f"  {item.action} {item.name}{what}{problem}")
    if not plan.changed:
        print("Nothing to change: every profile is as declared")
    elif dry_run:
        print("Dry run: nothing was changed")


def _print_result(result: ApplyResult) -> None:
    for name in result.deleted:
        print(f"Deleted profile {name!r}")
    for name in result.created:
        print(f"Created profile {name!r}")
    for name, keys in result.updated.items():
        print(f"Updated profile {name!r}: {', '.join(keys)}")
    for name, desired in result.desired.items():
        print(f"Desired state of {name!r}: {desired}")
    for name in result.reloaded:
        print(f"Gateway {name!r} reloaded: new requests use the new settings")
    for note in result.notes:
        print(f"Note: {note}")
    for name, reason in result.failed.items():
        print(f"Not applied to profile {name!r}: {reason}")
