"""`hermes supervise [--dashboard]`: the container's supervision tree on a plain host.

One supervisor per HERMES_HOME (flock on $HERMES_HOME/run/supervise.lock; a second one
refuses). Runs s6-svscan on $HERMES_HOME/run/service (or HERMES_S6_SCANDIR), reconciles
every profile, supervises the kanban dispatcher (`hermes kanban daemon`, the image's
`dispatcher` service; HERMES_KANBAN_DISPATCHER=0 leaves it out), the ingress (`hermes
ingress run`, the image's `ingress` service; HERMES_INGRESS=0 leaves it out) and, with
--dashboard, the dashboard; on SIGTERM/SIGINT it brings the whole tree down with `s6-svscanctl -t`.
Desired states are left alone, so the next `hermes supervise` restores them.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

from hermes_container.envflags import env_switch
from hermes_container.errors import HermesError
from hermes_container.gateway.environment import dashboard_variables, filtered
from hermes_container.home import HermesHome
from hermes_container.privileges import drop_to_home_owner
from hermes_container.supervision.scandir import (
    GATEWAY_PREFIX,
    resolve_scandir,
    svscan_alive,
    wait_until,
)
from hermes_container.supervision.slot import (
    TEMP_PREFIXES,
    SlotSpec,
    hermes_bin,
    no_proxy_with_loopback,
)
from hermes_container.supervision.tools import require_tool, run_tool

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

SHUTDOWN_TIMEOUT = 60.0
LOCK_NAME = "supervise.lock"
DASHBOARD_SLOT = "dashboard"
DISPATCHER_SLOT = "dispatcher"
# On unless 0|false|no, as in the image (its dispatcher service reads the same switch).
DISPATCHER_SWITCH = "HERMES_KANBAN_DISPATCHER"
KANBAN_PREFIX = "HERMES_KANBAN_"
INGRESS_SLOT = "ingress"
INGRESS_SWITCH = "HERMES_INGRESS"  # on unless 0|false|no, as the image's ingress service
OWN_SLOTS = (DASHBOARD_SLOT, DISPATCHER_SLOT, INGRESS_SLOT)
# Temp dirs of an interrupted registration of these slots (build_slot's `.<name>.tmp-`).
OWN_TEMP_PREFIXES = tuple(f".{name}." for name in OWN_SLOTS)


def take_home_lock(home: HermesHome) -> int:
    """Hold the single-owner lock for this process's lifetime; returns its fd."""
    home.run_dir.mkdir(parents=True, exist_ok=True)
    path = home.run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise HermesError(
            f"another `hermes supervise` (pid {holder}) already supervises {home.root}; "
            "stop it first (one supervisor per HERMES_HOME)"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def render_dashboard_finish() -> str:
    # The decision is `hermes _dashboard-finish`, which the image's dashboard/finish
    # runs too. Only the image has a HERMES_DASHBOARD switch to check first: here the
    # slot exists because --dashboard asked for it.
    return (
        "#!/bin/sh\n"
        "# dashboard finish: rendered by hermes (hermes_container.supervision.host).\n"
        f'exec {shlex.quote(hermes_bin())} _dashboard-finish "${{1:-0}}"\n'
    )


def dashboard_spec(home: HermesHome) -> SlotSpec:
    return SlotSpec(
        name=DASHBOARD_SLOT,
        run_argv=[hermes_bin(), "dashboard"],
        log_dir=home.logs_dir / "dashboard",
        finish=render_dashboard_finish(),
        notification_fd=None,
        # The tree runs without HERMES_DASHBOARD_* (see supervise): only this slot has them.
        env=dashboard_variables(os.environ),
    )


def dispatcher_spec(home: HermesHome) -> SlotSpec:
    """`hermes kanban daemon` in a slot of its own, logged to $HERMES_HOME/logs/dispatcher.

    No finish script: s6-supervise restarts it whatever the exit (a kill -9 loses
    nothing: the next dispatcher hands a dead one's runs back to the board). Its
    HERMES_KANBAN_* settings come back through the slot's env/, so an operator may keep
    HERMES_KANBAN_DATABASE_URL from the gateways (HERMES_GATEWAY_ENV_DENY) and the
    dispatcher still reaches a shared board.
    """
    return SlotSpec(
        name=DISPATCHER_SLOT,
        run_argv=[hermes_bin(), "kanban", "daemon"],
        log_dir=home.logs_dir / DISPATCHER_SLOT,
        finish=None,
        notification_fd=None,
        env={k: v for k, v in os.environ.items() if k.startswith(KANBAN_PREFIX)},
    )


def render_ingress_finish() -> str:
    # As the image's ingress/finish: a configuration error (exit 78, say an unreadable
    # HERMES_INGRESS_KEY_FILE) parks the slot instead of restart-looping over its message.
    return (
        "#!/bin/sh\n"
        "# ingress finish: rendered by hermes (hermes_container.supervision.host).\n"
        '[ "${1:-0}" = 78 ] && exit 125\n'
        "exit 0\n"
    )


def ingress_spec(home: HermesHome) -> SlotSpec:
    """`hermes ingress run` in a slot of its own, logged to $HERMES_HOME/logs/ingress.

    On a host it listens on $HERMES_INGRESS_HOST, else loopback (the image: every
    interface). Its HERMES_INGRESS_* settings travel in the slot's env/.
    """
    return SlotSpec(
        name=INGRESS_SLOT,
        run_argv=[hermes_bin(), "ingress", "run"],
        log_dir=home.logs_dir / INGRESS_SLOT,
        finish=render_ingress_finish(),
        notification_fd=None,
        env={k: v for k, v in os.environ.items() if k.startswith(f"{INGRESS_SWITCH}_")},
    )


def _fresh_scandir(scandir: Path) -> None:
    """Drop what an earlier run left (we hold the lock; no svscan runs here).

    Only our own entries go: the scandir may be a directory the user pointed us at.
    """
    scandir.mkdir(parents=True, mode=0o755, exist_ok=True)
    for entry in scandir.iterdir():
        ours = entry.name in (".s6-svscan", *OWN_SLOTS) or (
            entry.name.startswith((GATEWAY_PREFIX, *TEMP_PREFIXES, *OWN_TEMP_PREFIXES))
        )
        if ours and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)


