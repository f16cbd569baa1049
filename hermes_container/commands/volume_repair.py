"""`python -m hermes_container.commands.volume_repair repair ... PATH`: init-volume's helper,
the ownership and mode repair of $HERMES_HOME (the walk is hermes_container.volume).

Not a `hermes` subcommand: root/etc/s6-overlay/s6-rc.d/init-volume/run runs it as root,
before anything else touches the volume, with the venv's Python. Its messages read as the
script's (`init-volume: ...`). Imports only the standard library and hermes_container.volume.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from hermes_container.volume import MAX_DEPTH, repair

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

PROG = "init-volume"  # the CLI is init-volume's helper: its messages read as the script's


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line instead of argparse's usage + error pair: it lands in `docker logs`.
        self.exit(2, f"{PROG}: error: {message}\n")


def _owner(spec: str) -> tuple[int, int]:
    """USER:GROUP, each a name or a number."""
    import grp
    import pwd

    user, sep, group = spec.partition(":")
    if not sep or not user or not group:
        raise ValueError(f"--owner {spec!r}: expected USER:GROUP")
    try:
        uid = int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid
        gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValueError(f"--owner {spec!r}: no such user or group") from None
    if max(uid, gid) >= 0xFFFFFFFF:  # (uid_t)-1 means "leave unchanged" to chown
        raise ValueError(f"--owner {spec!r}: id out of range")
    return uid, gid


def _depth(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive whole number")
    return int(value)


def main(argv: Sequence[str] | None = None) -> int:
    """`repair [--owner USER:GROUP] [--modes] [--max-depth N] PATH`.

    Bad input: one line on stderr, exit 2. PATH not a directory (or a symlink): exit 1.
    Entries that could not be repaired are a warning; the exit status stays 0.
    """
    parser = _Parser(prog="python -m hermes_container.commands.volume_repair")
    parser.add_argument("command", choices=["repair"])
    parser.add_argument("--owner", metavar="USER:GROUP", help="give entries to USER:GROUP")
    parser.add_argument("--modes", action="store_true", help="remove group/other permissions")
    parser.add_argument("--max-depth", type=_depth, default=MAX_DEPTH, metavar="N")
    parser.add_argument("path")
    args = parser.parse_args(argv)
    try:
        owner = None if args.owner is None else _owner(args.owner)
    except ValueError as exc:
        parser.error(str(exc))
    if owner is None and not args.modes:
        parser.error("nothing to do: give --owner USER:GROUP and/or --modes")
    try:
        summary = repair(args.path, owner=owner, modes=args.modes, max_depth=args.max_depth)
    except OSError as exc:
        print(f"{PROG}: error: cannot repair {args.path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    for warning, text in summary.messages(args.path, args.owner or ""):
        if warning:
            print(f"{PROG}: warning: {text}", file=sys.stderr)
        else:
            print(f"{PROG}: {text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
