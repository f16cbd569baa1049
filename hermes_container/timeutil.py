"""Timestamps in one format everywhere: ISO 8601, UTC, second precision."""

from __future__ import annotations

import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from datetime import datetime


def utc_now_iso() -> str:
    # time.strftime, not datetime: datetime is not needed to write a state file.
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def parse_iso(value: str) -> datetime | None:
    from datetime import UTC, datetime

    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def split_duration(seconds: float) -> tuple[int, int, int, int]:
    """Whole seconds as (days, hours, minutes, seconds)."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return days, hours, minutes, secs


def format_duration(seconds: float | None, *, parts: int = 4) -> str:
    """`1d 0h 3m 4s`: from the largest non-zero unit down to seconds, at most `parts`
    units (the dashboard's table cells have room for two: `1d 0h`); `-` when unknown."""
    if seconds is None:
        return "-"
    units = list(zip(split_duration(seconds), "dhms", strict=True))
    while len(units) > 1 and units[0][0] == 0:
        del units[0]
    return " ".join(f"{value}{unit}" for value, unit in units[:parts])


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = r"(?:\d+(?:\.\d+)?[smhd])+"


def duration_seconds(text: str) -> float | None:
    """`90s`, `15m`, `1h30m`, `2d` as seconds; None when `text` is not such a duration."""
    import re

    value = text.strip()
    if not re.fullmatch(_DURATION, value):
        return None
    return sum(
        float(number) * _UNITS[unit]
        for number, unit in re.findall(r"(\d+(?:\.\d+)?)([smhd])", value)
    )


def parse_when(text: str, option: str, now: float | None = None) -> float:
    """A moment given on the command line: an ISO time (`2026-12-03T03:00:00Z`) or a
    time ago (`90s`, `15m`, `2h`, `1d`). Unix seconds; a one-line UsageError otherwise."""
    from hermes_container.errors import UsageError

    value = text.strip()
    ago = duration_seconds(value)
    if ago is not None:
        return (time.time() if now is None else now) - ago
    parsed = parse_iso(value)
    if parsed is None:
        raise UsageError(
            f"{option} {text!r}: expected an ISO time such as 2026-12-03T03:00:00Z "
            "or a time ago such as 15m"
        )
    return parsed.timestamp()
