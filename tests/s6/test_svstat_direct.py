"""supervise/status read directly agrees with the real `s6-svstat`, state by state.

A live s6-svscan supervises small sh services driven by real s6-svc commands; in each
state the direct reading (svstat.read_status) must equal what `s6-svstat -o` prints
(svstat.spawn_svstat), field by field (the seconds counter may tick between the two).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hermes_container.errors import HermesError
from hermes_container.supervision.svstat import SvStat, read_status, spawn_svstat, svstat
from tests.s6.conftest import make_base, require_s6, wait_for


class Scan:
    def __init__(self, base: Path) -> None:
        self.scandir = base / "service"
        self.scandir.mkdir()
        self.proc = subprocess.Popen(
            ["s6-svscan", str(self.scandir)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        control = self.scandir / ".s6-svscan" / "control"
        wait_for(lambda: _has_reader(control), what="s6-svscan's control FIFO")

    def add(self, name: str, run: str, *, finish: str | None = None, down: bool = False) -> str:
        """Write a service (in a dot dir, renamed in: s6-svscan ignores dot dirs), rescan,
        and wait for its supervisor (and for the service to be up, unless `down`)."""
        temp = self.scandir / f".{name}"
        temp.mkdir()
        for script, body in (("run", run), ("finish", finish)):
            if body is not None:
                (temp / script).write_text("#!/bin/sh\n" + body + "\n")
                (temp / script).chmod(0o755)
        if "&3" in run:
            (temp / "notification-fd").write_text("3\n")
        (temp / "timeout-finish").write_text("30000\n")
        if down:
            (temp / "down").touch()
        service = self.scandir / name
        temp.rename(service)
        subprocess.run(["s6-svscanctl", "-a", str(self.scandir)], check=True)
        status = service / "supervise" / "status"
        wait_for(lambda: _supervised(service) and status.exists(), what=f"{name}'s supervisor")
        if not down:
            wait_for(lambda: spawn_svstat(str(service)).up, what=f"{name} up")
        return str(service)

    def close(self) -> None:
        subprocess.run(["s6-svscanctl", "-t", str(self.scandir)], check=False)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _has_reader(fifo: Path) -> bool:
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        return False
    return True


def _supervised(service: Path) -> bool:
    return subprocess.run(["s6-svok", str(service)], check=False).returncode == 0


@pytest.fixture
def scan() -> Iterator[Scan]:
    require_s6()
    base = make_base()
    s = Scan(base)
    try:
        yield s
    finally:
        s.close()
        shutil.rmtree(base, ignore_errors=True)


def svc(service: str, *flags: str) -> None:
    subprocess.run(["s6-svc", *flags, service], check=True)


def agree(service: str) -> SvStat:
    """The direct reading, once it equals s6-svstat's (the state may be moving)."""

    def same() -> SvStat | None:
        direct = read_status(service)
        if direct is None:  # e.g. a supervisor that has not written its first status
            return None
        spawned = spawn_svstat(service)
        seconds_apart = abs(direct.updown_for - spawned.updown_for)
        direct.updown_for = spawned.updown_for = 0.0
        return direct if direct == spawned and seconds_apart <= 1 else None

    found: SvStat = wait_for(same, what=f"the same status of {service} both ways")
    return found


def test_up_then_ready_then_paused(scan: Scan) -> None:
    service = scan.add("plain", "exec sleep 1000")
    # Seconds up as s6-svstat counts them (TAI stamps against the UTC clock).
    wait_for(lambda: spawn_svstat(service).updown_for >= 2, what="two seconds up")
    direct = read_status(service)
    assert direct is not None and direct.updown_for >= 2
    plain = agree(service)
    assert plain.up and plain.pid and not plain.ready and plain.wanted_up and plain.normally_up
    service = scan.add("notify", "printf '\\n' >&3\nexec sleep 1000")
    wait_for(lambda: spawn_svstat(service).ready, what="readiness")
    ready = agree(service)
    assert ready.up and ready.ready and ready.exit_code is None and ready.signal is None
    svc(service, "-p")
    wait_for(lambda: spawn_svstat(service).paused, what="paused")
    assert agree(service).paused
    svc(service, "-c")
    wait_for(lambda: not spawn_svstat(service).paused, what="continued")
    assert not agree(service).paused


def test_down_by_signal_with_exit_code_and_normally_down(scan: Scan) -> None:
    service = scan.add("term", "exec sleep 1000")
    svc(service, "-d")
    wait_for(lambda: spawn_svstat(service).signal == 15, what="down by SIGTERM")
    down = agree(service)
    assert down.signal == 15 and down.exit_code is None and not down.wanted_up
    assert down.pid is None and down.down_and_finished

    once = scan.add("once", "exit 3", down=True)
    before = agree(once)
    assert not before.up and not before.normally_up and not before.wanted_up
    svc(once, "-o")  # up once, no restart when it exits
    wait_for(lambda: spawn_svstat(once).exit_code == 3, what="exit 3 recorded")
    exited = agree(once)
    assert exited.exit_code == 3 and exited.signal is None and not exited.up


def test_finishing_while_finish_runs(scan: Scan) -> None:
    marker = Path(scan.scandir.parent) / "finish-may-end"
    finish = f"while [ ! -e {marker} ]; do sleep 0.05; done"
    service = scan.add("slowfinish", "exec sleep 1000", finish=finish)
    svc(service, "-d")
    wait_for(lambda: not spawn_svstat(service).up, what="down")
    during = agree(service)
    assert during.finishing and not during.up and not during.down_and_finished
    marker.touch()
    wait_for(lambda: spawn_svstat(service).down_and_finished, what="finish to end")
    assert agree(service).down_and_finished


def test_without_a_supervisor_both_fail(scan: Scan) -> None:
    service = scan.add("gone", "exec sleep 1000")
    svc(service, "-d")
    wait_for(lambda: spawn_svstat(service).down_and_finished, what="down")
    supervise_pid = _supervisor_pid(service)
    subprocess.run(["s6-svscanctl", "-t", str(scan.scandir)], check=True)
    scan.proc.wait(timeout=20)
    wait_for(lambda: not os.path.exists(f"/proc/{supervise_pid}"), what="s6-supervise to exit")
    with pytest.raises(HermesError, match="not running"):
        read_status(service)
    with pytest.raises(HermesError, match="not running"):
        spawn_svstat(service)


def test_unknown_layout_falls_back_to_s6_svstat(scan: Scan) -> None:
    service = scan.add("odd", "exec sleep 1000")
    st = Path(service) / "supervise" / "status"
    real = st.read_bytes()
    # As if a future s6 wrote a longer record: ours declines, s6-svstat gets the word.
    (Path(service) / "supervise" / "status.odd").write_bytes(real + b"\0" * 9)
    os.replace(Path(service) / "supervise" / "status.odd", st)
    assert read_status(service) is None
    try:
        result = svstat(service)
    except HermesError as exc:  # this s6-svstat cannot read it either: its own words
        assert "s6-svstat" in str(exc)
    else:
        spawned = spawn_svstat(service)
        result.updown_for = spawned.updown_for = 0.0
        assert result == spawned


def _supervisor_pid(service: str) -> int:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if argv[0].endswith(b"s6-supervise") and cwd == service:
            return int(entry)
    raise AssertionError(f"no s6-supervise for {service}")
