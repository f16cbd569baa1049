"""`hermes [-p P] config get KEY | set KEY VALUE | unset KEY | list [--json] | edit |
set-secret NAME`.

The keys and their checks are config_schema's; the writing is config_edit's (comments
and order kept, validated as the gateway validates, atomic). After a change the
profile's gateway is asked to reload (SIGHUP); a port or host change needs a restart,
and the command says so.
"""

from __future__ import annotations

import argparse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from hermes_container.config_edit import ConfigChange
    from hermes_container.home import HermesHome


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "config", help="show and change a profile's settings (config.yaml, secrets in .env)"
    )
    sub = parser.add_subparsers(dest="config_command", metavar="<action>", required=True)

    get = sub.add_parser("get", help="print one key's value in force")
    get.add_argument("key", help="dotted key, e.g. model.name")
    get.set_defaults(handler=_get, as_root="keep", setup_logging=False)

    put = sub.add_parser("set", help="set a key (checked before it is written)")
    put.add_argument("key", help="dotted key, e.g. model.name")
    put.add_argument("value")
    put.set_defaults(handler=_set)

    unset = sub.add_parser("unset", help="remove a key (it falls back to its default)")
    unset.add_argument("key")
    unset.set_defaults(handler=_unset)

    listing = sub.add_parser("list", help="every key with the value in force (no secrets)")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_list, as_root="keep", setup_logging=False)

    edit = sub.add_parser("edit", help="edit config.yaml in $VISUAL/$EDITOR, checked on save")
    edit.set_defaults(handler=_edit)

    secret = sub.add_parser(
        "set-secret", help="store a secret in the profile's .env, read from stdin (no echo)"
    )
    secret.add_argument("name", help="HERMES_MODEL_API_KEY or API_SERVER_KEY")
    secret.set_defaults(handler=_set_secret)


def _home() -> HermesHome:
    from hermes_container.home import HermesHome

    return HermesHome.from_env()


def _get(args: argparse.Namespace) -> int:
    from hermes_container.config_schema import lookup
    from hermes_container.errors import ConfigError, UsageError

    try:
        key = lookup(args.key, profile_is_default=args.profile == "default")
    except ConfigError as exc:
        raise UsageError(exc.message) from None
    found = next(v for v in _effective(_home(), args.profile) if v.key is key)
    if found.value is None:
        return 1  # like `git config`: no value, no output
    print(found.shown)
    return 0


def _effective(home: HermesHome, profile: str) -> list[Any]:
    import os

    from hermes_container.config import load_config
    from hermes_container.config_schema import effective_values
    from hermes_container.envfile import read_env
    from hermes_container.home import ENV_FILE
    from hermes_container.profiles import require_profile

    profile_dir = require_profile(home, profile)
    return effective_values(
        load_config(profile_dir).raw,
        read_env(profile_dir / ENV_FILE),
        os.environ,
        profile_is_default=profile == "default",
    )


def _list(args: argparse.Namespace) -> int:
    import json

    values = _effective(_home(), args.profile)
    if args.json:
        rows = []
        for entry in values:
            row = {
                "key": entry.key.name,
                "value": None if entry.key.secret else entry.value,
                "source": entry.source,
                "default": entry.source == "default",
            }
            if entry.key.secret:
                row["set"] = entry.value is not None and entry.value != ""
            if entry.key.kind in ("url", "proxy") and entry.value is not None:
                row["value"] = entry.shown  # a password in a URL is masked
            if entry.problem:
                row["problem"] = entry.problem
            rows.append(row)
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(entry.key.name) for entry in values)
    for entry in values:
        quiet = entry.source == "config.yaml" or (entry.key.secret and entry.source == "unset")
        note = "" if quiet else f"  ({entry.source})"
        if entry.problem:
            note += "  (invalid: the gateway refuses it)"
        print(f"{entry.key.name:<{width}}  {entry.shown}{note}")
    return 0


def _set(args: argparse.Namespace) -> int:
    from hermes_container.config_edit import set_text

    home = _home()
    change = set_text(home, args.profile, args.key, args.value)
    if not change.changed:
        print(f"{args.key} already has that value in {change.path}; nothing changed")
        return 0
    _report(home, change, f"Set {args.key} in {change.path}")
    return 0