def supervise(home: HermesHome, *, say: Callable[[str], None], dashboard: bool = False) -> int:
    """Run the tree until SIGTERM/SIGINT; `say` gets what the user should see as it
    happens (the privilege drop, then what is supervised)."""
    from hermes_container.profiles import ensure_default_profile
    from hermes_container.reconcile import reconcile

    dispatcher = env_switch(DISPATCHER_SWITCH)
    ingress = env_switch(INGRESS_SWITCH)
    dropped = drop_to_home_owner(home.root)
    if dropped is not None:
        say(
            f"hermes: running the tree as uid {dropped[0]}, gid {dropped[1]}: "
            f"the owner of {home.root}"
        )
    scandir = resolve_scandir(home)
    live = scandir.is_dir() and svscan_alive(scandir)
    already = f"an s6-svscan already runs on {scandir}; this tree is supervised"
    # Inside a tree that no `hermes supervise` owns (the image, a hand-started svscan),
    # refuse before writing anything; another supervisor is named by its lock below.
    if live and not (home.run_dir / LOCK_NAME).exists():
        raise HermesError(already)
    ensure_default_profile(home)
    lock_fd = take_home_lock(home)
    if live:
        os.close(lock_fd)
        raise HermesError(already)
    _fresh_scandir(scandir)
    tree_env = {
        "HERMES_HOME": str(home.root),
        "HERMES_S6_SCANDIR": str(scandir),
        "NO_PROXY": no_proxy_with_loopback(os.environ.get("NO_PROXY")),
        "no_proxy": no_proxy_with_loopback(os.environ.get("no_proxy")),
    }
    os.environ.update(tree_env)  # for the in-process reconcile and everything it spawns
    watched = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    svscan = subprocess.Popen(
        [require_tool("s6-svscan"), str(scandir)],
        # Without the dashboard's secrets or HERMES_GATEWAY_ENV_DENY's names: nothing
        # in the tree (supervisors, loggers, gateways) holds what gateways must not see.
        env=filtered(os.environ),
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C reaches us, and we stop the tree in order
    )
    try:
        if not wait_until(lambda: svscan_alive(scandir), 5.0):
            raise HermesError(f"s6-svscan did not start on {scandir}")
        records = reconcile(home)
        # After the gateways: the dispatcher's first tick finds them up.
        specs = [dispatcher_spec(home)] if dispatcher else []
        if ingress:
            specs.append(ingress_spec(home))
        if dashboard:
            specs.append(dashboard_spec(home))
        if specs:
            from hermes_container.supervision.s6 import S6Manager

            errors = S6Manager(home, scandir).register_slots(specs, up=True)
            for name, error in errors.items():
                if error is not None:
                    say(f"hermes: warning: the {name} is not supervised: {error}")
        started = sum(r.action == "started" for r in records)
        extras = "" if dispatcher else f"; the kanban dispatcher is off ({DISPATCHER_SWITCH})"
        extras += "" if ingress else f"; the ingress is off ({INGRESS_SWITCH})"
        say(
            f"hermes: supervising {len(records)} profile(s) ({started} started) on {scandir}"
            f"{extras}; SIGTERM or Ctrl-C stops the tree"
        )
        while svscan.poll() is None:
            received = signal.sigtimedwait(watched, 1.0)
            if received is not None and received.si_signo != signal.SIGCHLD:
                break
        else:
            raise HermesError(f"s6-svscan exited unexpectedly ({svscan.returncode})")
        return 0
    finally:
        _shutdown(svscan, scandir)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, watched)
        os.close(lock_fd)


def _shutdown(svscan: subprocess.Popen[bytes], scandir: Path) -> None:
    """Bring every service down and wait for s6-svscan to exit (bounded)."""
    if svscan.poll() is None:
        run_tool("s6-svscanctl", "-t", str(scandir), check=False)
        try:
            svscan.wait(timeout=SHUTDOWN_TIMEOUT)
        except subprocess.TimeoutExpired:
            svscan.kill()
            svscan.wait()
