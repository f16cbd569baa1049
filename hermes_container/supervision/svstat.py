"""One service's state as `s6-svstat` reports it, read from `supervise/status` itself.

s6-supervise keeps the state of its service in `supervise/status` (a small binary file
it replaces atomically on every change); `s6-svstat` only decodes that file. Decoding it
here saves a process spawn per status: the dashboard's reading of 50 profiles took 70 ms
of CPU with a spawn each, 9 ms without; `gateway status --all` 82 -> 34 ms. The layout,
from s6's s6_svstatus_pack/unpack, as s6 2.11 (Debian 12: 35 bytes) and current s6
(s6-overlay 3.2: 43 bytes, with the pgid) write it:

    offset  size  field
    0       12    TAI64N stamp of the last up/down transition
    12      12    TAI64N stamp of the last readiness change
    24      8     pid, big-endian (0: none)
    32      8     pgid, big-endian (43-byte files only)
    32/40   2     wait status of the last death, big-endian
    34/42   1     flags: 1 paused, 2 finishing (./finish runs), 4 wants up, 8 ready

A file of any other size, or a service directory without `supervise/lock` (what
s6-svstat itself checks to tell that an s6-supervise runs there), falls back to
running `s6-svstat -o ...` and parsing its documented output, as before.
tests/s6/test_svstat_direct.py compares both readings, state by state, against the
installed s6; tests/unit/test_supervision_svstat.py decodes both layouts.
"""

from __future__ import annotations

import errno
import os
import time

from hermes_container.errors import HermesError
from hermes_container.record import Record

FIELDS = (
    "up",
    "wantedup",
    "normallyup",
    "ready",
    "paused",
    "pid",
    "exitcode",
    "signum",
    "updownsince",
    "readysince",
    "updownfor",
)
# Where the wait status and the flags sit, by file size (see the table above).
_LAYOUTS = {35: (32, 34), 43: (40, 42)}
_PAUSED, _FINISHING, _WANT_UP, _READY = 1, 2, 4, 8
# skalibs stamps TAI (2^62 + seconds) from the UTC system clock plus its leap-second
# table: TAI - UTC has been 37 s since 2017 and no further leap second is scheduled.
_TAI_BASE = 1 << 62
TAI_UTC_OFFSET = 37


class SvStat(Record):
    __slots__ = (
        "exit_code",
        "finishing",
        "normally_up",
        "paused",
        "pid",
        "ready",
        "signal",
        "up",
        "updown_for",
        "wanted_up",
    )

    def __init__(
        self,
        up: bool,
        wanted_up: bool,
        normally_up: bool,
        ready: bool,  # up and the daemon notified readiness
        paused: bool,
        pid: int | None,
        exit_code: int | None,  # last exit code when down, None if killed by a signal
        signal: int | None,  # last terminating signal when down
        updown_for: float,  # seconds since the last up/down transition
        finishing: bool,  # down, and ./finish is still running
    ) -> None:
        self.up = up
        self.wanted_up = wanted_up
        self.normally_up = normally_up
        self.ready = ready
        self.paused = paused
        self.pid = pid
        self.exit_code = exit_code
        self.signal = signal
        self.updown_for = updown_for
        self.finishing = finishing

    @property
    def down_and_finished(self) -> bool:
        return not self.up and not self.finishing


def _flag(word: str) -> bool:
    if word not in ("true", "false"):
        raise ValueError(f"expected true/false, got {word!r}")
    return word == "true"


def _number(word: str) -> int | None:
    value = int(word)
    return None if value < 0 else value


def parse_svstat(output: str) -> SvStat:
    """Parse one line of `s6-svstat -o <FIELDS>`; ValueError if it is not that."""
    words = output.split()
    if len(words) != len(FIELDS):
        raise ValueError(f"unexpected s6-svstat output: {output.strip()!r}")
    up, wanted, normally, ready, paused = (_flag(w) for w in words[:5])
    signum = _number(words[7])
    return SvStat(
        up=up,
        wanted_up=wanted,
        normally_up=normally,
        ready=ready,
        paused=paused,
        pid=_number(words[5]) if up else None,
        exit_code=None if up else _number(words[6]),
        signal=None if up or not signum else signum,
        updown_for=float(words[10]),
        # s6 stamps "ready" when finish ends (down) or on notification (up); TAI64N
        # labels of equal width compare in time order as plain strings.
        finishing=not up and words[9] < words[8],
    )


def decode_status(data: bytes, normally_up: bool, now: float) -> SvStat | None:
    """A `supervise/status` file's content as s6-svstat would report it at `now` (epoch
    seconds); None when its size is not a layout we know."""
    layout = _LAYOUTS.get(len(data))
    if layout is None:
        return None
    wstat_at, flags_at = layout
    flags = data[flags_at]
    pid = int.from_bytes(data[24:32], "big")
    wstat = int.from_bytes(data[wstat_at : wstat_at + 2], "big")
    finishing = bool(flags & _FINISHING)
    up = pid != 0 and not finishing  # s6-svstat's rule: the pid may be ./finish's
    exited = not up and os.WIFEXITED(wstat)
    signalled = not up and os.WIFSIGNALED(wstat)
    # s6-svstat clamps a stamp from the future to now and prints whole seconds.
    stamp = int.from_bytes(data[0:8], "big") - _TAI_BASE + int.from_bytes(data[8:12], "big") / 1e9
    since = max(0, int(now + TAI_UTC_OFFSET - stamp))
    return SvStat(
        up=up,
        wanted_up=bool(flags & _WANT_UP),
        normally_up=normally_up,
        ready=pid != 0 and bool(flags & _READY),
        paused=bool(flags & _PAUSED),
        pid=pid if up else None,
        exit_code=os.WEXITSTATUS(wstat) if exited else None,
        signal=(os.WTERMSIG(wstat) or None) if signalled else None,
        updown_for=float(since),
        finishing=finishing,
    )


def read_status(service_dir: str) -> SvStat | None:
    """What `s6-svstat` would say, read without running it; None when this directory's
    files are not the ones we know how to read (then ask s6-svstat). HermesError when no
    s6-supervise runs there, as s6-svstat's own failure did."""
    supervise = f"{service_dir}/supervise"
    try:
        fd = os.open(f"{supervise}/lock", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None  # an s6 without the lock file, not supervised yet, or not ours to read
    try:
        # s6-supervise holds a write lock on it while it runs; s6-svstat asks the same
        # question (fcntl F_GETLK, which lockf's F_TEST is).
        os.lockf(fd, os.F_TEST, 0)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EAGAIN):
            return None
        supervised = True
    else:
        supervised = False
    finally:
        os.close(fd)
    if not supervised:
        raise HermesError(f"s6-svstat {service_dir}: s6-supervise not running")
    try:
        fd = os.open(f"{supervise}/status", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 64)
    finally:
        os.close(fd)
    normally_up = not os.access(f"{service_dir}/down", os.F_OK)
    return decode_status(data, normally_up, time.time())


def svstat(service_dir: str) -> SvStat:
    """The service's state: its status file decoded, else `s6-svstat -o` parsed."""
    status = read_status(service_dir)
    if status is not None:
        return status
    return spawn_svstat(service_dir)


def spawn_svstat(service_dir: str) -> SvStat:
    from hermes_container.supervision.tools import run_tool

    proc = run_tool("s6-svstat", "-o", ",".join(FIELDS), service_dir, timeout=5.0)
    return parse_svstat(proc.stdout)
