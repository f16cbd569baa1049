"""One timestamp format everywhere: ISO 8601, UTC, second precision, `Z` suffix."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from hermes_container.timeutil import format_duration, parse_iso, split_duration, utc_now_iso


def test_now_is_iso_utc_seconds_with_z() -> None:
    before = int(time.time())
    stamp = utc_now_iso()
    after = int(time.time())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp), stamp
    parsed = parse_iso(stamp)
    assert parsed is not None and before <= parsed.timestamp() <= after


def test_now_matches_what_datetime_writes() -> None:
    for _ in range(3):  # retry across a second boundary
        ours = utc_now_iso()
        theirs = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        if ours == theirs:
            return
    raise AssertionError(f"{ours!r} != {theirs!r}")


def test_parse_iso_accepts_naive_as_utc_and_refuses_junk() -> None:
    assert parse_iso("2026-11-25T10:00:00") == datetime(2026, 11, 25, 10, tzinfo=UTC)
    assert parse_iso("not a time") is None
    assert parse_iso(None) is None  # type: ignore[arg-type]


def test_split_duration() -> None:
    assert split_duration(0) == (0, 0, 0, 0)
    assert split_duration(90061.9) == (1, 1, 1, 1)


def test_format_duration_keeps_the_largest_units() -> None:
    assert format_duration(None) == "-"
    assert format_duration(0) == "0s"
    assert format_duration(86405) == "1d 0h 0m 5s"
    # The dashboard's cells: the two largest units.
    assert format_duration(12, parts=2) == "12s"
    assert format_duration(125, parts=2) == "2m 5s"
    assert format_duration(3725, parts=2) == "1h 2m"
    assert format_duration(90061, parts=2) == "1d 1h"
