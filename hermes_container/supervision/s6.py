"""The s6 backend of ServiceManager: one `gateway-<profile>` slot per profile.

Stable API for the CLI and the dashboard: `S6Manager.start/stop/restart/reload/status(profile)`
(see ServiceManager in protocol.py). Obtain one with `hermes_container.supervision.get_manager`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time
from functools import partial
from pathlib import Path

from hermes_container.errors import HermesError
from hermes_container.events.append import record
from hermes_container.events.desired import set_desired
from hermes_container.home import HermesHome
from hermes_container.profiles import require_profile
from hermes_container.supervision import history
from hermes_container.supervision.scandir import GATEWAY_PREFIX, slot_name, wait_until
from hermes_container.supervision.service_status import (
    MANAGER_NAME,
    ServiceStatus,
    gateway_status,
)
from hermes_container.supervision.slot import SlotSpec, build_slot, gateway_spec
from hermes_container.supervision.svstat import svstat
from hermes_container.supervision.tools import run_tool

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

SVOK_TIMEOUT = 5.0  # s6-svscan spawns s6-supervise within milliseconds of a rescan
POLL = 0.05
RESCAN_BATCH = 8  # slots written per `s6-svscanctl -a` when registering many


class S6Manager:
    name = MANAGER_NAME

    def __init__(self, home: HermesHome, scandir: Path) -> None:
        self.home = home
        self.scandir = scandir

    # -- slots ---------------------------------------------------------------

    def slot_dir(self, profile: str) -> Path:
        return self.scandir / slot_name(profile)

    def is_registered(self, profile: str) -> bool:
        return self.slot_dir(profile).is_dir()

    def _supervised(self, service_dir: Path) -> bool:
        return run_tool("s6-svok", str(service_dir), check=False).returncode == 0

    def _unsupervised(self, service_dir: Path) -> bool:
        return not self._supervised(service_dir)

    def rescan(self, *, prune: bool = False) -> None:
        run_tool("s6-svscanctl", "-an" if prune else "-a", str(self.scandir))

    def _wait_supervised(self, dirs: list[Path]) -> None:
        """Wait until s6-supervise runs on each new slot and its logger.

        A fresh s6-supervise writes supervise/status as soon as it starts; polling for
        that file costs no exec, and s6-svok then confirms each slot once.
        """
        paths = [p for d in dirs for p in (d, d / "log")]
        pending = list(paths)

        def all_started() -> bool:
            pending[:] = [p for p in pending if not (p / "supervise" / "status").exists()]
            return not pending

        if not wait_until(all_started, SVOK_TIMEOUT, interval=0.01):
            raise HermesError(f"s6-svscan did not pick up {pending[0]} within {SVOK_TIMEOUT:g}s")
        for path in dirs:
            if not wait_until(partial(self._supervised, path), SVOK_TIMEOUT):
                raise HermesError(f"s6-supervise is not running on {path}")

    def register(self, profiles: Iterable[str]) -> dict[str, str | None]:
        """Give every profile its slot, down (idempotent); per-profile error or None."""
        errors: dict[str, str | None] = {}
        specs = []
        for profile in profiles:
            errors[profile] = None
            try:
                if not self.is_registered(profile):
                    specs.append(gateway_spec(self.home, profile))
            except HermesError as exc:
                errors[profile] = exc.message
        for name, error in self.register_slots(specs).items():
            errors[name.removeprefix(GATEWAY_PREFIX)] = error
            if error is None:
                record(self.home.root, "slot.registered", profile=name.removeprefix(GATEWAY_PREFIX))
        # Registered a moment ago, maybe by a concurrent CLI: let s6-svscan catch up.
        fresh = [
            self.slot_dir(p)
            for p, error in errors.items()
            if error is None and not (self.slot_dir(p) / "supervise" / "status").exists()
        ]
        if fresh:
            self._wait_supervised(fresh)
        return errors

    def register_slots(self, specs: list[SlotSpec], *, up: bool = False) -> dict[str, str | None]:
        """Render each slot (normally up with `up`), then wait until all are supervised;
        per-slot error or None, by slot name. A slot someone else registered meanwhile
        counts as registered.

        A rescan goes out after every RESCAN_BATCH new slots, so s6-svscan starts their
        supervisors while the next ones are written; then one wait covers them all.
        """
        errors: dict[str, str | None] = {}
        built: list[Path] = []
        for index, spec in enumerate(specs, 1):
            errors[spec.name] = None
            try:
                built.append(build_slot(self.scandir, self.home, spec, start=up))
            except (HermesError, OSError) as exc:
                if not (self.scandir / spec.name).is_dir():
                    errors[spec.name] = str(exc)
            if index % RESCAN_BATCH == 0 or index == len(specs):
                self.rescan()
        if built:
            self._wait_supervised(built)
        return errors

    def _register_one(self, profile: str) -> None:
        error = self.register([profile])[profile]
        if error is not None:
            raise HermesError(error)

    def remove_orphan_slots(self, profiles: list[str]) -> list[str]:
        """Take down slots whose profile no longer exists (deleted behind our back)."""
        wanted = {slot_name(p) for p in profiles}
        removed = []
        for entry in sorted(self.scandir.iterdir()):
            if entry.name.startswith(GATEWAY_PREFIX) and entry.name not in wanted:
                self.remove_slot(entry)
                removed.append(entry.name)
        return removed

    def unregister(self, profile: str, *, timeout: float = 15.0) -> None:
        """Take the slot down (`s6-svc -wD -d`), remove it, `s6-svscanctl -an`."""
        self.remove_slot(self.slot_dir(profile), timeout=timeout)

    def remove_slot(self, service_dir: Path, *, timeout: float = 15.0) -> None:
        if not service_dir.is_dir():
            return
        if self._supervised(service_dir):
            ms = str(int(timeout * 1000))
            run_tool("s6-svc", "-wD", "-T", ms, "-d", str(service_dir), timeout=timeout + 5)
        # Out of the scanner's sight first, so a crash here leaves only a dot-dir.
        doomed = self.scandir / f".{service_dir.name}.del-{os.urandom(4).hex()}"
        os.rename(service_dir, doomed)
        self.rescan(prune=True)
        for path in (doomed, doomed / "log"):
            wait_until(partial(self._unsupervised, path), SVOK_TIMEOUT)
        shutil.rmtree(doomed, ignore_errors=True)
        if service_dir.name.startswith(GATEWAY_PREFIX):
            profile = service_dir.name.removeprefix(GATEWAY_PREFIX)
            record(self.home.root, "slot.removed", profile=profile)

    # -- lifecycle -------------------------------------------------------------

    def _desire(self, profile: str, desired: str) -> None:
        require_profile(self.home, profile)
        set_desired(self.home, profile, desired)

    def _set_normally_up(self, profile: str, up: bool) -> None:
        # The `down` file decides what a respawned s6-supervise does; keep it in step
        # with the desired state, so a restarted supervisor never drops a gateway.
        down = self.slot_dir(profile) / "down"
        if up:
            with contextlib.suppress(FileNotFoundError):
                down.unlink()
        else:
            down.touch()

    def _prepare_up(self, profile: str) -> Path:
        """An explicit start forgives a park and earlier crashes; `down` goes."""
        slot = self.slot_dir(profile)
        history.unpark(slot)
        history.clear_deaths(slot)
        self._set_normally_up(profile, True)
        return slot

    def up(self, profiles: list[str], *, stagger: float = 0.0) -> dict[str, str | None]:
        """Bring registered slots up; per-profile error or None. The one start path, for
        the CLI, the dashboard and boot alike.

        Every slot is prepared before the first `u`: from then on gateways share the CPU.
        The `u` goes straight to each slot's control FIFO, as s6-svc would send it, with
        no exec per slot (and s6-svc before s6 2.12 takes a single service dir per call).
        `stagger` seconds pass between two starts.
        """
        slots = [self._prepare_up(profile) for profile in profiles]
        errors: dict[str, str | None] = dict.fromkeys(profiles)
        for index, (profile, slot) in enumerate(zip(profiles, slots, strict=True)):
            if index and stagger:
                time.sleep(stagger)
            try:
                send_control(slot, "u")
            except HermesError as exc:
                errors[profile] = exc.message
        return errors

    def _up_one(self, profile: str) -> None:
        error = self.up([profile])[profile]
        if error is not None:
            raise HermesError(error)

    def start(self, profile: str, *, wait: float | None = None) -> ServiceStatus:
        self._desire(profile, "running")
        self._register_one(profile)  # e.g. a profile created on the host, files only
        self._up_one(profile)
        return self.wait_ready(profile, wait) if wait else self.status(profile)

    def stop(self, profile: str, *, wait: float | None = None) -> ServiceStatus:
        self._desire(profile, "stopped")
        if self.is_registered(profile):
            self._set_normally_up(profile, False)
            send_control(self.slot_dir(profile), "d")
            if wait:
                return self.wait_down(profile, wait)
        return self.status(profile)

    def restart(self, profile: str, *, wait: float | None = None) -> ServiceStatus:
        self._desire(profile, "running")
        self._register_one(profile)
        before = svstat(str(self.slot_dir(profile)))
        slot = self._prepare_up(profile)
        if before.up:
            history.request_restart(slot)
        send_control(slot, "tu" if before.up else "u")  # what `s6-svc -t -u` writes
        old_pid = before.pid if before.up else None
        return self.wait_ready(profile, wait, old_pid=old_pid) if wait else self.status(profile)

    def reload(self, profile: str) -> None:
        """Ask the running gateway to re-read its settings: SIGHUP through its supervisor
        (what `s6-svc -h` writes). Only once it is ready: until its server is up the
        process may still be the run script's shell, which a SIGHUP would kill."""
        require_profile(self.home, profile)
        slot = self.slot_dir(profile)
        if not slot.is_dir():
            raise HermesError(f"profile {profile!r} has no slot in the supervised tree")
        try:
            st = svstat(str(slot))
        except (HermesError, ValueError):
            raise HermesError(f"the slot of profile {profile!r} is not supervised yet") from None
        if not st.up:
            raise HermesError(f"the gateway of profile {profile!r} is not running")
        if not st.ready:
            raise HermesError(
                f"the gateway of profile {profile!r} is still starting; "
                "it reads its settings as it starts, reload once it is ready"
            )
        send_control(slot, "h")

    def wait_ready(
        self, profile: str, timeout: float, *, old_pid: int | None = None
    ) -> ServiceStatus:
        """Poll until up and ready (with a pid other than `old_pid`), parked, or timeout."""
        slot = self.slot_dir(profile)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = svstat(str(slot))
            if st.up and st.ready and st.pid != old_pid:
                break
            if not st.up and history.parked_reason(slot) is not None:
                break
            time.sleep(POLL)
        return self.status(profile)

    def wait_down(self, profile: str, timeout: float) -> ServiceStatus:
        """Poll until down and finish has run (s6 reports `ready` once finish is over)."""
        slot = str(self.slot_dir(profile))
        wait_until(partial(_down_and_finished, slot), timeout, POLL)
        return self.status(profile)

    # -- inspection ------------------------------------------------------------

    def status(self, profile: str) -> ServiceStatus:
        return gateway_status(self.home, self.scandir, profile)


def send_control(service_dir: Path, command: str) -> None:
    """Write `command` (s6-svc's one-letter commands: u, d, ...) to supervise/control.

    Opening the FIFO without blocking fails with ENXIO when no s6-supervise reads it,
    which is how s6-svc itself tells that nobody supervises the directory.
    """
    control = service_dir / "supervise" / "control"
    try:
        fd = os.open(control, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        missing = exc.errno in (errno.ENXIO, errno.ENOENT)
        reason = "supervisor not listening" if missing else exc.strerror
        raise HermesError(f"cannot control {service_dir}: {reason}") from None
    try:
        os.write(fd, command.encode("ascii"))
    except BlockingIOError:
        raise HermesError(f"cannot control {service_dir}: its supervisor is not reading") from None
    finally:
        os.close(fd)


def _down_and_finished(service_dir: str) -> bool:
    return svstat(service_dir).down_and_finished
