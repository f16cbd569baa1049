"""The boot reconciler (`hermes reconcile`, s6-rc oneshot `init-reconcile-profiles`).

One process for all profiles: clean leftovers, apply the declarative profiles file
(HERMES_PROFILES_FILE, declared.py) when there is one, register every profile's slot,
start those whose desired state is `running` (the `default` profile is `running` when it
has no state yet) in one pass (HERMES_GATEWAY_STAGGER spaces the starts), and append one
line per profile to `container-boot.log` (and one about the profiles file). A corrupt
state file or a rejected profiles file is logged and never stops boot.

Order, for speed at 50 profiles: every slot is written and supervised, every start
prepared and its supervisor found listening, the ledger's `boot.reconciled` events (one
append) and the boot log written, and only then the `u`s go out: after the first one,
this process shares the CPU with every booting gateway. A start that is lost after its
record (the supervisor went away meanwhile) is recorded again as `registered`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from hermes_container.envflags import env_switch
from hermes_container.errors import HermesError
from hermes_container.home import (
    GATEWAY_LOCK,
    GATEWAY_PID,
    HermesHome,
)
from hermes_container.procutil import signal_zero
from hermes_container.profiles import list_profiles
from hermes_container.state import GatewayState, desired_or_default, read_state, write_desired
from hermes_container.supervision.events_batch import record_each
from hermes_container.timeutil import utc_now_iso

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hermes_container.supervision.s6 import S6Manager

log = logging.getLogger("hermes.reconcile")

BOOT_LOG_MAX = 256 * 1024
DEFAULT_STAGGER = 0.0
CLEAN_EXIT_STATES = frozenset({"stopped"})
UNCLEAN_EXIT_STATES = frozenset({"starting", "running", "stopping", "crashed", "startup_failed"})


@dataclass(frozen=True)
class BootRecord:
    profile: str
    prior_state: str | None
    action: str  # started | registered | skipped
    prior_exit: str  # clean | unclean | unknown

    def line(self, stamp: str) -> str:
        return (
            f"{stamp} profile={self.profile} prior_state={self.prior_state or 'none'} "
            f"action={self.action} prior_exit={self.prior_exit}"
        )


def stagger_seconds(env: dict[str, str] | None = None) -> float:
    raw = (os.environ if env is None else env).get("HERMES_GATEWAY_STAGGER", "").strip()
    if not raw:
        return DEFAULT_STAGGER
    try:
        value = float(raw)
    except ValueError:
        raise HermesError(f"HERMES_GATEWAY_STAGGER={raw!r} is not a number of seconds") from None
    if value < 0 or value > 60:
        raise HermesError(f"HERMES_GATEWAY_STAGGER={value:g} is outside 0-60 seconds")
    return value


def prior_exit(state: GatewayState) -> str:
    if state.gateway_state in CLEAN_EXIT_STATES:
        return "clean"
    if state.gateway_state in UNCLEAN_EXIT_STATES:
        return "unclean"
    return "unknown"


def remove_stale_runtime_files(profile_dir: Path) -> bool:
    """Drop gateway.pid/gateway.lock unless a live gateway holds the lock; True if removed."""
    lock_path = profile_dir / GATEWAY_LOCK
    pid_path = profile_dir / GATEWAY_PID
    if not lock_path.exists() and not pid_path.exists():
        return False
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = None
        if _pid_alive(pid_path):
            return False
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a live gateway (perhaps unsupervised) owns it: leave it
        for path in (pid_path, lock_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return True
    finally:
        if fd is not None:
            os.close(fd)


def _pid_alive(pid_path: Path) -> bool:
    try:
        pid = int(pid_path.read_text(encoding="utf-8").split()[0])
    except (OSError, ValueError, IndexError):
        return False
    delivered = signal_zero(pid)
    if delivered is None:
        return True  # it exists, just not ours to signal
    return delivered and pid > 1


def append_boot_log(home: HermesHome, lines: list[str]) -> None:
    """Append to container-boot.log; past 256 KiB the old file becomes `.1` (one copy)."""
    path = home.boot_log
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size > BOOT_LOG_MAX:
            os.replace(path, path.with_name(path.name + ".1"))
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("".join(line + "\n" for line in lines))
        fh.flush()
        os.fsync(fh.fileno())


def record_default_desired(profile_dir: Path, state: GatewayState, desired: str | None) -> None:
    """Write down the desired state a profile with no state file got by default (the
    `default` profile on first boot), so `gateway status` and the dashboard show it.

    Only a missing file means first boot: a corrupt one was logged by read_state and is
    not rewritten here.
    """
    if desired is None or state.problem != "missing":
        return
    try:
        write_desired(profile_dir, desired)
    except OSError as exc:
        log.warning("could not record the desired state in %s: %s", profile_dir, exc)


def reconcile(home: HermesHome, *, stagger: float | None = None) -> list[BootRecord]:
    """Bring the live tree in line with every profile's desired state."""
    from hermes_container.supervision import get_manager
    from hermes_container.supervision.scandir import resolve_scandir
    from hermes_container.supervision.slot import remove_temp_slots

    manager = get_manager(home)
    if manager is None:
        raise HermesError(
            f"no live s6-svscan on {resolve_scandir(home)}: nothing to reconcile "
            "(set HERMES_S6_SCANDIR, or use `hermes supervise`)"
        )
    delay = stagger_seconds() if stagger is None else stagger
    for name in remove_temp_slots(manager.scandir):
        log.warning("removed leftover temp slot %s", name)
    if env_switch("HERMES_FIX_MODES"):
        make_home_private(home)
    # Before the states are read: the file may create profiles and set desired states.
    declared_line = _apply_profiles_file(home, manager)

    names = list_profiles(home)
    states: dict[str, GatewayState] = {}
    wants: dict[str, str | None] = {}
    for name in names:
        profile_dir = home.profile_dir(name)
        states[name] = read_state(profile_dir)  # logs a warning when corrupt
        wants[name] = desired_or_default(name, states[name])
        record_default_desired(profile_dir, states[name], wants[name])
        try:
            remove_stale_runtime_files(profile_dir)
        except OSError as exc:
            log.warning("%s: could not remove stale pid/lock files: %s", name, exc)

    try:
        for slot in manager.remove_orphan_slots(names):
            log.warning("removed slot %s: its profile no longer exists", slot)
    except (HermesError, OSError) as exc:
        log.warning("could not remove slots of deleted profiles: %s", exc)
    try:
        errors = manager.register(names)
    except HermesError as exc:
        log.error("registering slots failed: %s", exc)
        errors = {name: exc.message for name in names if not manager.is_registered(name)}

    runnable = [n for n in names if wants[n] == "running" and not errors.get(n)]
    not_started = _prepare_start(manager, runnable)
    records = [
        _boot_record(name, states[name], wants[name], errors.get(name), not_started.get(name))
        for name in names
    ]
    # Written before the first `u`: from then on 50 booting gateways share the CPU with
    # this process, and every millisecond of work left here costs tens of wall-clock
    # milliseconds. A start that is then lost is reported again below.
    _report(home, records, wants, errors, not_started, declared_line)
    starting = [n for n in runnable if n not in not_started]
    lost = _send_starts(manager, starting, delay)
    if lost:  # _boot_record logs each
        records = [
            _boot_record(name, states[name], wants[name], None, lost[name])
            if name in lost
            else record
            for name, record in zip(names, records, strict=True)
        ]
        _report(home, [r for r in records if r.profile in lost], wants, errors, lost, None)
    return records


