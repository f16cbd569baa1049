"""The s6 backend of ServiceManager: one `gateway-<profile>` slot per profile.

Stable API for the CLI and the dashboard: `S6Manager.start/stop/restart/reload/status(profile)`
(see ServiceManager in protocol.py). Obtain one with `hermes_container.supervision.get_manager`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from functools import partial
from pathlib import Path

from hermes_container.errors import HermesError
from hermes_container.events.append import record
from hermes_container.events.desired import set_desired
from hermes_container.fsutil import fsync_dir
from hermes_container.home import HermesHome
from hermes_container.profiles import require_profile
from hermes_container.supervision import history
from hermes_container.supervision.events_batch import record_each
from hermes_container.supervision.scandir import (
    GATEWAY_PREFIX,
    control_fifo,
    has_reader,
    open_control,
    slot_name,
    wait_until,
)
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
SVOK_TIMEOUT_PER_SLOT = 0.05  # ... and a few ms per supervisor on a busy 2-core machine
POLL = 0.05
SUPERVISED_POLL = 0.005  # the one loop that waits for many new supervisors at once
RESCAN_BATCH = 8  # slots written per rescan when registering many


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
        """s6-svok's question without its exec: does an s6-supervise read the control
        FIFO? A FIFO we may not open counts as unsupervised, as s6-svok's failure did."""
        try:
            return has_reader(_control(service_dir))
        except PermissionError:
            return False

    def _unsupervised(self, service_dir: Path) -> bool:
        return not self._supervised(service_dir)

    def rescan(self, *, prune: bool = False) -> None:
        """`s6-svscanctl -a` (`-an` with `prune`), written straight to the scanner's
        control FIFO as s6-svscanctl itself does: no exec per rescan."""
        write_control(control_fifo(self.scandir), "an" if prune else "a", self.scandir)

    def _wait_supervised(self, dirs: list[Path]) -> None:
        """Wait until s6-supervise runs on each new slot and on its logger: one loop over
        all of them, no exec.

        s6-supervise opens supervise/control before it first writes supervise/status,
        so a status file plus a reader on the FIFO is a live supervisor (what s6-svok
        reports); a slot counts once both hold. A round stops at the first one still
        missing: while s6-svscan is busy a round costs one check, not one per slot.
        """
        pending = [p for d in dirs for p in (d, d / "log")]

        def all_started() -> bool:
            while pending:
                path = pending[0]
                if not ((path / "supervise" / "status").exists() and self._supervised(path)):
                    return False
                pending.pop(0)
            return True

        timeout = SVOK_TIMEOUT + SVOK_TIMEOUT_PER_SLOT * len(pending)
        if not wait_until(all_started, timeout, interval=SUPERVISED_POLL):
            raise HermesError(f"s6-supervise is not running on {pending[0]} after {timeout:g}s")

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
        registered: list[tuple[str, dict[str, object]]] = []
        for name, error in self.register_slots(specs).items():
            profile = name.removeprefix(GATEWAY_PREFIX)
            errors[profile] = error
            if error is None:
                registered.append((profile, {}))
        record_each(self.home.root, "slot.registered", registered)
        # Registered a moment ago, maybe by a concurrent CLI, or by a registration killed
        # between its rename and its rescan: ask s6-svscan to look (one FIFO write), then
        # wait for it to catch up.
        fresh = [
            self.slot_dir(p)
            for p, error in errors.items()
            if error is None and not (self.slot_dir(p) / "supervise" / "status").exists()
        ]
        if fresh:
            self.rescan()
            self._wait_supervised(fresh)
        return errors

    def register_slots(self, specs: list[SlotSpec], *, up: bool = False) -> dict[str, str | None]:
        """Render each slot (normally up with `up`), then wait until all are supervised;
        per-slot error or None, by slot name. A slot someone else registered meanwhile
        counts as registered.

        A rescan goes out after every RESCAN_BATCH new slots, so s6-svscan starts their
        supervisors while the next ones are written; one fsync of the scandir makes all
        the renames durable, and one wait covers every supervisor.
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
            fsync_dir(self.scandir)
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

    def prepare_up(self, profiles: list[str]) -> dict[str, str | None]:
        """Everything a start needs but the `u` itself: each slot reset (`_prepare_up`),
        then checked for a listening supervisor. Per-profile error or None; those with
        None are ready for `send_up`."""
        slots = [self._prepare_up(profile) for profile in profiles]
        errors: dict[str, str | None] = {}
        for profile, slot in zip(profiles, slots, strict=True):
            try:
                listening = has_reader(_control(slot))
            except OSError as exc:  # not a FIFO, not ours to open
                errors[profile] = f"cannot control {slot}: {exc.strerror}"
                continue
            errors[profile] = None if listening else _not_listening(slot)
        return errors

    def send_up(self, profiles: list[str], *, stagger: float = 0.0) -> dict[str, str | None]:
        """Write `u` to each prepared slot's control FIFO (what `s6-svc -u` writes, with
        no exec per slot; s6-svc before s6 2.12 takes one service dir per call anyway),
        `stagger` seconds apart; per-profile error or None."""
        errors: dict[str, str | None] = dict.fromkeys(profiles)
        for index, profile in enumerate(profiles):
            if index and stagger:
                time.sleep(stagger)
            try:
                send_control(self.slot_dir(profile), "u")
            except HermesError as exc:
                errors[profile] = exc.message
        return errors

    def up(self, profiles: list[str], *, stagger: float = 0.0) -> dict[str, str | None]:
        """Bring registered slots up; per-profile error or None. The one start path, for
        the CLI, the dashboard and boot alike (boot calls its two halves itself, so its
        records are written before the first gateway competes for the CPU).

        Every slot is prepared before the first `u`: from then on gateways share the CPU.
        `stagger` seconds pass between two starts.
        """
        errors = self.prepare_up(profiles)
        ready = [p for p in profiles if errors[p] is None]
        errors.update(self.send_up(ready, stagger=stagger))
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


def _control(service_dir: Path) -> Path:
    return service_dir / "supervise" / "control"


def _not_listening(service_dir: Path) -> str:
    return f"cannot control {service_dir}: supervisor not listening"


def write_control(fifo: Path, command: str, target: Path) -> None:
    """Write `command` to an s6 control FIFO, as s6-svc and s6-svscanctl do (their
    s6_svc_write): open without blocking, which fails with ENXIO when no s6 process
    reads it, then write the command letters. `target` names the slot or scandir in
    errors."""
    try:
        fd = open_control(fifo)
    except OSError as exc:
        raise HermesError(f"cannot control {target}: {exc.strerror}") from None
    if fd is None:
        raise HermesError(_not_listening(target))
    try:
        os.write(fd, command.encode("ascii"))
    except BlockingIOError:
        raise HermesError(f"cannot control {target}: its supervisor is not reading") from None
    except BrokenPipeError:  # the reader went away between the open and the write
        raise HermesError(_not_listening(target)) from None
    finally:
        os.close(fd)


def send_control(service_dir: Path, command: str) -> None:
    """Write `command` (s6-svc's one-letter commands: u, d, ...) to supervise/control."""
    write_control(_control(service_dir), command, service_dir)


def _down_and_finished(service_dir: str) -> bool:
    return svstat(service_dir).down_and_finished
