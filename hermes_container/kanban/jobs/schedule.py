"""When a job fires: a cron expression in a time zone, a fixed interval, or one moment.

Slots are Unix seconds. Cron slots come from cronsim, which walks wall-clock time in the
job's zone the way Debian's cron does across daylight-saving changes: a daily 02:30
fires once on the night the clocks go back and at 03:00 on the night they go forward,
never twice and never not at all. Interval slots count from the job's anchor (when it
was added), so they do not drift with the moments the scheduler happens to look.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from functools import lru_cache

from hermes_container.errors import UsageError

CRON = "cron"
EVERY = "every"
AT = "at"
KINDS = (CRON, EVERY, AT)

MIN_INTERVAL_SECONDS = 1.0
MAX_INTERVAL_SECONDS = 366 * 86400.0


@lru_cache(maxsize=64)
def zone(name: str) -> tzinfo:
    """The named IANA zone; a one-line UsageError for a name the system does not know."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise UsageError(
            f"unknown time zone {name!r} (expected an IANA name such as Europe/Berlin)"
        ) from None


@dataclass(frozen=True, slots=True)
class Schedule:
    kind: str  # cron | every | at
    cron: str | None = None  # kind cron: the five-field expression
    every: float | None = None  # kind every: seconds between slots
    at: float | None = None  # kind at: the one slot
    timezone: str = "UTC"  # the zone a cron expression's fields are read in

    def check(self) -> Schedule:
        """Raise a one-line UsageError unless this schedule can produce slots."""
        zone(self.timezone)
        if self.kind == CRON:
            from cronsim import CronSim, CronSimError

            if not self.cron or not self.cron.strip():
                raise UsageError("a cron schedule needs an expression such as '*/15 * * * *'")
            try:
                CronSim(self.cron, datetime.now(UTC))
            except CronSimError as exc:
                raise UsageError(f"bad cron expression {self.cron!r}: {exc}") from None
        elif self.kind == EVERY:
            if self.every is None or not (
                MIN_INTERVAL_SECONDS <= self.every <= MAX_INTERVAL_SECONDS
            ):
                raise UsageError(f"an interval must be between {MIN_INTERVAL_SECONDS:g}s and 366d")
        elif self.kind == AT:
            if self.at is None or not math.isfinite(self.at):
                raise UsageError("a one-time schedule needs a time")
        else:
            raise UsageError(f"unknown schedule kind {self.kind!r}")
        return self

    def describe(self) -> str:
        if self.kind == CRON:
            zone_part = "" if self.timezone.upper() == "UTC" else f" ({self.timezone})"
            return f"cron {self.cron}{zone_part}"
        if self.kind == EVERY:
            from hermes_container.timeutil import split_duration

            parts = zip(split_duration(self.every or 0), "dhms", strict=True)
            return "every " + (" ".join(f"{n}{unit}" for n, unit in parts if n) or "0s")
        return f"at {slot_name(self.at or 0.0)}"

    def next_after(self, moment: float, anchor: float) -> float | None:
        """The first slot strictly after `moment` (None: there is none, a one-time job
        past its moment). `anchor` is where interval slots count from."""
        return next(self.after(moment, anchor), None)

    def after(self, moment: float, anchor: float) -> Iterator[float]:
        """The slots strictly after `moment`, in order."""
        if self.kind == AT:
            assert self.at is not None
            if self.at > moment:
                yield self.at
            return
        if self.kind == EVERY:
            assert self.every is not None
            # The anchor itself is not a slot: the first is one interval after it.
            step = 1 if moment < anchor else math.floor((moment - anchor) / self.every) + 1
            while True:
                yield anchor + step * self.every
                step += 1
        from cronsim import CronSim

        assert self.cron is not None
        # An expression that never matches (Feb 30) is refused by cronsim at parse time,
        # and one that matches rarely still ends: cronsim gives up after some years.
        for moment_in_zone in CronSim(
            self.cron, datetime.fromtimestamp(moment, zone(self.timezone))
        ):
            yield moment_in_zone.timestamp()

    def slots(
        self, after: float, until: float, anchor: float, limit: int
    ) -> tuple[list[float], int]:
        """The last `limit` slots in (after, until], and how many there are in all."""
        found: deque[float] = deque(maxlen=max(0, limit))
        skipped = 0
        if self.kind == EVERY and self.every is not None and after >= anchor:
            # Jump straight to the last `limit` slots instead of walking a long downtime.
            last = math.floor((until - anchor) / self.every)
            first = math.floor((after - anchor) / self.every)
            if last - first > limit:
                skipped = last - first - limit
                after = anchor + (last - limit) * self.every
        count = 0
        for slot in self.after(after, anchor):
            if slot > until:
                break
            found.append(slot)
            count += 1
        return list(found), skipped + count

    def preview(self, start: float, anchor: float, count: int = 5) -> list[float]:
        """The next `count` slots after `start` (the dashboard's schedule preview)."""
        return list(itertools.islice(self.after(start, anchor), count))


def slot_name(slot: float) -> str:
    """A slot as the idempotency key and the output file name spell it: ISO, UTC, seconds
    (or milliseconds when the slot has them, so two interval slots never share a name)."""
    moment = datetime.fromtimestamp(slot, UTC)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