def _boot_record(
    name: str, state: GatewayState, want: str | None, error: str | None, not_started: str | None
) -> BootRecord:
    action = "registered"
    if error:
        log.error("profile %s skipped: %s", name, error)
        action = "skipped"
    elif not_started:
        log.error("profile %s not started: %s", name, not_started)
    elif want == "running":
        action = "started"
    return BootRecord(name, state.gateway_state, action, prior_exit(state))


def _report(
    home: HermesHome,
    records: list[BootRecord],
    wants: dict[str, str | None],
    errors: dict[str, str | None],
    not_started: dict[str, str],
    declared_line: str | None,
) -> None:
    """One `boot.reconciled` per profile in one ledger append, then the boot log lines."""
    record_each(
        home.root,
        "boot.reconciled",
        [
            (
                r.profile,
                {
                    "desired": wants[r.profile],
                    "action": r.action,
                    "previous_state": r.prior_state,
                    "error": errors.get(r.profile) or not_started.get(r.profile),
                },
            )
            for r in records
        ],
    )
    stamp = utc_now_iso()
    lines = [f"{stamp} {declared_line}"] if declared_line else []
    append_boot_log(home, lines + [r.line(stamp) for r in records])


def _apply_profiles_file(home: HermesHome, manager: S6Manager) -> str | None:
    """declared.apply_at_boot, which reports a bad file itself; anything else that goes
    wrong (an unwritable volume) is logged here, and boot goes on either way."""
    from hermes_container.declared import apply_at_boot, declared_path

    try:
        return apply_at_boot(home, manager)
    except (HermesError, OSError) as exc:
        reason = exc.message if isinstance(exc, HermesError) else str(exc)
        log.error("profiles file not applied: %s", reason)
        return f"profiles_file={declared_path()} result=failed reason={reason}"


def make_home_private(home: HermesHome) -> None:
    """The boot-time mode repair where no root init-volume ran before us (`hermes
    supervise`, `docker run --user`); in the image it finds nothing left to do.
    HERMES_FIX_MODES=0 turns it off here as it does in init-volume."""
    from hermes_container.volume import make_private

    # resolve(): a host's ~/.hermes may itself be a symlink, which the walk never follows;
    # we run as the home's owner here, so resolving it is safe.
    for warning, text in make_private(home.root.resolve()).messages(str(home.root)):
        (log.warning if warning else log.info)(text)


def _prepare_start(manager: S6Manager, profiles: list[str]) -> dict[str, str]:
    """Reset each slot for its start and check its supervisor listens; the reason for
    each that cannot be started."""
    try:
        failed = manager.prepare_up(profiles)
    except (HermesError, OSError) as exc:
        return dict.fromkeys(profiles, str(exc))
    return {name: reason for name, reason in failed.items() if reason}


def _send_starts(manager: S6Manager, profiles: list[str], delay: float) -> dict[str, str]:
    """The `u` to every prepared slot (`delay` seconds apart); the reason for each that
    did not go out (its supervisor went away since `_prepare_start` found it)."""
    try:
        failed = manager.send_up(profiles, stagger=delay)
    except (HermesError, OSError) as exc:
        return dict.fromkeys(profiles, str(exc))
    return {name: reason for name, reason in failed.items() if reason}
