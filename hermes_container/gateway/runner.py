"""`hermes [-p P] gateway run`: the life of one profile's gateway process.

Order matters: refuse root and bad config before touching any file; take the lock
before binding the port or writing state; record `running` and signal readiness
only once the port accepts connections; on SIGTERM/SIGINT record `stopping`, let
in-flight requests finish within the grace period, record `stopped`, and only
then release the lock (at exit), so a successor never overlaps with us. SIGHUP is
caught from the first line on and reloads the settings once serving (live_settings.py).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import sys

from hermes_container.envflags import env_flag
from hermes_container.errors import EXIT_CONFIG, HermesError
from hermes_container.gateway.environment import operator_patterns
from hermes_container.gateway.live_settings import SighupLatch
from hermes_container.gateway.lock import Takeover, acquire
from hermes_container.gateway.profile_settings import Settings, load_settings
from hermes_container.gateway.readiness import (
    listen_socket,
    port_accepts,
    probe_host,
    resolve_notify_fd,
    signal_ready,
)
from hermes_container.home import SESSIONS_DB, HermesHome
from hermes_container.names import validate_profile_name
from hermes_container.profiles import require_profile
from hermes_container.state import write_observed
from hermes_container.timeutil import utc_now_iso

TYPE_CHECKING = False
if TYPE_CHECKING:  # argparse stays out of the gateway's memory (cli.run_args)
    import argparse

log = logging.getLogger("hermes.gateway")

TAKEOVER_EXTRA_S = 5.0  # on top of the old gateway's own grace period

ROOT_REFUSAL = (
    "refusing to run the gateway as root: files it creates in the data volume "
    "(sessions.db, state, pidfile) would be root-owned and break later non-root starts; "
    "run it as the owner of HERMES_HOME or set HERMES_ALLOW_ROOT_GATEWAY=1"
)


def _refuse_root() -> None:
    if os.geteuid() == 0 and not env_flag("HERMES_ALLOW_ROOT_GATEWAY"):
        raise HermesError(ROOT_REFUSAL, EXIT_CONFIG)


def _setup_logging(profile: str) -> None:
    """Start/stop/takeover lines belong in the slot's log even when the CLI is quiet."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"hermes-gateway[{profile}]: %(levelname)s: %(message)s")
    )
    log.addHandler(handler)
    log.propagate = False
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)


class _EarlyStop(Exception):
    """SIGTERM/SIGINT before uvicorn took over signal handling."""


def _stop_early(signum: int, frame: object) -> None:
    raise _EarlyStop(f"received {signal.Signals(signum).name} while starting")


def run_command(args: argparse.Namespace) -> int:
    # First of all: SIGHUP's default action would kill a gateway that is still starting.
    hangup = SighupLatch()
    hangup.install()
    _refuse_root()
    name = validate_profile_name(args.profile)
    profile_dir = require_profile(HermesHome.from_env(), name)
    settings = load_settings(name, profile_dir)
    # The slot's shell skipped entries it cannot match; a typo there may be the very
    # secret the operator meant to hide, so it parks the gateway (exit 78) instead.
    operator_patterns(os.environ)
    notify_fd = resolve_notify_fd(args.notify_fd)
    _setup_logging(name)
    # A stop that lands while we wait for a lock or import the server is still a
    # clean stop (exit 0), not a death by signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop_early)
    mode = (
        Takeover.REPLACE if args.replace else Takeover.ADOPT if args.supervised else Takeover.REFUSE
    )
    try:
        lock = acquire(profile_dir, name, mode, settings.shutdown_grace_s + TAKEOVER_EXTRA_S)
    except _EarlyStop as stop:
        log.info("%s; never started", stop)
        return 0
    try:
        reason = _run_locked(settings, notify_fd, hangup)
        write_observed(
            profile_dir, gateway_state="stopped", pid=None, exit_code=0, exit_reason=reason
        )
        ledger(settings, "gateway.stopped", reason=reason)
        log.info("stopped (%s)", reason)
    finally:
        lock.release()
    return 0


