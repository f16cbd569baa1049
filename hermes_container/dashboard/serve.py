"""`hermes dashboard`: resolve settings (fail closed), build the app, run uvicorn."""

from __future__ import annotations

import logging
import sys

from hermes_container.home import HermesHome

log = logging.getLogger("hermes.dashboard")

INSECURE_WARNING = (
    "!!! HERMES_DASHBOARD_INSECURE is set: the dashboard on {host}:{port} has NO "
    "authentication. Anyone who can reach it can stop and start every gateway. !!!"
)


def serve(host: str | None = None, port: int | None = None) -> int:
    from hermes_container.dashboard.settings import load_settings

    home = HermesHome.from_env()
    settings = load_settings(home, host=host, port=port)  # raises ConfigError (exit 78)

    from hermes_container.dashboard.app import create_app
    from hermes_container.deferred_init import defer_init

    # Not uvicorn's __init__: it loads uvicorn's command line (click, multiprocessing),
    # which a server started from here never runs (deferred_init says why and how).
    defer_init("uvicorn", Config="uvicorn.config")
    from uvicorn.config import Config
    from uvicorn.server import Server

    _log_setup()
    app = create_app(settings, home=home)
    if settings.token_login:
        from hermes_container.dashboard.auth.login_token import LoginTokenFile, sign_in_url

        # The one line that carries the token: the operator's way in, on the container's
        # own output (docker logs), never in a log file the dashboard shows.
        token = LoginTokenFile(home.root).ensure()
        log.info("sign in at %s", sign_in_url(settings.sign_in_base, token))
    if settings.mode == "insecure":
        log.warning(INSECURE_WARNING.format(host=settings.host, port=settings.port))
    log.info(
        "dashboard on http://%s:%d (auth: %s%s)",
        settings.host if ":" not in settings.host else f"[{settings.host}]",
        settings.port,
        settings.mode,
        f", providers: {', '.join(settings.providers)}" if settings.providers else "",
    )
    config = Config(
        app,
        host=settings.host,
        port=settings.port,
        proxy_headers=False,  # X-Forwarded-* only from HERMES_DASHBOARD_TRUSTED_PROXIES
        server_header=False,
        access_log=False,  # OAuth callbacks carry codes in the query string
        log_config=None,
        timeout_graceful_shutdown=5,
    )
    server = Server(config)
    server.run()
    return 0 if server.started else 1


def _log_setup() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("hermes dashboard: %(levelname)s: %(message)s"))
    for name in ("hermes", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False
