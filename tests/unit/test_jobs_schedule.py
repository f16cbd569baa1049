"""When a job fires (kanban/jobs/schedule.py): cron slots in a time zone, interval slots
anchored where the job was added, one-time slots, daylight-saving nights, slot names,
the five-slot preview and the bounded walk over a long downtime. Pure values: no store
(tests/unit/test_jobs_store.py fires these slots on a board)."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from hermes_container.kanban.jobs import spec as specs
from hermes_container.kanban.jobs.book import first_slot
from hermes_container.kanban.jobs.schedule import AT, CRON, EVERY, Schedule, slot_name
from tests.unit.jobs_support import EPOCH

HOUR = 3600.0
DAY = 86400.0


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


def local(zone: str, year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(zone)).timestamp()


def names(slots: list[float]) -> list[str]:
    return [slot_name(s) for s in slots]


def in_window(schedule: Schedule, start: float, end: float) -> list[float]:
    """Every slot in (start, end], walked one by one."""
    found: list[float] = []
    for slot in schedule.after(start, anchor=start):
        if slot > end:
            return found
        found.append(slot)
    return found


# -- cron -------------------------------------------------------------------------------


def test_cron_slots_are_strictly_after_the_moment_in_utc() -> None:
    every15 = Schedule(CRON, cron="*/15 * * * *")
    assert names(every15.preview(EPOCH, anchor=0)) == [
        "2027-01-07T00:15:00Z",
        "2027-01-07T00:30:00Z",
        "2027-01-07T00:45:00Z",
        "2027-01-07T01:00:00Z",
        "2027-01-07T01:15:00Z",
    ]
    # A moment just before a slot gets that slot; the slot itself is not "after" it.
    assert every15.next_after(EPOCH - 0.5, anchor=0) == EPOCH
    assert every15.next_after(EPOCH, anchor=0) == EPOCH + 900
    # The anchor means nothing to cron: the wall clock decides.
    assert every15.next_after(EPOCH, anchor=EPOCH - 7) == EPOCH + 900


def test_cron_fields_are_read_in_the_jobs_time_zone() -> None:
    # 09:00 on weekdays in Berlin; 2027-01-07 is a Thursday, winter time (UTC+1).
    weekday9 = Schedule(CRON, cron="0 9 * * 1-5", timezone="Europe/Berlin")
    assert names(weekday9.preview(EPOCH, anchor=0)) == [
        "2027-01-07T08:00:00Z",
        "2027-01-08T08:00:00Z",
        "2027-01-11T08:00:00Z",  # the weekend is skipped
        "2027-01-12T08:00:00Z",
        "2027-01-13T08:00:00Z",
    ]
    # The same expression in New York (UTC-5 in January) and in UTC.
    ny = Schedule(CRON, cron="0 9 * * 1-5", timezone="America/New_York")
    assert ny.next_after(EPOCH, anchor=0) == utc(2027, 1, 7, 14)
    assert Schedule(CRON, cron="0 9 * * 1-5").next_after(EPOCH, 0) == utc(2027, 1, 7, 9)
    # In summer the zone's offset changes and the slot follows the wall clock.
    july = Schedule(CRON, cron="0 9 * * *", timezone="Europe/Berlin")
    assert july.next_after(utc(2027, 7, 1), anchor=0) == utc(2027, 7, 1, 7)


@pytest.mark.parametrize(
    ("zone", "day"),
    [("Europe/Berlin", (2027, 10, 31)), ("America/New_York", (2027, 11, 7))],
)
def test_a_daily_slot_in_the_repeated_hour_fires_once_on_fall_back_night(
    zone: str, day: tuple[int, int, int]
) -> None:
    # The repeated hour: Berlin 02:00-03:00 (CEST then CET), New York 01:00-02:00.
    hour = 2 if zone == "Europe/Berlin" else 1
    daily = Schedule(CRON, cron=f"30 {hour} * * *", timezone=zone)
    y, m, d = day
    start = local(zone, y, m, d - 1, 12)
    night = in_window(daily, start, start + DAY + HOUR)  # that civil day is 25 h long
    assert len(night) == 1, names(night)
    # The first of the two moments the wall clock reads hh:30 (summer time), as cron does.
    first_reading = datetime(y, m, d, hour, 30, tzinfo=ZoneInfo(zone), fold=0).timestamp()
    second_reading = datetime(y, m, d, hour, 30, tzinfo=ZoneInfo(zone), fold=1).timestamp()
    assert second_reading - first_reading == HOUR
    assert night == [first_reading]
    # The nights either side fire once each, at hh:30 local.
    week = in_window(daily, start - 3 * DAY, start + 4 * DAY)
    assert len(week) == 7
    assert all(datetime.fromtimestamp(s, ZoneInfo(zone)).strftime("%H:%M") == f"0{hour}:30"
               for s in week)  # fmt: skip


@pytest.mark.parametrize(
    ("zone", "day"),
    [("Europe/Berlin", (2027, 3, 28)), ("America/New_York", (2027, 3, 14))],
)
def test_a_daily_0230_fires_once_at_0300_on_spring_forward_night(
    zone: str, day: tuple[int, int, int]
) -> None:
    daily = Schedule(CRON, cron="30 2 * * *", timezone=zone)
    y, m, d = day
    start = local(zone, y, m, d - 1, 12)
    night = in_window(daily, start, start + DAY - HOUR)  # that civil day is 23 h long
    # 02:30 does not exist that night: the slot is the first minute after the gap.
    assert night == [local(zone, y, m, d, 3, 0)]
    assert datetime.fromtimestamp(night[0], ZoneInfo(zone)).strftime("%H:%M") == "03:00"
    # And the next night is back at 02:30.
    assert daily.next_after(night[0], anchor=0) == local(zone, y, m, d + 1, 2, 30)


def test_every_30_minutes_follows_real_time_across_both_changes() -> None:
    """Documents `*/30` (a wildcard hour): the slots stay 30 real minutes apart through
    both changes. On fall-back night the wall clock reads 02:00 and 02:30 twice and each
    reading fires (50 slots in that 25-hour day); on spring-forward night 02:00-03:00
    does not exist and nothing fires in it (46 slots in the 23-hour day). No slot is
    doubled and no real half hour is skipped."""
    zone = ZoneInfo("Europe/Berlin")
    half_hourly = Schedule(CRON, cron="*/30 * * * *", timezone="Europe/Berlin")

    autumn = in_window(
        half_hourly,
        local("Europe/Berlin", 2027, 10, 31, 0) - 1,
        local("Europe/Berlin", 2027, 11, 1, 0) - 1,
    )
    assert len(autumn) == 50
    assert {b - a for a, b in itertools.pairwise(autumn)} == {1800.0}
    walls = [datetime.fromtimestamp(s, zone).strftime("%H:%M") for s in autumn]
    assert walls.count("02:00") == walls.count("02:30") == 2
    assert walls.count("01:30") == walls.count("03:00") == 1

    spring = in_window(
        half_hourly,
        local("Europe/Berlin", 2027, 3, 28, 0) - 1,
        local("Europe/Berlin", 2027, 3, 29, 0) - 1,
    )
    assert len(spring) == 46
    assert {b - a for a, b in itertools.pairwise(spring)} == {1800.0}
    walls = [datetime.fromtimestamp(s, zone).strftime("%H:%M") for s in spring]
    assert "02:00" not in walls and "02:30" not in walls
    assert walls[walls.index("01:30") + 1] == "03:00"


# -- every ------------------------------------------------------------------------------


def test_interval_slots_count_from_the_anchor_not_from_when_anyone_looks() -> None:
    anchor = EPOCH + 7.0
    every90 = Schedule(EVERY, every=90.0)
    assert every90.preview(anchor, anchor) == [anchor + 90 * k for k in range(1, 6)]
    # Looking at odd moments gives the same grid: no drift with the scheduler's tick.
    assert every90.next_after(anchor + 1000.5, anchor) == anchor + 1080
    assert every90.next_after(anchor + 1080, anchor) == anchor + 1170
    assert every90.next_after(anchor + 1079.999, anchor) == anchor + 1080
    # Sub-second intervals keep their grid too.
    fast = Schedule(EVERY, every=1.5)
    assert fast.preview(anchor + 3.0, anchor, 3) == [anchor + 4.5, anchor + 6.0, anchor + 7.5]


def test_a_job_is_anchored_on_the_whole_second_it_was_added() -> None:
    added = EPOCH + 12.25
    every = specs.build(name="tick", steps=(specs.Step("alpha", "x"),), every="90s")
    anchor, first = first_slot(every, added)
    assert anchor == EPOCH + 13  # the next whole second
    assert first == anchor + 90  # one interval after it was added, not at once

    cron = specs.build(name="tock", steps=(specs.Step("alpha", "x"),), cron="*/15 * * * *")
    assert first_slot(cron, added)[1] == EPOCH + 900

    later = datetime.fromtimestamp(EPOCH + DAY, UTC).isoformat()
    once = specs.build(name="once", steps=(specs.Step("alpha", "x"),), at=later)
    assert first_slot(once, added)[1] == EPOCH + DAY
    assert first_slot(once, EPOCH + DAY)[1] is None  # its moment has come: no slot after


# -- at ---------------------------------------------------------------------------------


def test_a_one_time_slot_comes_once() -> None:
    moment = EPOCH + 3 * HOUR + 0.5
    once = Schedule(AT, at=moment)
    assert once.preview(EPOCH, anchor=0) == [moment]
    assert once.next_after(moment - 0.001, anchor=0) == moment
    assert once.next_after(moment, anchor=0) is None
    assert once.slots(EPOCH, EPOCH + DAY, anchor=0, limit=100) == ([moment], 1)
    assert once.slots(moment, EPOCH + DAY, anchor=0, limit=100) == ([], 0)
    assert once.describe() == "at 2027-01-07T03:00:00.500Z"


def test_at_without_an_offset_is_read_in_the_jobs_time_zone() -> None:
    step = (specs.Step("alpha", "x"),)
    naive = specs.build(name="a", steps=step, at="2027-07-01T09:00:00", timezone="Europe/Berlin")
    assert naive.schedule.at == utc(2027, 7, 1, 7)
    zulu = specs.build(name="a", steps=step, at="2027-07-01T09:00:00Z", timezone="Europe/Berlin")
    assert zulu.schedule.at == utc(2027, 7, 1, 9)
    plain = specs.build(name="a", steps=step, at="2027-07-01T09:00:00")
    assert plain.schedule.at == utc(2027, 7, 1, 9)


# -- names, previews, downtime -------------------------------------------------------------


def test_slot_names_are_utc_iso_with_milliseconds_only_when_needed() -> None:
    assert slot_name(EPOCH) == "2027-01-07T00:00:00Z"
    assert slot_name(EPOCH + 90.0) == "2027-01-07T00:01:30Z"
    assert slot_name(EPOCH + 0.25) == "2027-01-07T00:00:00.250Z"
    # The zone a job's cron is read in does not change its slot's name.
    berlin_nine = Schedule(CRON, cron="0 9 * * *", timezone="Europe/Berlin")
    assert slot_name(berlin_nine.next_after(EPOCH, 0) or 0) == "2027-01-07T08:00:00Z"
    # Two interval slots half a second apart never share a name (they are idempotency keys).
    fast = Schedule(EVERY, every=1.5).preview(EPOCH, EPOCH, 40)
    assert len(set(names(fast))) == 40
    # Names sort like the slots (the output files list in slot order).
    assert sorted(names(fast)) == names(fast)


def test_preview_shows_the_next_five_slots_of_each_kind() -> None:
    cron = Schedule(CRON, cron="0 3 * * 0", timezone="Europe/Berlin")  # Sundays 03:00
    assert [datetime.fromtimestamp(s, ZoneInfo("Europe/Berlin")).strftime("%a %H:%M")
            for s in cron.preview(EPOCH, 0)] == ["Sun 03:00"] * 5  # fmt: skip
    sundays = cron.preview(EPOCH, 0)
    assert [round((b - a) / DAY) for a, b in itertools.pairwise(sundays)] == [7] * 4
    every = Schedule(EVERY, every=600.0)
    assert every.preview(EPOCH + 601, EPOCH) == [EPOCH + 600 * k for k in range(2, 7)]
    assert every.preview(EPOCH + 601, EPOCH, 2) == [EPOCH + 1200, EPOCH + 1800]
    assert Schedule(AT, at=EPOCH + 5).preview(EPOCH, 0) == [EPOCH + 5]


def test_preview_of_a_job_just_added_starts_at_its_first_slot() -> None:
    """What `jobs show` and the dashboard's add form print right after an add: the first
    slot previewed must be the one that will fire."""
    added = EPOCH + 0.4
    spec = specs.build(name="tick", steps=(specs.Step("alpha", "x"),), every="90s")
    anchor, first = first_slot(spec, added)
    # Taken in the fraction of a second between the add and the anchor, too: the anchor
    # itself is not a slot.
    assert spec.schedule.preview(added, anchor)[0] == first


def test_a_long_downtime_is_walked_in_bounded_time_and_memory() -> None:
    # An every-second job down for a year: the walk jumps to the last 100 slots.
    anchor = EPOCH
    every1 = Schedule(EVERY, every=1.0)
    started = time.monotonic()
    last, total = every1.slots(anchor + 5, anchor + 5 + 365 * DAY, anchor, limit=100)
    assert time.monotonic() - started < 0.5
    assert total == 365 * 86400
    assert last == [anchor + 5 + 365 * DAY - 99 + k for k in range(100)]
    # Fewer slots than the limit: all of them.
    assert every1.slots(anchor + 5, anchor + 8, anchor, limit=100) == (
        [anchor + 6, anchor + 7, anchor + 8],
        3,
    )
    assert every1.slots(anchor + 5, anchor + 5, anchor, limit=100) == ([], 0)

    # A cron job down for a month: all 43,200 minutes are counted, 100 kept.
    minutely = Schedule(CRON, cron="* * * * *")
    started = time.monotonic()
    last, total = minutely.slots(EPOCH, EPOCH + 30 * DAY, 0, limit=100)
    assert time.monotonic() - started < 5
    assert total == 30 * 24 * 60
    assert last == [EPOCH + 30 * DAY - 60 * (99 - k) for k in range(100)]
    assert minutely.slots(EPOCH, EPOCH + 30 * DAY, 0, limit=1) == ([EPOCH + 30 * DAY], total)


def test_describe_says_what_the_schedule_is() -> None:
    assert Schedule(CRON, cron="*/5 * * * *").describe() == "cron */5 * * * *"
    assert (
        Schedule(CRON, cron="0 9 * * *", timezone="Europe/Berlin").describe()
        == "cron 0 9 * * * (Europe/Berlin)"
    )
    assert Schedule(EVERY, every=5400.0).describe() == "every 1h 30m"
    assert Schedule(AT, at=EPOCH + timedelta(hours=2).total_seconds()).describe() == (
        "at 2027-01-07T02:00:00Z"
    )
