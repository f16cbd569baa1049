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
