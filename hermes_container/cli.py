"""`hermes [-p PROFILE] <command>`: the command-line entry point.

Only argparse and the small command modules are imported here; every command
imports what it needs when it runs, so `hermes --help` and `hermes gateway status`
stay fast and never load FastAPI, uvicorn, authlib or httpx. `gateway status` (and
`status`) in their plain forms do not even load argparse: see `status_args`.
"""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

from hermes_container import __version__
from hermes_container.errors import HermesError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
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


def _parser_class() -> type[argparse.ArgumentParser]:
    """Our ArgumentParser; defined on first use so that importing this module does not
    import argparse (with gettext and locale: ~6 ms of a `gateway status`)."""
    import argparse

    class Formatter(argparse.HelpFormatter):
        """argparse's formatter, sized without importing shutil.

        argparse builds a formatter for every add_argument call, and the stock one
        imports shutil for the terminal width: 3 ms of each run, even when no help is
        printed.
        """

        def __init__(self, prog: str) -> None:
            super().__init__(prog, width=_terminal_width())

    class Parser(argparse.ArgumentParser):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("formatter_class", Formatter)
            super().__init__(*args, **kwargs)

        def error(self, message: str) -> None:  # type: ignore[override]
            # One line on stderr, exit 2: the same shape as every other error.
            self.exit(2, f"hermes: error: {message}\n")

    return Parser


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


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The full parser, or with `argv` only the part its command needs."""
    import importlib

    parser_class = _parser_class()
    parser = parser_class(
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
    subparsers = parser.add_subparsers(
        dest="command", metavar="<command>", parser_class=parser_class
    )
    name = command_name(argv) if argv is not None else None
    modules = (COMMANDS[name],) if name in COMMANDS else COMMAND_MODULES
    for module_name in modules:
        importlib.import_module(module_name).register(subparsers)
    return parser


# `gateway status [--all] [--json]` and `status [--json]`, with the global options, are
# parsed here by hand: importing argparse (with gettext, locale) and building the parsers
# it needs is a quarter of such a run (~13 ms). Whatever else argv holds (help, --at,
# abbreviations, `-pNAME`, `--`, mistakes) returns None and goes through argparse, which
# also owns these commands' definitions (commands/gateway.py); tests/unit/test_cli.py
# checks that both give the same namespace.
_STATUS_FORMS: dict[tuple[str, ...], tuple[str, ...]] = {
    ("gateway", "status"): ("--all", "--json"),
    ("status",): ("--json",),
}


def _global_options(argv: Sequence[str]) -> tuple[str, bool, list[str]] | None:
    """(profile, verbose, the rest) for argv's plain global options, else None."""
    profile = os.environ.get("HERMES_PROFILE") or "default"
    verbose = False
    rest = list(argv)
    while rest and rest[0].startswith("-"):
        option = rest.pop(0)
        if option in ("-v", "--verbose"):
            verbose = True
        elif option in ("-p", "--profile") and rest and not rest[0].startswith("-"):
            profile = rest.pop(0)
        elif option.startswith("--profile="):
            profile = option.removeprefix("--profile=")
        else:
            return None
    return profile, verbose, rest


def status_args(argv: Sequence[str]) -> SimpleNamespace | None:
    """The namespace argparse would give for a plain status command, else None."""
    options = _global_options(argv)
    if options is None:
        return None
    profile, verbose, rest = options
    for words, flags in _STATUS_FORMS.items():
        given = rest[len(words) :]
        if tuple(rest[: len(words)]) == words and all(flag in flags for flag in given):
            break
    else:
        return None
    from hermes_container.commands.gateway import status_defaults

    args = SimpleNamespace(profile=profile, verbose=verbose, command=words[0], **status_defaults())
    if words[0] == "gateway":
        args.gateway_command = "status"
    args.all = words[0] == "status" or "--all" in given  # `status` is `gateway status --all`
    args.json = "--json" in given
    args.at = None
    return args


# `gateway run` as a slot runs it (`-p P gateway run --supervised --notify-fd N`) is
# parsed here by hand too: the gateway lives as long as the container, and argparse with
# gettext, locale and the parser it built would stay in its memory all that time (0.4 MB
# of each gateway's ~19, measured A/B). Anything else goes to argparse.
_RUN_FLAGS = ("--supervised", "--replace", "--no-supervise")


