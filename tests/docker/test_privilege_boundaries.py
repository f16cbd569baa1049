"""The image's root/hermes boundary, attacked from inside as uid 10000.

The `svscan-gateways` run script runs as root, and again every time the hermes
s6-svscan exits, which hermes can cause. It must never let hermes point root at a
directory of its choice: these scenarios try exactly that in a running container.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

import pytest

from tests.docker.harness import HERMES_UID, Container, port_answers, volume_files, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

Start = Callable[..., Container]
AS_HERMES = f"{HERMES_UID}:{HERMES_UID}"
ROOT_OWNED = (
    "/opt",
    "/opt/hermes",
    "/opt/hermes/bin",
    "/opt/hermes/bin/hermes",
    "/opt/hermes/libexec",
    "/opt/hermes/libexec/lib.sh",
    "/opt/hermes/.venv/bin",
    "/etc/s6-overlay/s6-rc.d/svscan-gateways/run",
    "/run/hermes",
)
SCANDIR = "/run/hermes/service"

# The pid of the hermes s6-svscan (procps is not in the image: read /proc).
SVSCAN_PID = (
    "for p in /proc/[0-9]*; do "
    '[ "$(cat "$p/comm" 2>/dev/null)" = s6-svscan ] || continue; '
    f'grep -q "^Uid:[[:space:]]*{HERMES_UID}[[:space:]]" "$p/status" 2>/dev/null || continue; '
    'echo "${p#/proc/}"; done'
)


def owners(c: Container, *paths: str) -> dict[str, str]:
    out = c.exec("stat", "-c", "%n %u:%g %a %F", *paths).stdout
    return {line.split()[0]: " ".join(line.split()[1:]) for line in out.splitlines()}


def hermes_svscan(c: Container) -> int | None:
    pids = c.exec("sh", "-c", SVSCAN_PID).stdout.split()
    return int(pids[0]) if len(pids) == 1 else None


def kill_svscan_as_hermes(c: Container) -> int:
    old = hermes_svscan(c)
    assert old is not None, "no hermes s6-svscan"
    c.exec("sh", "-c", f"kill -9 {old}", user=AS_HERMES)
    new = wait_for(
        lambda: (pid := hermes_svscan(c)) not in (None, old) and pid,
        60,
        "root's supervisor to start a new hermes s6-svscan",
    )
    assert isinstance(new, int)
    return new


def assert_root_owned(c: Container) -> None:
    found = owners(c, *ROOT_OWNED)
    for path in ROOT_OWNED:
        owner, mode = found[path].split()[:2]
        assert owner == "0:0", f"{path}: {found[path]}"
        assert int(mode, 8) & 0o022 == 0, f"{path} is writable by others: {found[path]}"
    assert found["/run/hermes"] == "0:0 755 directory"


def test_hermes_cannot_swap_the_scandir_and_gateways_survive(start_container: Start) -> None:
    """The attack of the security issue: swap the scandir for a symlink to a root-owned
    directory, then kill the hermes s6-svscan so root's supervisor re-runs the script."""
    c = start_container()
    c.wait_healthy_gateway(c.port_base, timeout=90)
    assert_root_owned(c)
    assert owners(c, SCANDIR)[SCANDIR] == f"{HERMES_UID}:{HERMES_UID} 755 directory"
    gateway_pid = c.status("default")["pid"]

    swap = c.exec(
        "sh",
        "-c",
        f"mv {SCANDIR} {SCANDIR}.old && ln -s /opt/hermes/bin {SCANDIR}",
        user=AS_HERMES,
        check=False,
    )
    assert swap.returncode != 0, "uid 10000 could rename the scandir"
    assert "Permission denied" in swap.stderr

    kill_svscan_as_hermes(c)
    assert_root_owned(c)
    assert owners(c, SCANDIR)[SCANDIR] == f"{HERMES_UID}:{HERMES_UID} 755 directory"
    # The gateways never went away (their s6-supervise outlive s6-svscan) and are still
    # supervised by the new scanner: a restart through s6 brings a new one up.
    assert port_answers(c.port_base)
    assert c.status("default")["pid"] == gateway_pid
    c.hermes("gateway", "restart", "--timeout", "60")
    st = wait_for(
        lambda: (s := c.status("default"))["ready"] and s["pid"] != gateway_pid and s,
        60,
        "default to come back with a new pid",
    )
    assert st["up"]
    c.wait_healthy_gateway(c.port_base, timeout=30)
    coder = c.exec("hermes", "profile", "create", "coder", "--start").returncode
    assert coder == 0


def test_a_symlink_left_at_the_scandir_is_removed_never_followed(start_container: Start) -> None:
    """Defence in depth: even with /run/hermes handed to hermes (the old layout), the run
    script takes its parent back and replaces a planted symlink instead of following it."""
    c = start_container()
    c.wait_healthy_gateway(c.port_base, timeout=90)
    c.exec("chown", AS_HERMES, "/run/hermes")  # root recreates the pre-fix state
    c.exec(
        "sh",
        "-c",
        f"mv {SCANDIR} {SCANDIR}.old && ln -s /opt/hermes/bin {SCANDIR}",
        user=AS_HERMES,
    )
    kill_svscan_as_hermes(c)
    assert_root_owned(c)
    assert owners(c, SCANDIR)[SCANDIR] == f"{HERMES_UID}:{HERMES_UID} 755 directory"
    shim = c.exec("sh", "-c", "echo pwned > /opt/hermes/bin/hermes", user=AS_HERMES, check=False)
    assert shim.returncode != 0, "uid 10000 could replace the shim root runs"
    assert "s6-svscan" in c.exec("ls", "-a", SCANDIR).stdout.replace(".s6-svscan", "s6-svscan")


def test_gateways_see_no_dashboard_secret_and_the_volume_is_private(
    start_container: Start, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """In the image: a gateway's environment lacks HERMES_DASHBOARD_* and the operator's
    deny list, and nothing in the volume (old files included) is open to other users."""
    volume = tmp_path_factory.mktemp("private-volume")
    os.chmod(volume, 0o755)
    old_log = volume / "logs" / "left-over.log"
    old_log.parent.mkdir()
    old_log.write_text("a transcript\n")
    old_log.chmod(0o644)
    c = start_container(
        volume=volume,
        env={
            "HERMES_DASHBOARD_SECRET_KEY": "dashboard-signing-key-0123456789abcdef",
            "HERMES_GATEWAY_ENV_DENY": "MY_SECRET",
            "MY_SECRET": "operator-secret-value",
        },
    )
    c.wait_healthy_gateway(c.port_base, timeout=90)
    pid = c.status("default")["pid"]
    environ = c.exec("cat", f"/proc/{pid}/environ", user=AS_HERMES).stdout.split("\0")
    names = {entry.partition("=")[0] for entry in environ}
    assert "HERMES_HOME" in names and "PATH" in names
    assert not [n for n in names if n.startswith("HERMES_DASHBOARD_") or n == "MY_SECRET"]
    assert not [e for e in environ if "secret" in e.lower() and "DENY" not in e]
    c.hermes("chat", "hello", check=False)  # writes sessions.db (the reply may fail)
    open_to_others = [
        f"{path} {oct(st.st_mode)}"
        for path, st in volume_files(volume)
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077
    ]
    assert open_to_others == []
