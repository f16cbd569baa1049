"""Parsing `s6-svstat -o up,wantedup,...` output, and decoding supervise/status."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hermes_container.errors import HermesError
from hermes_container.supervision.svstat import (
    FIELDS,
    TAI_UTC_OFFSET,
    SvStat,
    decode_status,
    parse_svstat,
    read_status,
)

EARLY = "@400000006b06ca0b115e79ef"
LATE = "@400000006b06ca0b123bcd4f"


def test_fields_are_the_documented_ones() -> None:
    assert FIELDS[:5] == ("up", "wantedup", "normallyup", "ready", "paused")


def test_up_and_ready() -> None:
    st = parse_svstat(f"true true false true false 6572 -1 -1 {EARLY} {LATE} 12\n")
    assert st.up and st.wanted_up and st.ready and st.pid == 6572
    assert st.exit_code is None and st.signal is None and st.updown_for == 12
    assert not st.finishing and not st.down_and_finished


def test_down_after_signal_finish_over() -> None:
    st = parse_svstat(f"false false true false false -1 -1 15 {EARLY} {LATE} 3")
    assert not st.up and st.pid is None and st.signal == 15 and st.exit_code is None
    assert st.down_and_finished


def test_down_while_finish_runs() -> None:
    st = parse_svstat(f"false true true false false -1 78 0 {LATE} {EARLY} 0")
    assert st.exit_code == 78 and st.signal is None and st.finishing


@pytest.mark.parametrize("text", ["", "up", "maybe true false true false 1 2 3 @a @b 4"])
def test_garbage_is_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_svstat(text)


# supervise/status as s6-supervise writes it (s6_svstatus_pack): two TAI64N stamps, the
# pid, (s6 >= 2.12) the pgid, the wait status and a flags byte.
NOW = 1_800_000_000.25
TAI = 1 << 62
PAUSED, FINISHING, WANT_UP, READY = 1, 2, 4, 8


def _status(
    *, pid: int, wstat: int = 0, flags: int = 0, ago: float = 5.0, pgid: int | None = None
) -> bytes:
    stamp_unix = NOW - ago
    whole = int(stamp_unix)
    stamp = (TAI + whole + TAI_UTC_OFFSET).to_bytes(8, "big")
    stamp += int((stamp_unix - whole) * 1e9).to_bytes(4, "big")
    data = stamp + stamp + pid.to_bytes(8, "big")
    if pgid is not None:
        data += pgid.to_bytes(8, "big")
    return data + wstat.to_bytes(2, "big") + bytes([flags])


@pytest.mark.parametrize("pgid", [None, 4242])  # 35-byte and 43-byte layouts
def test_decode_up_and_ready(pgid: int | None) -> None:
    data = _status(pid=4242, flags=WANT_UP | READY, ago=12.7, pgid=pgid)
    assert len(data) == (35 if pgid is None else 43)
    st = decode_status(data, True, NOW)
    assert st == SvStat(
        up=True,
        wanted_up=True,
        normally_up=True,
        ready=True,
        paused=False,
        pid=4242,
        exit_code=None,
        signal=None,
        updown_for=12.0,  # whole seconds, as s6-svstat prints them
        finishing=False,
    )


@pytest.mark.parametrize("pgid", [None, 0])
def test_decode_down_after_exit_and_after_signal(pgid: int | None) -> None:
    exited = decode_status(_status(pid=0, wstat=78 << 8, pgid=pgid), False, NOW)
    assert exited is not None
    assert not exited.up and exited.pid is None and exited.exit_code == 78
    assert exited.signal is None and not exited.wanted_up and not exited.normally_up
    assert exited.down_and_finished
    killed = decode_status(_status(pid=0, wstat=15, flags=WANT_UP, pgid=pgid), True, NOW)
    assert killed is not None
    assert killed.signal == 15 and killed.exit_code is None and killed.wanted_up


def test_decode_finishing_and_paused() -> None:
    # While ./finish runs s6 may record finish's pid: still down, as s6-svstat says.
    finishing = decode_status(_status(pid=777, wstat=1 << 8, flags=FINISHING), True, NOW)
    assert finishing is not None
    assert not finishing.up and finishing.pid is None and finishing.finishing
    assert finishing.exit_code == 1 and not finishing.down_and_finished
    paused = decode_status(_status(pid=9, flags=PAUSED | WANT_UP), True, NOW)
    assert paused is not None and paused.paused and paused.up


def test_decode_clamps_a_stamp_from_the_future() -> None:
    st = decode_status(_status(pid=9, ago=-30.0), True, NOW)
    assert st is not None and st.updown_for == 0.0


@pytest.mark.parametrize("size", [0, 20, 34, 36, 42, 44, 64])
def test_unknown_layouts_are_declined(size: int) -> None:
    assert decode_status(b"\0" * size, True, NOW) is None


def test_a_directory_without_the_lock_file_is_left_to_s6_svstat(tmp_path: Path) -> None:
    (tmp_path / "supervise").mkdir()
    (tmp_path / "supervise" / "status").write_bytes(_status(pid=1))
    assert read_status(str(tmp_path)) is None


def test_an_unlocked_lock_file_means_no_supervisor(tmp_path: Path) -> None:
    (tmp_path / "supervise").mkdir()
    (tmp_path / "supervise" / "lock").touch()
    (tmp_path / "supervise" / "status").write_bytes(_status(pid=1))
    with pytest.raises(HermesError, match="s6-supervise not running"):
        read_status(str(tmp_path))


def test_a_lock_held_by_another_process_means_a_supervisor(tmp_path: Path) -> None:
    """The status file is read once some other process holds the lock, as s6-supervise
    does (a real child process: fcntl locks are per process)."""
    supervise = tmp_path / "supervise"
    supervise.mkdir()
    (supervise / "lock").touch()
    (supervise / "status").write_bytes(_status(pid=31337, flags=WANT_UP, ago=1.0))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys; fd = os.open(sys.argv[1], os.O_RDWR); os.lockf(fd, os.F_LOCK, 0);"
            " print('locked', flush=True); sys.stdin.read()",
            str(supervise / "lock"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        st = read_status(str(tmp_path))
        assert st is not None and st.up and st.pid == 31337 and st.normally_up
        (tmp_path / "down").touch()
        st = read_status(str(tmp_path))
        assert st is not None and not st.normally_up
    finally:
        holder.communicate("")