def run_args(argv: Sequence[str]) -> SimpleNamespace | None:
    """The namespace argparse would give for a plain `gateway run`, else None."""
    options = _global_options(argv)
    if options is None:
        return None
    profile, verbose, rest = options
    if rest[:2] != ["gateway", "run"]:
        return None
    flags: dict[str, bool] = dict.fromkeys(_RUN_FLAGS, False)
    notify_fd: int | None = None
    given = rest[2:]
    while given:
        word = given.pop(0)
        if word in flags:
            flags[word] = True
            continue
        value = None
        if word == "--notify-fd" and given:
            value = given.pop(0)
        elif word.startswith("--notify-fd="):
            value = word.removeprefix("--notify-fd=")
        if value is None or not (value.isascii() and value.isdigit()):
            return None
        notify_fd = int(value)
    # The handler argparse sets (a bare run inside a live tree is redirected to its slot).
    from hermes_container.commands.gateway import _run

    return SimpleNamespace(
        profile=profile,
        verbose=verbose,
        command="gateway",
        gateway_command="run",
        supervised=flags["--supervised"],
        notify_fd=notify_fd,
        replace=flags["--replace"],
        no_supervise=flags["--no-supervise"],
        handler=_run,
    )


def finish_args(argv: Sequence[str]) -> SimpleNamespace | None:
    """The namespace argparse would give for `_slot-finish PROFILE EXIT [SIGNAL]` as a
    slot's finish script runs it, else None. s6-supervise waits for this process before
    it restarts a crashed gateway, so every millisecond here is one of crash -> ready."""
    if not argv or argv[0] != "_slot-finish" or not 3 <= len(argv) <= 4:
        return None
    if any(not word or word.startswith("-") for word in argv[1:]):
        return None  # options, `--`, empty words: argparse's business
    from hermes_container.commands.supervision import finish_defaults

    return SimpleNamespace(
        profile=os.environ.get("HERMES_PROFILE") or "default",
        verbose=False,
        command="_slot-finish",
        slot_profile=argv[1],
        exit_code=argv[2],
        signal=argv[3] if len(argv) == 4 else "0",
        **finish_defaults(),
    )


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
    as_program = argv is None  # the console script: this process ends when we return
    argv = sys.argv[1:] if argv is None else list(argv)
    fast = status_args(argv)
    args: argparse.Namespace | SimpleNamespace
    if fast is None and (finishing := finish_args(argv)) is not None:
        from hermes_container.events.actor import set_process_actor

        set_process_actor(finishing.command)
        code = _dispatch(finishing)
        if as_program:  # s6 restarts the gateway once this process is gone
            _exit_without_teardown(code)
        return code
    if fast is None and (running := run_args(argv)) is not None:
        from hermes_container.events.actor import set_process_actor

        set_process_actor(running.command, running.gateway_command)
        return _dispatch(running)
    if fast is None:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        if getattr(args, "handler", None) is None:
            parser.print_help(sys.stderr)
            return 2
        # The ledger's actor for what this command records. A status records nothing
        # (and would be the default actor, "cli"), so the fast path skips this import.
        from hermes_container.events.actor import set_process_actor

        action = getattr(args, f"{args.command}_command", None)
        set_process_actor(args.command, action if isinstance(action, str) else None)
    else:
        args = fast
    code = _dispatch(args)
    if as_program and (fast is not None or getattr(args, "exit_without_teardown", False)):
        _exit_without_teardown(code)
    return code


def _dispatch(args: argparse.Namespace | SimpleNamespace) -> int:
    if args.verbose or getattr(args, "setup_logging", True):
        setup_logging(verbose=args.verbose)
    # Files, logs and transcripts are the owner's alone: nothing we create is readable
    # by other users, whatever umask the caller had.
    os.umask(0o077)
    try:
        if getattr(args, "as_root", "drop") == "drop":
            _drop_root()
        return int(args.handler(args) or 0)
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


def _exit_without_teardown(code: int) -> None:
    """End a status, finish or reconcile run now. The interpreter's own exit frees every
    module it loaded (~5 ms, a tenth of a status, measured with os._exit against a normal
    exit). Those commands start no thread and register nothing to run at exit, and what
    they wrote is committed (atomic renames, SQLite transactions) before they return, so
    once the output is flushed there is nothing left to do. A failed flush (say a closed
    pipe) returns, and the usual exit reports it."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        return
    os._exit(code)


if __name__ == "__main__":
    raise SystemExit(main())
