"""`hermes ingress run`: the ingress app under uvicorn, until SIGTERM or SIGINT (exit 0)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Generator

from hermes_container.config import INGRESS_DEFAULT_PORT
from hermes_container.deferred_init import defer_init
from hermes_container.gateway.readiness import listen_socket
from hermes_container.home import HermesHome
from hermes_container.ingress.app import build_app
from hermes_container.ingress.directory import Directory
from hermes_container.ingress.forward import Pools
from hermes_container.ingress.keys import KeySource

# Not uvicorn's __init__ (its command line: click, multiprocessing): deferred_init.
defer_init("uvicorn", Config="uvicorn.config")
from uvicorn.config import Config  # noqa: E402
from uvicorn.server import Server  # noqa: E402

log = logging.getLogger("hermes.ingress")

DEFAULT_HOST = "127.0.0.1"  # the image's service sets 0.0.0.0
DEFAULT_PORT = INGRESS_DEFAULT_PORT
GRACE_S = 10
HANDLED = (signal.SIGTERM, signal.SIGINT)


class IngressServer(Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn's own version re-raises the signal after shutdown; a stop is a clean exit.
        loop = asyncio.get_running_loop()
        for sig in HANDLED:
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            yield
        finally:
            for sig in HANDLED:
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("hermes-ingress: %(levelname)s: %(message)s"))
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)


def serve(home: HermesHome, host: str, port: int) -> int:
    # Every refusal of the environment comes before the key file may be generated, so a
    # refused start leaves nothing behind.
    directory = Directory(home)
    keys = KeySource(home)
    keys.ensure()  # a missing or unreadable key file stops us here, with its name
    sock = listen_socket(host, port, "ingress")
    _setup_logging()
    where = keys.origin if keys.origin != "generated" else f"{keys.path} (`hermes ingress key`)"
    log.info(
        "serving %d profile(s) on %s:%d; the ingress key is in %s",
        len(directory.names()),
        host,
        port,
        where,
    )
    pools = Pools()
    app = build_app(directory, keys, pools)
    config = Config(
        app,
        lifespan="off",
        http="httptools",
        log_config=None,
        access_log=False,  # never a line with a request's headers, keys included
        server_header=False,
        date_header=False,  # the gateway's own Date header is passed through
        proxy_headers=False,
        timeout_graceful_shutdown=GRACE_S,
        timeout_keep_alive=30,
    )
    server = IngressServer(config)

    async def run() -> None:
        try:
            await server.serve(sockets=[sock])
        finally:
            pools.close()  # inside the loop: the pooled connections' transports live there

    try:
        import uvloop
    except ImportError:
        asyncio.run(run())
    else:
        uvloop.run(run())
    log.info("stopped")
    return 0
