"""Parse `s6-svstat -o ...`: the documented, machine-readable view of one service."""

from __future__ import annotations

from hermes_container.record import Record
from hermes_container.supervision.tools import run_tool

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


def svstat(service_dir: str) -> SvStat:
    proc = run_tool("s6-svstat", "-o", ",".join(FIELDS), service_dir, timeout=5.0)
    return parse_svstat(proc.stdout)
