"""`hermes dashboard [--host H] [--port P]`: the web dashboard (imports FastAPI lazily);
`hermes dashboard login-url [--rotate]`: the sign-in link of the login token;
`hermes dashboard hash-password`: a hash for the basic login; and the hidden
`_dashboard-finish` its supervised slot's finish script runs."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("dashboard", help="serve the web dashboard")
    parser.add_argument(
        "--host", default=None, help="bind address (default: $HERMES_DASHBOARD_HOST or 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, default=None, help="port (default: $HERMES_DASHBOARD_PORT or 9119)"
    )
    parser.set_defaults(handler=_run)
    sub = parser.add_subparsers(dest="dashboard_command", metavar="<action>")
    url = sub.add_parser(
        "login-url", help="print the sign-in link of HERMES_DASHBOARD_AUTH=token (with the token)"
    )
    url.add_argument(
        "--rotate",
        action="store_true",
        help="replace the login token first; every dashboard session ends",
    )
    url.set_defaults(handler=_login_url, setup_logging=False)
    hashing = sub.add_parser(
        "hash-password",
        help="read a password (asked twice on a terminal, else one line of stdin) and print "
        "its argon2 hash for HERMES_DASHBOARD_BASIC_PASSWORD_HASH",
    )
    hashing.set_defaults(handler=_hash_password, setup_logging=False, as_root="keep")

    # Hidden (no help). The one finish decision for the dashboard's slot, in the image
    # (s6-rc's dashboard/finish) and under `hermes supervise --dashboard` alike. It
    # writes nothing, so root need not drop, and it never logs.
    finish = subparsers.add_parser("_dashboard-finish")
    finish.add_argument("exit_code", type=int, help="the dashboard's exit code, from s6")
    finish.set_defaults(handler=_finish, as_root="keep", setup_logging=False)


def _run(args: argparse.Namespace) -> int:
    from hermes_container.config import is_port
    from hermes_container.dashboard.serve import serve
    from hermes_container.errors import UsageError

    if args.port is not None and not is_port(args.port):
        raise UsageError(f"--port must be a port number (1-65535), not {args.port}")
    return serve(host=args.host, port=args.port)


def _login_url(args: argparse.Namespace) -> int:
    import os
    import sys

    from hermes_container.dashboard.auth.login_token import LoginTokenFile, sign_in_url
    from hermes_container.dashboard.settings import sign_in_base_from_env, token_login_enabled
    from hermes_container.home import HermesHome

    base = sign_in_base_from_env(os.environ)  # a bad setting fails before anything changes
    tokens = LoginTokenFile(HermesHome.from_env().root)
    token = tokens.rotate() if args.rotate else tokens.ensure()
    print(sign_in_url(base, token))
    if args.rotate:
        print(
            "the old login token no longer works; every dashboard session has ended",
            file=sys.stderr,
        )
    if not token_login_enabled(os.environ):
        print(
            "note: token login is off here (HERMES_DASHBOARD_AUTH is not `token`): the "
            "dashboard will not accept this link until it is",
            file=sys.stderr,
        )
    return 0


def _hash_password(args: argparse.Namespace) -> int:
    import sys

    from hermes_container.dashboard.auth.basic_login import MAX_PASSWORD, hash_password
    from hermes_container.errors import UsageError

    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise UsageError("the two passwords differ")
    else:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not password:
        raise UsageError("an empty password cannot protect the dashboard")
    if len(password) > MAX_PASSWORD:
        raise UsageError(f"the password is longer than {MAX_PASSWORD} characters")
    print(hash_password(password))
    return 0


def _finish(args: argparse.Namespace) -> int:
    """Park after a configuration error (exit 78): a restart cannot fix it, and a restart
    loop would bury the message that names the fix. Any other exit is restarted."""
    from hermes_container.errors import EXIT_CONFIG, EXIT_PARK

    if args.exit_code != EXIT_CONFIG:
        return 0
    # On stdout, like the dashboard's own message just before it: one stream, in order.
    print(
        f"dashboard: configuration error (exit {EXIT_CONFIG}, see the message above); "
        "parked until the configuration is fixed and the container (or `hermes "
        "supervise`) restarted",
        flush=True,
    )
    return EXIT_PARK
