"""`hermes profile create|delete|list|show`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("profile", help="create, delete, list and show profiles")
    sub = parser.add_subparsers(dest="profile_command", metavar="<action>", required=True)

    create = sub.add_parser("create", help="create a profile")
    create.add_argument("name")
    create.add_argument("--base-url", metavar="URL", help="the provider's OpenAI-compatible URL")
    create.add_argument("--model", metavar="M", help="the model the provider is asked for")
    create.add_argument(
        "--api-key-stdin",
        action="store_true",
        help="read the provider's key from stdin (hidden on a terminal) into .env",
    )
    create.add_argument("--persona-file", metavar="F", help="SOUL.md: the persona, from F")
    create.add_argument("--clone", metavar="FROM", help="copy model settings and persona")
    create.add_argument("--start", action="store_true", help="start its gateway now")
    create.set_defaults(handler=_create)

    delete = sub.add_parser("delete", help="delete a profile and its gateway slot")
    delete.add_argument("name")
    delete.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(handler=_delete)

    rotate = sub.add_parser(
        "rotate-key",
        help="replace a profile's API_SERVER_KEY; prints the new key once (stdout)",
    )
    rotate.add_argument("name")
    rotate.set_defaults(handler=_rotate_key)

    listing = sub.add_parser("list", help="list profiles")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_list, as_root="keep")  # it only reads

    show = sub.add_parser("show", help="show one profile (default: the -p profile)")
    show.add_argument("name", nargs="?")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_show, as_root="keep")  # it only reads


def _home() -> Any:
    from hermes_container.home import HermesHome

    return HermesHome.from_env()


def _create(args: argparse.Namespace) -> int:
    from hermes_container.commands.inputs import read_persona, read_secret_line
    from hermes_container.errors import HermesError
    from hermes_container.names import validate_profile_name
    from hermes_container.profiles import create_profile
    from hermes_container.supervision import get_manager
    from hermes_container.supervision.profile_slots import bring_up

    home = _home()
    # Everything from outside is read and checked before the profile exists.
    validate_profile_name(args.name)
    soul = None if args.persona_file is None else read_persona(args.persona_file)
    key = read_secret_line("the provider's API key") if args.api_key_stdin else None
    path = create_profile(
        home,
        args.name,
        clone_from=args.clone,
        base_url=args.base_url,
        model=args.model,
        model_api_key=key,
        soul=soul,
    )
    print(f"Created profile {args.name!r} at {path}")
    up = bring_up(home, get_manager(home), args.name, start=args.start)
    if up.outcome == "deferred":
        print("No supervised tree is running: start one with `hermes supervise`")
    elif up.outcome == "register_failed":
        raise HermesError(up.problem or "its slot could not be registered")
    elif up.outcome == "running":
        print(f"Gateway {args.name!r} is running: pid {up.pid}, port {up.port}")
    elif up.outcome in ("start_failed", "not_ready"):
        print(f"Gateway {args.name!r} is not ready: {up.problem or 'see `hermes logs`'}")
        return 1
    return 0


def _confirm(name: str) -> bool:
    if not sys.stdin.isatty():
        return False
    answer = input(f"Delete profile {name!r} and all its files? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def _delete(args: argparse.Namespace) -> int:
    from hermes_container.errors import HermesError
    from hermes_container.profiles import require_profile

    home = _home()
    if args.name != "default":
        require_profile(home, args.name)
    if not args.yes and args.name != "default" and not _confirm(args.name):
        raise HermesError(f"not deleting {args.name!r}: confirm with --yes (or answer y on a TTY)")
    from hermes_container.supervision import get_manager
    from hermes_container.supervision.profile_slots import remove

    path = remove(home, get_manager(home), args.name)
    print(f"Deleted profile {args.name!r} ({path})")
    return 0


def _rotate_key(args: argparse.Namespace) -> int:
    """The key alone on stdout (for a pipe), what the gateway made of it on stderr."""
    from hermes_container.profile_keys import rotate_api_key
    from hermes_container.supervision.reload import reload_and_wait

    home = _home()
    key = rotate_api_key(home, args.name)
    print(key, flush=True)
    answer = reload_and_wait(home, args.name)
    if answer.applied:
        print(
            f"Gateway {args.name!r} reloaded: the old key is refused from now on", file=sys.stderr
        )
        return 0
    print(f"Gateway {args.name!r}: {answer.detail}", file=sys.stderr)
    return 0 if not answer.sent else 1


def _list(args: argparse.Namespace) -> int:
    from hermes_container.profiles import describe_profile, list_profiles

    home = _home()
    infos = [describe_profile(home, name) for name in list_profiles(home)]
    if args.json:
        print(json.dumps([info.to_json() for info in infos], indent=2))
        return 0
    print(f"{'PROFILE':<24} {'PORT':>6}  {'DESIRED':<8} {'GATEWAY':<15} MODEL")
    for info in infos:
        print(
            f"{info.name:<24} {info.port or '-':>6}  {info.desired_state or '-':<8} "
            f"{info.gateway_state or '-':<15} {info.model_name or '-'}"
        )
    return 0


def _show(args: argparse.Namespace) -> int:
    from hermes_container.profiles import describe_profile

    info = describe_profile(_home(), args.name if args.name is not None else args.profile)
    if args.json:
        print(json.dumps(info.to_json(), indent=2))
        return 0
    data = info.to_json()
    for key in ("name", "path", "port", "api_key_set", "desired_state", "gateway_state"):
        print(f"{key + ':':<15} {data[key] if data[key] is not None else '-'}")
    print(f"{'model:':<15} {info.model_name or '-'} @ {info.model_base_url or '-'}")
    return 0
