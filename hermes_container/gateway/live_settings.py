"""Live reload: the settings a running gateway serves with, replaced whole on SIGHUP.

A `Live` is one generation of settings with its own Relay. Each request reads
`gateway.live` once, as it starts, and uses that generation to its end, so a request or
stream already running finishes on the settings it began with while new ones get the
new generation. Everything runs on the event loop's one thread: the swap is a single
assignment and the in-flight count needs no lock. A generation retired by a reload
closes its Relay when its last request ends.

SIGHUP is ours from the first line of `gateway run` to its exit (its default action
would kill the gateway): before the server is up it is only remembered (`SighupLatch`),
and acted on once the gateway serves. A reload re-reads config.yaml, .env and SOUL.md
with the same `load_settings` a start uses. What it cannot apply live, the listener's
host and port, keeps its old value and is recorded as needing a restart; a file it
cannot use leaves the running settings in force and is recorded as rejected.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import signal
from dataclasses import replace

from hermes_container.errors import HermesError
from hermes_container.gateway.profile_settings import Settings, load_settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from hermes_container.gateway.http_api import Gateway
    from hermes_container.gateway.relay import Relay

log = logging.getLogger("hermes.gateway")

# userinfo in any URL a message may quote: `scheme://user:secret@` keeps only the scheme.
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s'\"]*@")
MAX_REASON = 300


class Live:
    """One generation: settings, their relay and the Authorization header they accept."""

    __slots__ = ("closed", "expected_auth", "inflight", "relay", "retired", "settings")

    def __init__(self, settings: Settings, relay: Relay) -> None:
        self.settings = settings
        self.relay = relay
        self.expected_auth = f"Bearer {settings.api_key}".encode()
        self.inflight = 0
        self.retired = False
        self.closed = False

    def leave(self) -> None:
        """A request of this generation ended; the last one out of a retired one closes."""
        self.inflight -= 1
        if self.retired and not self.inflight:
            self.close()

    def retire(self) -> None:
        self.retired = True
        if not self.inflight:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.relay.close()


class SighupLatch:
    """Remembers a SIGHUP that arrives before the server can act on it."""

    def __init__(self) -> None:
        self.pending = False

    def install(self) -> None:
        signal.signal(signal.SIGHUP, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        # Only a flag: a Python-level handler may run in the middle of the event loop's
        # own code, where scheduling anything is unsafe.
        self.pending = True


def one_line(reason: str) -> str:
    """A reason fit for the log, the state file and the ledger: one line, no userinfo."""
    text = " ".join(_USERINFO.sub(r"\1***@", reason).split())
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


def listener_change(old: Settings, new: Settings) -> str | None:
    """What of `new` only a restart applies (the bound host/port), in words, or None."""
    changes = [
        f"gateway.{key} is now {getattr(new, key)} (still serving on {getattr(old, key)})"
        for key in ("host", "port")
        if getattr(old, key) != getattr(new, key)
    ]
    return "; ".join(changes) or None


class Reloader:
    """Applies SIGHUPs to one gateway: one reload at a time, a SIGHUP during a reload
    runs one more after it (the files may have changed again)."""

    def __init__(
        self,
        gateway: Gateway,
        latch: SighupLatch,
        on_applied: Callable[[Settings], None] | None = None,
    ) -> None:
        self.gateway = gateway
        self.latch = latch
        self.on_applied = on_applied
        self.bound = gateway.live.settings  # the listener's host and port, until a restart
        self.ready = False
        self.again = False
        self.task: asyncio.Task[None] | None = None
        self.answered = 0  # reloads applied or rejected, recorded as `reloads`

    def request(self) -> None:
        """SIGHUP, from the event loop's signal handler."""
        if not self.ready:
            self.latch.pending = True  # acted on by start()
            return
        if self.task is not None and not self.task.done():
            self.again = True
            return
        self.task = asyncio.get_running_loop().create_task(self._run())

    def start(self) -> None:
        """The gateway serves: act on a SIGHUP that came while it started."""
        self.ready = True
        if self.latch.pending:
            self.latch.pending = False
            self.request()

    async def _run(self) -> None:
        while True:
            self.again = False
            try:
                await self.reload()
            except Exception:  # a reload must never take the gateway down
                log.exception("reload failed; the settings in force stay")
            if not self.again:
                return

    async def reload(self) -> None:
        """Re-read the profile; apply it whole or not at all."""
        log.info("SIGHUP: reloading the settings")
        current = self.gateway.live.settings
        try:
            loaded = await asyncio.to_thread(load_settings, current.profile, current.profile_dir)
            # The listener stays; everything else is applied.
            settings = replace(loaded, host=self.bound.host, port=self.bound.port)
            relay = _new_relay(settings, self.gateway)
        except Exception as exc:  # whatever it is, the settings in force stay
            message = (
                exc.message if isinstance(exc, HermesError) else f"{type(exc).__name__}: {exc}"
            )
            await self._rejected(current, one_line(message))
            return
        self.answered += 1
        old = self.gateway.live
        self.gateway.live = Live(settings, relay)
        old.retire()
        if self.on_applied is not None:
            self.on_applied(settings)
        restart = listener_change(self.bound, loaded)
        await asyncio.to_thread(self._record_applied, settings, restart, self.answered)

    async def _rejected(self, current: Settings, reason: str) -> None:
        log.warning("reload rejected, the settings in force stay: %s", reason)
        self.answered += 1
        await asyncio.to_thread(_record_rejected, current, reason, self.answered)

    @staticmethod
    def _record_applied(settings: Settings, restart: str | None, answered: int) -> None:
        from hermes_container.config_changes import check, event_data
        from hermes_container.gateway.runner import ledger
        from hermes_container.state import write_observed

        try:
            keys = check(settings.profile_dir) or []
        except OSError as exc:  # the reload stands; only the key names are lost
            log.warning("cannot compare the settings with the previous ones: %s", exc)
            keys = []
        data: dict[str, object] = dict(event_data(keys))
        if restart is not None:
            data["restart_needed"] = restart
            log.warning("restart needed: %s", restart)
        log.info("reloaded settings (changed: %s)", ", ".join(keys) or "nothing")
        # The ledger first: whoever waits for `reloads` then finds the event there too.
        ledger(settings, "gateway.reloaded", **data)
        write_observed(
            settings.profile_dir, config_rejected=None, restart_needed=restart, reloads=answered
        )


def _new_relay(settings: Settings, gateway: Gateway) -> Relay:
    from hermes_container.gateway.relay import Relay

    relay = Relay(settings)
    relay.meter = gateway.meter
    return relay


def _record_rejected(settings: Settings, reason: str, answered: int) -> None:
    from hermes_container.gateway.runner import ledger
    from hermes_container.state import write_observed

    ledger(settings, "gateway.reload_rejected", reason=reason)
    write_observed(settings.profile_dir, config_rejected=reason, reloads=answered)


def graceful_timeout(settings: Settings) -> int:
    """uvicorn's whole-second graceful shutdown for gateway.shutdown_grace_s."""
    return math.ceil(settings.shutdown_grace_s)
