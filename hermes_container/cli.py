"""`hermes [-p PROFILE] <command>`: the command-line entry point.

Only argparse and the small command modules are imported here; every command
imports what it needs when it runs, so `hermes --help` and `hermes gateway status`
stay fast and never load FastAPI, uvicorn, authlib or httpx.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from hermes_container import __version__
from hermes_container.errors import HermesError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

# Each module defines `register(subparsers)`; handlers are set with set_defaults(handler=...).
# The map says which module registers each top-level command, so a run builds only the
# parser it needs (building all of them costs more than the rest of `gateway status`).
_SUPERVISION = "hermes_container.commands.supervision"
COMMANDS: dict[str, str] = {
    "profile": "hermes_container.commands.profile",
    "profiles": "hermes_container.commands.declared",
    "gateway": "hermes_container.commands.gateway",
    "status": "hermes_container.commands.gateway",  # = gateway status --all
    "chat": "hermes_container.commands.chat",
    "reconcile": _SUPERVISION,
    "supervise": _SUPERVISION,
    "logs": _SUPERVISION,
    "_slot-finish": _SUPERVISION,
    "dashboard": "hermes_container.commands.dashboard",
    "_dashboard-finish": "hermes_container.commands.dashboard",
    "healthcheck": "hermes_container.commands.healthcheck",
    "kanban": "hermes_container.commands.kanban",
    "events": "hermes_container.commands.events",
    "jobs": "hermes_container.commands.jobs",
    "ingress": "hermes_container.commands.ingress",
    "config": "hermes_container.commands.config",
    "setup": "hermes_container.commands.setup",
}
COMMAND_MODULES: tuple[str, ...] = tuple(dict.fromkeys(COMMANDS.values()))


def command_name(argv: Sequence[str]) -> str | None:
    """The command word after the global options, or None (help, errors: build all)."""
    tokens = iter(argv)
    for token in tokens:
        if token in ("-v", "--verbose"):
            continue
        if token in ("-p", "--profile"):
            next(tokens, None)
            continue
        if token.startswith("--profile=") or (token.startswith("-p") and token[2:3] != "-"):
            continue
        return None if token.startswith("-") else token
    return None


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, sized without importing shutil.

    argparse builds a formatter for every add_argument call, and the stock one imports
    shutil for the terminal width: 3 ms of each run, even when no help is printed.
    """

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_terminal_width())


def _terminal_width() -> int:
    # What shutil.get_terminal_size() answers: $COLUMNS, the terminal, else 80.
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return (columns or 80) - 2  # HelpFormatter's own margin


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        # One line on stderr, exit 2: the same shape as every other error.
        self.exit(2, f"hermes: error: {message}\n")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The full parser, or with `argv` only the part its command needs."""
    parser = _Parser(
        prog="hermes",
        description="Host many Hermes agent profiles under s6 supervision.",
    )
    parser.add_argument("--version", action="version", version=f"hermes {__version__}")
    parser.add_argument(
        "-p",
        "--profile",
        default=os.environ.get("HERMES_PROFILE") or "default",
        help="profile to act on (default: $HERMES_PROFILE or 'default')",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>", parser_class=_Parser)
    name = command_name(argv) if argv is not None else None
    modules = (COMMANDS[name],) if name in COMMANDS else COMMAND_MODULES
    for module_name in modules:
        importlib.import_module(module_name).register(subparsers)
    return parser


def setup_logging(*, verbose: bool) -> None:
    # Commands that never log opt out (set_defaults(setup_logging=False)): importing
    # logging costs about 15 ms, a fifth of a fast command. Their rare warnings still
    # reach stderr through logging's last-resort handler.
    import logging

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="hermes: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )


def _drop_root() -> None:
    """Root (e.g. HERMES_DOCKER_EXEC_AS_ROOT=1) becomes the home's owner before a command
    that writes under it: root must not follow paths that user can change. Commands that
    only read keep root (set_defaults(as_root="keep")); `supervise` drops by itself."""
    if os.geteuid() != 0:
        return
    from hermes_container.home import resolve_home
    from hermes_container.privileges import drop_to_home_owner

    drop_to_home_owner(resolve_home())


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.verbose or getattr(args, "setup_logging", True):
        setup_logging(verbose=args.verbose)
    from hermes_container.events.actor import set_process_actor

    set_process_actor(args.command, argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    # Files, logs and transcripts are the owner's alone: nothing we create is readable
    # by other users, whatever umask the caller had.
    os.umask(0o077)
    try:
        if getattr(args, "as_root", "drop") == "drop":
            _drop_root()
        return int(handler(args) or 0)
    except HermesError as exc:
        print(f"hermes: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    except OSError as exc:  # e.g. HERMES_HOME is a file: one line, not a traceback
        where = f": {exc.filename}" if exc.filename else ""
        print(f"hermes: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
