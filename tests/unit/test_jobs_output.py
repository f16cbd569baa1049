"""What jobs leave behind: each completed run's result under
`$HERMES_HOME/jobs/output/<name>/<slot>.md`, the jobs' events in the container's event
ledger (carried once, as `job.<kind>`), and `$HERMES_HOME/jobs/events.jsonl`, a view of
the ledger that is appended, never rewritten, resumes after a torn line and rotates.
Real stores (both backends where the store matters) and a real ledger file."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hermes_container.events.ledger import Ledger
from hermes_container.home import HermesHome
from hermes_container.kanban.jobs import output
from hermes_container.kanban.jobs.model import COMPLETED, EVENT_KINDS
from hermes_container.kanban.jobs.scheduler import Scheduler
from hermes_container.kanban.jobs.settings import JobsSettings
from hermes_container.kanban.ledger_copy import carry
from tests.conftest import run_hermes
from tests.unit import jobs_support
from tests.unit.jobs_support import EPOCH, Board, add_job

# The shared fixtures (jobs_support): pytest finds them by name in this module.
backend = jobs_support.backend
board = jobs_support.board
clock = jobs_support.clock


@pytest.fixture
def ledger(hermes_home: HermesHome) -> Iterator[Ledger]:
    opened = Ledger(hermes_home.root)
    yield opened
    opened.close()


def scheduler(board: Board) -> Scheduler:
    return Scheduler(board.home, board.store, JobsSettings)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- results ------------------------------------------------------------------------------


def test_a_completed_run_is_saved_as_its_slots_markdown_file(board: Board) -> None:
    ticker = scheduler(board)
    add_job(board.jobs, "report", every="1h", steps=[("alpha", "gather"), ("beta", "write")])
    board.clock.set(EPOCH + 3600)
    ticker.tick()
    (run,) = board.runs("report")
    first, last = board.tasks(run)
    board.complete(first.id, "the raw numbers")
    ticker.tick()
    target = board.home.root / "jobs" / "output" / "report" / "2027-01-07T01:00:00Z.md"
    assert not target.exists()  # a step is not the run
    board.store.promote("default")
    board.complete(last.id, "# Report\n\nAll green.")
    ticker.tick()
    assert board.jobs.get_run(run.id).state == COMPLETED
    assert target.read_text() == "# Report\n\nAll green.\n"  # the last step's result
    assert mode(target) == 0o600
    assert mode(target.parent) == 0o700
    assert target == output.output_path(board.home.root, "report", run.slot)
    ticker.tick()
    assert target.read_text() == "# Report\n\nAll green.\n"  # followed once, written once
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


def test_a_manual_runs_file_names_its_millisecond_slot(board: Board) -> None:
    ticker = scheduler(board)
    add_job(board.jobs, "adhoc", every="1d")
    board.clock.set(EPOCH + 42.125)
    run = board.jobs.run_now("adhoc")
    board.complete(board.task(run).id, "")
    ticker.tick()
    saved = board.home.root / "jobs" / "output" / "adhoc" / "2027-01-07T00:00:42.125Z.md"
    assert saved.read_text() == "\n"


def test_a_result_that_cannot_be_saved_does_not_stop_the_runs_record(
    board: Board, caplog: pytest.LogCaptureFixture
) -> None:
    ticker = scheduler(board)
    add_job(board.jobs, "nowhere", every="1h")
    # Where the job's directory would go there is a file: mkdir fails as on a full disk.
    (board.home.root / "jobs" / "output").mkdir(parents=True)
    (board.home.root / "jobs" / "output" / "nowhere").write_text("in the way")
    board.clock.set(EPOCH + 3600)
    ticker.tick()
    (run,) = board.runs("nowhere")
    board.complete(board.task(run).id, "lost words")
    ticker.tick()
    assert board.jobs.get_run(run.id).state == COMPLETED
    assert "not saved" in caplog.text
    assert not board.jobs.follow()  # the cursor moved past it: nothing is replayed


# -- the event ledger ---------------------------------------------------------------------------


def make_history(board: Board) -> None:
    """A job's life with most kinds of event: added, scheduled, started, failed,
    retry_scheduled, rate_limited, completed, skipped_overlap, paused, resumed."""
    add_job(board.jobs, "life", every="60s", max_retries=2, retry_delay="5s")
    board.clock.set(EPOCH + 60)
    (run,) = board.fire()
    task_id = board.task(run).id
    task = board.fail(task_id, "502")
    assert task.not_before is not None
    board.clock.set(task.not_before)
    board.store.rate_limited(board.claim(task_id), 1.0)
    board.clock.advance(1)
    board.clock.set(EPOCH + 120)
    board.fire()  # skipped_overlap: the first run is still in flight
    board.complete(task_id, "ok")
    board.follow()
    board.jobs.pause("life")
    board.jobs.resume("life")


def test_job_events_reach_the_ledger_once_as_job_kinds(board: Board, ledger: Ledger) -> None:
    make_history(board)
    job_events = board.events()
    board_events = board.store.events_since(0, limit=10_000)
    assert carry(board.store, ledger) == len(board_events) + len(job_events)
    copied = ledger.read(0, kind="job.", limit=10_000)
    assert [e.kind for e in copied] == [f"job.{e.kind}" for e in job_events]
    assert {e.kind for e in job_events} >= {
        "added", "scheduled", "started", "failed", "retry_scheduled", "rate_limited",
        "completed", "skipped_overlap", "paused", "resumed",
    }  # fmt: skip
    assert all(e.kind in EVENT_KINDS for e in job_events)
    for source, copy in zip(job_events, copied, strict=True):
        assert copy.at == source.at and copy.actor == "jobs"
        assert copy.data == {"job": "life", "run_id": source.run_id, "slot": source.slot,
                             **source.data}  # fmt: skip
        assert copy.profile == source.data.get("profile")
    assert [e.profile for e in copied if e.kind == "job.started"] == ["alpha"] * 3

    # Again: nothing new. More events: only those.
    assert carry(board.store, ledger) == 0
    board.jobs.pause("life")
    assert carry(board.store, ledger) == 1
    # A cursor lost (a ledger restored from before the copy): the source keys still
    # keep every event to one copy.
    with ledger._lock:  # the test reaches into the file as a restore would
        ledger._conn.execute("UPDATE cursors SET last_id = 0")
    assert carry(board.store, ledger) == 0
    copied = ledger.read(0, kind="job.", limit=10_000)
    assert len(copied) == len(job_events) + 1
    # A second process's connection sees the same and copies nothing twice.
    other = Ledger(board.home.root)
    try:
        assert carry(board.store, other) == 0
    finally:
        other.close()


def test_jobs_events_shows_the_ledgers_job_events(board: Board, ledger: Ledger) -> None:
    make_history(board)
    add_job(board.jobs, "other")
    carry(board.store, ledger)
    result = run_hermes("jobs", "events", "--job", "life", "--json", env=board.env)
    assert result.returncode == 0, result.stderr
    shown = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["kind"] for e in shown] == [f"job.{e.kind}" for e in board.events("life")]
    assert {e["data"]["job"] for e in shown} == {"life"}
    everything = run_hermes("jobs", "events", "--json", env=board.env)
    assert len(everything.stdout.splitlines()) == len(board.events())


# As JSON a non-ASCII prompt is up to six bytes a character: a whole 32,000-character
# prompt in the event would pass the ledger's 64 KiB limit for an event's data and stop
# every later job event at the copy, so the event carries only its start.
def test_a_dead_letter_with_a_long_non_ascii_prompt_still_reaches_the_ledger(
    board: Board, ledger: Ledger
) -> None:
    add_job(board.jobs, "wide", prompt="Проверь журналы. " * 1800, max_retries=0)
    board.clock.set(EPOCH + 60)
    (run,) = board.fire()
    board.fail(board.task(run).id, "boom")
    board.follow()
    add_job(board.jobs, "after")
    carry(board.store, ledger)
    kinds = [e.kind for e in ledger.read(0, kind="job.", limit=10_000)]
    assert "job.dead_lettered" in kinds and kinds[-1] == "job.added"


# -- events.jsonl ----------------------------------------------------------------------------


def jsonl(root: Path) -> Path:
    return root / "jobs" / "events.jsonl"


def complete_lines(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in path.read_bytes().split(b"\n"):
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # empty, or the torn line a crash left
    return records


def export(board: Board, ledger: Ledger) -> int:
    carry(board.store, ledger)
    return output.export_events(board.home.root, ledger)


def job_ledger_ids(ledger: Ledger) -> list[int]:
    return [e.id for e in ledger.read(0, kind="job.", limit=100_000)]


def test_events_jsonl_is_one_line_per_job_event_and_only_ever_appended(
    board: Board, ledger: Ledger
) -> None:
    make_history(board)
    written = export(board, ledger)
    path = jsonl(board.home.root)
    assert written == len(board.events()) > 10
    assert mode(path) == 0o600
    records = complete_lines(path)
    assert [r["ledger_id"] for r in records] == job_ledger_ids(ledger)
    assert [r["kind"] for r in records] == board.kinds()
    scheduled = next(r for r in records if r["kind"] == "scheduled")
    assert scheduled["job"] == "life" and scheduled["slot"] == "2027-01-07T00:01:00Z"
    assert isinstance(scheduled["run_id"], int) and scheduled["manual"] is False
    assert set(scheduled) >= {"ledger_id", "at", "kind", "job", "run_id", "slot", "tasks"}

    before, inode = path.read_bytes(), path.stat().st_ino
    assert export(board, ledger) == 0
    assert path.read_bytes() == before
    board.jobs.pause("life")
    board.jobs.resume("life")
    assert export(board, ledger) == 2
    after = path.read_bytes()
    assert after.startswith(before) and path.stat().st_ino == inode  # appended in place
    assert [r["kind"] for r in complete_lines(path)[-2:]] == ["paused", "resumed"]


def test_events_jsonl_resumes_after_a_torn_line_without_a_gap_or_a_repeat(
    board: Board, ledger: Ledger
) -> None:
    make_history(board)
    export(board, ledger)
    path = jsonl(board.home.root)
    whole = path.read_bytes()
    # A crash mid-append: the file ends halfway through its last line.
    last_start = whole.rstrip(b"\n").rfind(b"\n") + 1
    cut = last_start + (len(whole) - last_start) // 2
    with path.open("r+b") as handle:
        handle.truncate(cut)
    board.jobs.pause("life")
    assert export(board, ledger) == 1 + 1  # the torn event again, then the new one
    data = path.read_bytes()
    assert data.startswith(whole[:cut])  # the torn bytes stay: never rewritten
    ids = [r["ledger_id"] for r in complete_lines(path)]
    assert ids == job_ledger_ids(ledger)  # every event once, in order
    assert data.endswith(b"\n")
    # And once more from a clean end.
    board.jobs.resume("life")
    assert export(board, ledger) == 1
    assert [r["ledger_id"] for r in complete_lines(path)] == job_ledger_ids(ledger)


def test_events_jsonl_rotates_and_goes_on_from_the_rotated_file(
    board: Board, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output, "ROTATE_BYTES", 1500)
    add_job(board.jobs, "toggle")
    assert export(board, ledger) == 1
    path = jsonl(board.home.root)
    inodes = set()
    for _ in range(30):
        for _ in range(3):
            board.jobs.pause("toggle")
            board.jobs.resume("toggle")
        assert export(board, ledger) == 6
        if path.exists():
            inodes.add(path.stat().st_ino)
    rotated = sorted(path.parent.glob("events.jsonl.*"))
    assert [p.name for p in rotated] == [f"events.jsonl.{n}" for n in range(1, 6)]
    for old in rotated:
        assert mode(old) == 0o600
        assert old.stat().st_size >= 1500
    # Oldest first: .5 ... .1, then the live file: consecutive ledger ids, none twice,
    # ending with the newest job event (older files than .5 are gone, by design).
    files = [*reversed(rotated), path] if path.exists() else list(reversed(rotated))
    ids = [r["ledger_id"] for f in files for r in complete_lines(f)]
    everything = job_ledger_ids(ledger)
    assert ids == everything[-len(ids) :]
    assert len(ids) < len(everything)  # some rotated out
    assert len(inodes) > 1  # a new file after each rotation
    # Right after a rotation the live file is gone; the next export starts it again
    # from the last line of .1.
    if path.exists():
        output._rotate(path)  # as export_events does when the file reaches the limit
    last_rotated = complete_lines(path.with_name("events.jsonl.1"))[-1]["ledger_id"]
    board.jobs.pause("toggle")
    assert export(board, ledger) == 1
    (fresh,) = complete_lines(path)
    assert fresh["ledger_id"] > last_rotated and fresh["kind"] == "paused"