def _unset(args: argparse.Namespace) -> int:
    from hermes_container.config_edit import unset

    home = _home()
    change = unset(home, args.profile, args.key)
    if not change.changed:
        print(f"{args.key} is not set in {change.path}; nothing changed")
        return 0
    _report(home, change, f"Unset {args.key} in {change.path}")
    return 0


def _report(home: HermesHome, change: ConfigChange, what: str) -> None:
    """What was written, what still needs a restart, and the gateway's reload."""
    print(what)
    profile = change.profile
    for key in change.restart:
        print(f"{key} takes effect after `hermes -p {profile} gateway restart`")
    if any(k.partition(".")[0] in ("kanban", "jobs") for k in change.changed):
        print("The dispatcher reads kanban: and jobs: settings at its next tick")
    if not change.reload:
        return
    from hermes_container.supervision.reload import reload_and_wait

    answer = reload_and_wait(home, profile)
    if answer.applied:
        print(f"Gateway {profile!r} reloaded: new requests use the new settings")
    else:
        print(f"Gateway {profile!r}: {answer.detail}")


def _edit(args: argparse.Namespace) -> int:
    import contextlib
    import os
    import shlex
    import subprocess
    import tempfile

    from hermes_container.config_edit import config_path, read_config_bytes, replace_text
    from hermes_container.errors import HermesError, UsageError

    home = _home()
    path = config_path(home, args.profile)
    editor = os.environ.get("VISUAL", "").strip() or os.environ.get("EDITOR", "").strip()
    if not editor:
        raise UsageError("set $VISUAL or $EDITOR to edit config.yaml (or use `hermes config set`)")
    original = read_config_bytes(path)
    # The copy is private (mkstemp: 0600): config.yaml may hold a proxy password.
    fd, copy = tempfile.mkstemp(prefix=f"hermes-{args.profile}-config-", suffix=".yaml")
    with os.fdopen(fd, "wb") as fh:
        fh.write(original)
    try:
        status = subprocess.run([*shlex.split(editor), copy], check=False).returncode
    except (OSError, ValueError) as exc:  # no such program; unbalanced quotes in $EDITOR
        os.unlink(copy)  # nothing was edited in it
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise HermesError(f"cannot run the editor {editor!r}: {reason}") from None
    if status != 0:
        raise HermesError(f"the editor exited with status {status}; nothing changed ({copy})")
    with open(copy, "rb") as fh:
        edited = fh.read()
    if edited == original:
        os.unlink(copy)
        print(f"No changes to {path}")
        return 0
    try:
        text = edited.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(
            f"the edited file is not UTF-8 text; your edit is kept in {copy}"
        ) from None
    try:
        change = replace_text(home, args.profile, text, original)
    except HermesError as exc:
        raise HermesError(
            f"{exc.message}; nothing changed, your edit is kept in {copy}", exc.exit_code
        ) from None
    with contextlib.suppress(FileNotFoundError):
        os.unlink(copy)
    changed = ", ".join(change.changed) or "no setting (comments or layout only)"
    _report(home, change, f"Saved {path}: changed {changed}")
    return 0


def _set_secret(args: argparse.Namespace) -> int:
    from hermes_container.commands.inputs import read_secret_line
    from hermes_container.config_edit import check_secret, set_secret
    from hermes_container.errors import ConfigError, UsageError
    from hermes_container.profiles import require_profile

    home = _home()
    require_profile(home, args.profile)
    try:
        check_secret(args.name, "x")  # the name first: no prompt for a name we refuse
    except ConfigError as exc:
        raise UsageError(exc.message) from None
    change = set_secret(home, args.profile, args.name, read_secret_line(args.name))
    env_file = change.path.parent / ".env"
    if not change.changed:
        print(f"{args.name} in {env_file} already holds that value; nothing changed")
        return 0
    _report(home, change, f"Stored {args.name} in {env_file} (mode 600)")
    return 0
