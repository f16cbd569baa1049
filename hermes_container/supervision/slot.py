"""Render a `gateway-<profile>` service directory for s6-supervise.

A slot is assembled in a dot-prefixed temp dir (s6-svscan ignores those) and renamed
into place, so the scanner never sees a half-written slot. The scripts are POSIX sh
(checked by shellcheck): when s6-supervise runs them as root they drop to the owner
of $HERMES_HOME, so gateways, their state files and their logs belong to that user.
Every script starts with `umask 077` (transcripts, state and logs are private to that
user) and drops the variables no gateway may see (hermes_container.gateway.environment).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hermes_container.errors import HermesError
from hermes_container.gateway.environment import render_sh as render_env_deny
from hermes_container.home import HermesHome
from hermes_container.supervision.scandir import slot_name
from hermes_container.supervision.tools import require_tool

# Leftovers of interrupted registrations.
TEMP_PREFIXES = (".gateway-", ".dashboard.", ".dispatcher.", ".ingress.")
NOTIFICATION_FD = 3
FINISH_TIMEOUT_MS = 5000
LOG_SCRIPT = "s6-log 1 n10 s1000000 T"  # `1` tees to stdout, so `docker logs` sees it
CONTAINER_ENV = "/run/s6/container_environment"  # s6-overlay keeps the container env here
NO_PROXY = "127.0.0.1,localhost"
ENV_DIR = "env"  # a slot's own variables (SlotSpec.env), relative to the service dir


def hermes_bin() -> str:
    """Absolute path of this install's `hermes` (HERMES_BIN overrides)."""
    override = os.environ.get("HERMES_BIN", "").strip()
    if override:
        return os.path.abspath(override)
    beside = Path(sys.executable).parent / "hermes"
    if os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("hermes")
    if found:
        return os.path.abspath(found)
    raise HermesError("cannot find the `hermes` executable; set HERMES_BIN to its absolute path")


def no_proxy_with_loopback(existing: str | None) -> str:
    """Loopback first, then whatever bypass list the operator already had."""
    return f"{NO_PROXY},{existing}" if existing else NO_PROXY


def _preamble(home: HermesHome, what: str) -> str:
    """Common head: private files, container env (s6-overlay) minus what gateways must
    not see, stderr into the log, HOME and no proxy."""
    q = shlex.quote
    envdir = require_tool("s6-envdir")
    return f"""#!/bin/sh
# {what}: rendered by hermes (hermes_container.supervision.slot); edits are overwritten.
exec 2>&1
# A reload (`s6-svc -h`) that lands while the slot starts must not kill it: ignored from
# here, through the execs, until the gateway installs its own SIGHUP handler.
trap '' HUP
# What the gateway and s6-log create (sessions.db, logs, state) is the owner's alone;
# the dashboard and the CLI run as that same user.
umask 077
# Under s6-overlay services start with an empty environment; import the container's.
if [ -z "${{HERMES_SLOT_ENV:-}}" ] && [ -d {CONTAINER_ENV} ]; then
  HERMES_SLOT_ENV=1
  export HERMES_SLOT_ENV
  exec {q(envdir)} -Lfn {CONTAINER_ENV} "$0" "$@"
fi
{render_env_deny()}HERMES_HOME={q(str(home.root))}
HOME="$HERMES_HOME"
# Loopback health checks never go through a proxy; an operator's own list is kept.
NO_PROXY="{NO_PROXY}${{NO_PROXY:+,$NO_PROXY}}"
no_proxy="{NO_PROXY}${{no_proxy:+,$no_proxy}}"
PYTHONUNBUFFERED=1
export HERMES_HOME HOME NO_PROXY no_proxy PYTHONUNBUFFERED
"""


def _drop_and_exec() -> str:
    """Exec "$@", as the owner of $HERMES_HOME when we are root (never a named user)."""
    applyuidgid = shlex.quote(require_tool("s6-applyuidgid"))
    return f"""if [ "$(id -u)" = 0 ]; then
  owner=$(stat -c '%u:%g' "$HERMES_HOME") || exit 111
  exec {applyuidgid} -u "${{owner%:*}}" -g "${{owner#*:}}" -G '' "$@"
fi
exec "$@"
"""


def render_run(home: HermesHome, argv: list[str], what: str) -> str:
    command = " ".join(shlex.quote(a) for a in argv)
    return _preamble(home, what) + f"set -- {command}\n" + _drop_and_exec()


def gateway_argv(profile: str) -> list[str]:
    return [
        hermes_bin(),
        "-p",
        profile,
        "gateway",
        "run",
        "--supervised",
        "--notify-fd",
        str(NOTIFICATION_FD),
    ]


def render_finish(home: HermesHome, profile: str) -> str:
    # s6-supervise passes the exit code (256 if killed) and the signal number.
    hermes = shlex.quote(hermes_bin())
    return (
        _preamble(home, f"{slot_name(profile)} finish")
        + f'set -- {hermes} _slot-finish {shlex.quote(profile)} "${{1:-0}}" "${{2:-0}}"\n'
        + _drop_and_exec()
    )


