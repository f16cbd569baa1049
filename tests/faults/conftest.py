"""The fault tier: the real-s6 fixtures of tests/s6, plus /proc inspection helpers.

Everything here drives real s6-svscan/s6-supervise/s6-log and real `hermes gateway run`
processes (tests/s6/conftest.py builds the tree, drops privileges like the image when
it runs as root, and fails instead of skipping under HERMES_REQUIRE_S6=1).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.s6.conftest import Tree, booted_tree, tree

__all__ = [
    "GatewayProc",
    "Tree",
    "fault_tree",
    "gateway_processes",
    "listening_inodes",
    "supervisor_dirs",
    "tree",  # the plain real-s6 tree of tests/s6, for the bad-input cases inside a tree
]


@dataclass(frozen=True)
class GatewayProc:
    pid: int
    ppid: int
    profile: str
    listens: bool  # holds a listening TCP socket: it is serving


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def listening_inodes() -> set[str]:
    """Inodes of every LISTEN TCP socket in this network namespace."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        raw = _read(table)
        if raw is None:
            continue
        for line in raw.decode("ascii", "replace").splitlines()[1:]:
            cols = line.split()
            if len(cols) > 9 and cols[3] == "0A":
                inodes.add(cols[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    found: set[str] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[8:-1])
    return found


def gateway_processes(home: Path, *, with_sockets: bool = False) -> list[GatewayProc]:
    """Live (non-zombie) `hermes ... gateway run` processes whose HERMES_HOME is `home`."""
    marker = f"HERMES_HOME={home}".encode()
    listen = listening_inodes() if with_sockets else set()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        environ = _read(f"/proc/{pid}/environ")
        if environ is None or marker not in environ.split(b"\0"):
            continue
        cmdline = _read(f"/proc/{pid}/cmdline")
        stat = _read(f"/proc/{pid}/stat")
        if not cmdline or not stat:
            continue
        fields = stat.decode("ascii", "replace").rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            continue
        words = [w.decode("utf-8", "replace") for w in cmdline.split(b"\0") if w]
        if "gateway" not in words or "run" not in words or "-p" not in words:
            continue
        profile = words[words.index("-p") + 1]
        listens = bool(listen & _socket_inodes(pid)) if with_sockets else False
        found.append(GatewayProc(pid=pid, ppid=int(fields[1]), profile=profile, listens=listens))
    return found


def supervisor_dirs(base: Path) -> dict[int, str]:
    """pid -> service directory (cwd) of every live s6-supervise started under `base`."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        cmdline = _read(f"/proc/{entry}/cmdline")
        if not cmdline or not cmdline.split(b"\0")[0].endswith(b"s6-supervise"):
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if cwd.startswith(str(base)):
            found[int(entry)] = cwd
    return found


@pytest.fixture
def fault_tree() -> Iterator[Tree]:
    """A booted tree whose crash-loop parking never triggers (faults are not a crash loop)."""
    with booted_tree(extra_env={"HERMES_CRASH_LOOP_MAX": "100000"}) as booted:
        yield booted