def _run_locked(settings: Settings, notify_fd: int | None, hangup: SighupLatch) -> str:
    """From `starting` to the end of serving; returns why it stopped."""
    try:
        write_observed(
            settings.profile_dir,
            gateway_state="starting",
            pid=os.getpid(),
            port=settings.port,
            started_at=None,
            exit_code=None,
            exit_reason=None,
            config_rejected=None,  # this start read the files afresh
            restart_needed=None,
            reloads=0,
        )
        _note_settings_change(settings)
        ledger(settings, "gateway.starting", pid=os.getpid(), port=settings.port)
        sock = listen_socket(settings.host, settings.port, "gateway")
        return _serve(settings, sock, notify_fd, hangup)
    except HermesError as exc:
        _record_failure(settings, exc)
        raise
    except _EarlyStop as stop:
        return str(stop)


def ledger(settings: Settings, kind: str, **data: object) -> None:
    from hermes_container.events.append import record
    from hermes_container.home import resolve_home

    record(resolve_home(), kind, profile=settings.profile, data=data)


def _note_settings_change(settings: Settings) -> None:
    """`profile.config_changed` when the settings differ from the last start's."""
    from hermes_container.config_changes import check, event_data

    try:
        keys = check(settings.profile_dir)
    except OSError as exc:  # never a reason not to start
        log.warning("cannot compare the settings with the last start's: %s", exc)
        return
    if keys:
        ledger(settings, "profile.config_changed", **event_data(keys))


def _record_failure(settings: Settings, exc: HermesError) -> None:
    write_observed(
        settings.profile_dir,
        gateway_state="startup_failed",
        pid=None,
        exit_code=exc.exit_code,
        exit_reason=exc.message,
    )


def _serve(
    settings: Settings, sock: socket.socket, notify_fd: int | None, hangup: SighupLatch
) -> str:
    serving = _serve_async(settings, sock, notify_fd, hangup)
    try:
        import uvloop  # optional: faster event loop when installed
    except ImportError:
        return asyncio.run(serving)
    return uvloop.run(serving)


async def _serve_async(
    settings: Settings, sock: socket.socket, notify_fd: int | None, hangup: SighupLatch
) -> str:
    from hermes_container.gateway.http_api import build_app
    from hermes_container.gateway.live_settings import Reloader
    from hermes_container.gateway.relay import Relay
    from hermes_container.gateway.uvicorn_server import GatewayServer
    from hermes_container.metrics.gateway import MeteredSessionStore

    store = MeteredSessionStore(settings.profile_dir / SESSIONS_DB)
    store.start()
    app = build_app(settings, Relay(settings), store)
    try:
        reloader = Reloader(app.gateway, hangup)

        def started() -> None:
            _announce_running(settings, notify_fd)
            # After readiness (s6 never waits for it), before the first request is
            # served (this runs before uvicorn's loop takes any): every request counts.
            from hermes_container.home import resolve_home
            from hermes_container.metrics.gateway import start

            app.gateway.set_meter(start(resolve_home(), settings.profile))
            store.meter = app.gateway.meter
            gc.freeze()  # prometheus-client's modules are as long-lived as the rest
            reloader.start()  # a SIGHUP that came while starting is acted on now

        server = GatewayServer(app, settings, on_started=started, on_reload=reloader.request)
        reloader.on_applied = server.apply_settings
        await server.serve(sockets=[sock])
        return server.exit_reason
    finally:
        app.gateway.live.close()  # a retired generation closes with its last request
        await asyncio.to_thread(store.close)
        await asyncio.to_thread(store.meter.close)  # its last flush, after the last tokens


def _announce_running(settings: Settings, notify_fd: int | None) -> None:
    """Record `running`, then tell s6 we are ready, once the port really accepts."""
    # Everything loaded so far lives as long as the process: keep it out of the
    # collector's generations so collections stay cheap under load.
    gc.freeze()
    if not port_accepts(probe_host(settings.host), settings.port):
        log.warning(
            "port %d does not accept connections yet; readiness not signalled", settings.port
        )
        return
    write_observed(
        settings.profile_dir,
        gateway_state="running",
        pid=os.getpid(),
        port=settings.port,
        started_at=utc_now_iso(),
    )
    if notify_fd is not None:
        signal_ready(notify_fd)
    log.info("serving profile %r on %s:%d", settings.profile, settings.host, settings.port)
    # After the readiness signal: s6 and its waiters never wait for the ledger.
    ledger(settings, "gateway.ready", pid=os.getpid(), port=settings.port)
