"""uvicorn, adapted: our state writes and readiness, signals that end in exit 0, and
SIGHUP as a live reload (live_settings.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Generator

from starlette.types import ASGIApp

from hermes_container.deferred_init import defer_init
from hermes_container.gateway.live_settings import graceful_timeout
from hermes_container.gateway.profile_settings import Settings
from hermes_container.state import write_observed

# uvicorn's __init__ re-exports its command line (uvicorn.main: click, multiprocessing),
# 1.7 MB of every gateway (measured A/B) for code it never runs; the server needs only these
# modules (deferred_init explains how). uvicorn.lifespan.off asks the package for Config.
defer_init("uvicorn", Config="uvicorn.config")
from uvicorn.config import Config  # noqa: E402
from uvicorn.server import Server  # noqa: E402

log = logging.getLogger("hermes.gateway")

HANDLED = (signal.SIGTERM, signal.SIGINT)


class GatewayServer(Server):
    def __init__(
        self,
        app: ASGIApp,
        settings: Settings,
        on_started: Callable[[], None],
        on_reload: Callable[[], None],
    ) -> None:
        config = Config(
            app,
            lifespan="off",
            http="httptools",
            ws="none",  # no websockets served: not even the probe for a library
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=False,  # the client address is not used; skip the middleware
            timeout_graceful_shutdown=graceful_timeout(settings),
            timeout_keep_alive=30,
        )
        super().__init__(config)
        self.settings = settings
        self.on_started = on_started
        self.on_reload = on_reload
        self.exit_reason = "server exited"

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn's own version re-raises the signal after shutdown (exit -15);
        # a graceful stop is a clean exit for us.
        loop = asyncio.get_running_loop()
        for sig in HANDLED:
            loop.add_signal_handler(sig, self.on_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self.on_hangup)
        try:
            yield
        finally:
            for sig in (*HANDLED, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            # Removing a loop handler restores the default action, death for SIGHUP; a
            # reload after serving has ended has nothing left to change.
            signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def on_hangup(self) -> None:
        if self.should_exit:
            log.info("SIGHUP while stopping: no reload")
        else:
            self.on_reload()

    def apply_settings(self, settings: Settings) -> None:
        """A reload applied: the next shutdown uses its grace period."""
        self.settings = settings
        self.config.timeout_graceful_shutdown = graceful_timeout(settings)

    def on_signal(self, sig: signal.Signals) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: do not wait for in-flight requests
        elif not self.should_exit:
            self.exit_reason = f"received {sig.name}"
        self.should_exit = True

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            # Synchronous on purpose: no request is served before `running` is recorded,
            # so a 200 from /health always finds the state file saying so.
            self.on_started()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        grace = self.settings.shutdown_grace_s
        log.info("%s: stopping; in-flight requests get %gs", self.exit_reason, grace)
        await asyncio.to_thread(write_observed, self.settings.profile_dir, gateway_state="stopping")
        await super().shutdown(sockets=sockets)