def render_log_run(home: HermesHome, log_dir: Path, what: str) -> str:
    s6_log = require_tool("s6-log")
    argv = [s6_log, *LOG_SCRIPT.split()[1:], str(log_dir)]
    return render_run(home, argv, what)


def _precreate_control(service_dir: Path) -> None:
    """Create supervise/ (0700), its control FIFO (0600) and event/ (03730) as s6-supervise
    would: they exist from the moment the slot is renamed into place, so `up` can write
    to the FIFO as soon as s6-supervise reads it."""
    supervise = service_dir / "supervise"
    supervise.mkdir(mode=0o700)
    os.mkfifo(supervise / "control", 0o600)
    event = service_dir / "event"
    event.mkdir()
    # s6's own fifodir mode; mkdir's mode would be masked by the umask.
    os.chmod(event, 0o3730)  # noqa: S103


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    # Plain writes: the whole slot becomes visible at once by the directory rename.
    # os-level (create, fchmod past the umask, write, close): half the syscalls and a
    # fraction of the time of a text-mode open, six times per slot.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        data = text.encode("utf-8")
        while data:
            data = data[os.write(fd, data) :]
    finally:
        os.close(fd)


def _write_envdir(directory: Path, env: Mapping[str, str]) -> None:
    """s6-envdir's format, one file per variable; private, as values may be secrets.

    s6-envdir unsets a variable whose file is empty: for settings, the same as empty.
    """
    directory.mkdir(mode=0o700)
    for name, value in env.items():
        if name.isascii() and name.isidentifier():  # a file name that cannot escape
            _write(directory / name, value, 0o600)


def ensure_log_dir(log_dir: Path) -> None:
    log_dir.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class SlotSpec:
    """What to supervise: the name in the scandir, the argv of `run`, and extras."""

    name: str
    run_argv: list[str]
    log_dir: Path
    finish: str | None = None  # rendered finish script
    notification_fd: int | None = NOTIFICATION_FD
    # Variables for this slot alone, kept in its env/ (0700) and imported by s6-envdir
    # right before the program: the host-mode dashboard's own settings, which the
    # tree's filtered environment no longer carries.
    env: Mapping[str, str] | None = None


def gateway_spec(home: HermesHome, profile: str) -> SlotSpec:
    return SlotSpec(
        name=slot_name(profile),
        run_argv=gateway_argv(profile),
        log_dir=home.gateway_log_dir(profile),
        finish=render_finish(home, profile),
    )


def _refuse_root_in_a_home_it_does_not_own(home: HermesHome) -> None:
    """Root writing slots and log directories in a home another user owns would follow
    paths that user can change; the CLI and `hermes supervise` become the owner first."""
    if os.geteuid() != 0:
        return
    owner = os.stat(home.root).st_uid
    if owner != 0:
        raise HermesError(
            f"refusing to register a slot as root in {home.root}, which uid {owner} owns: "
            "run as that user"
        )


def build_slot(scandir: Path, home: HermesHome, spec: SlotSpec, *, start: bool) -> Path:
    """Assemble the slot in a dot-prefixed temp dir and rename it into place.

    Returns the final path. Raises HermesError if a slot of that name already exists.
    The caller makes the renames durable with one fsync of the scandir for all the
    slots it registers (S6Manager.register_slots): a directory fsync is a journal
    commit, 5-25 ms on the bench machine's ext4, and used to be paid once per slot.
    """
    final = scandir / spec.name
    if final.exists():
        raise HermesError(f"slot {final} already exists")
    _refuse_root_in_a_home_it_does_not_own(home)
    ensure_log_dir(spec.log_dir)
    temp = scandir / f".{spec.name}.tmp-{os.urandom(4).hex()}"
    temp.mkdir(mode=0o755)
    try:
        run_argv = spec.run_argv
        if spec.env:
            _write_envdir(temp / ENV_DIR, spec.env)
            # After the privilege drop and the deny list: read as the owner, kept whole.
            run_argv = [require_tool("s6-envdir"), "-Lfn", ENV_DIR, *run_argv]
        _write(temp / "run", render_run(home, run_argv, f"{spec.name} run"), 0o755)
        if spec.finish is not None:
            _write(temp / "finish", spec.finish, 0o755)
            _write(temp / "timeout-finish", f"{FINISH_TIMEOUT_MS}\n")
        if spec.notification_fd is not None:
            _write(temp / "notification-fd", f"{spec.notification_fd}\n")
        if not start:
            _write(temp / "down", "")
        data = temp / "data"
        data.mkdir(mode=0o755)
        _precreate_control(temp)
        log = temp / "log"
        log.mkdir(mode=0o755)
        log_run = render_log_run(home, spec.log_dir, f"{spec.name} log")
        _write(log / "run", log_run, 0o755)
        _precreate_control(log)
        try:
            os.rename(temp, final)
        except OSError as exc:
            if final.exists():  # a concurrent registration won the race
                raise HermesError(f"slot {final} already exists") from None
            raise HermesError(f"cannot register {final}: {exc.strerror}") from None
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return final


def remove_temp_slots(scandir: Path) -> list[str]:
    """Delete leftovers of interrupted registrations/removals; returns their names."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(scandir):
            if entry.name.startswith(TEMP_PREFIXES) and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(entry.name)
    return removed
