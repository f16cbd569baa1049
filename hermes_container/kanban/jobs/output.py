"""What jobs leave in the home: each run's result as a file, and `jobs/events.jsonl`.

- `$HERMES_HOME/jobs/output/<name>/<slot>.md`: the last step's result, written
  atomically (0600, directories 0700) when the run completes.
- `$HERMES_HOME/jobs/events.jsonl`: one JSON line per job event, a view of the event
  ledger's `job.*` events (never a second record): appended after each copy into the
  ledger, never rewritten, rotated to `events.jsonl.1` ... `.N` by size. Where it got to
  is the last line's ledger id, so a crash between copying and appending neither drops
  nor repeats a line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hermes_container.events.ledger import Ledger
from hermes_container.fsutil import atomic_write_text
from hermes_container.kanban.jobs.schedule import slot_name

JOB_KIND_PREFIX = "job."
EVENTS_FILE = "events.jsonl"
ROTATE_BYTES = 8 * 1024 * 1024
KEEP_ROTATED = 5
TAIL_BYTES = 4 * 64 * 1024  # past the longest line (the ledger caps one event's data at 64 KiB)


def jobs_dir(root: Path) -> Path:
    return root / "jobs"


def output_path(root: Path, job: str, slot: float) -> Path:
    return jobs_dir(root) / "output" / job / f"{slot_name(slot)}.md"


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def save_result(root: Path, job: str, slot: float, result: str) -> Path:
    path = output_path(root, job, slot)
    _private_dir(path.parent)
    atomic_write_text(path, result if result.endswith("\n") else result + "\n")
    return path


def _last_id(path: Path) -> int | None:
    """The ledger id of the last complete line of `path` (None: no line there)."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - TAIL_BYTES))
            tail = handle.read()
    except FileNotFoundError:
        return None
    for line in reversed(tail.split(b"\n")):
        try:
            return int(json.loads(line)["ledger_id"])
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line, or empty
    return None


def _rotate(path: Path) -> None:
    for index in range(KEEP_ROTATED - 1, 0, -1):
        older = path.with_name(f"{path.name}.{index}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{index + 1}"))
    path.replace(path.with_name(f"{path.name}.1"))


def export_events(root: Path, ledger: Ledger, *, limit: int = 5000) -> int:
    """Append the ledger's job events not in events.jsonl yet; how many lines."""
    path = jobs_dir(root) / EVENTS_FILE
    after = _last_id(path)
    if after is None:
        after = _last_id(path.with_name(f"{path.name}.1")) or 0
    events = ledger.read(after, kind=JOB_KIND_PREFIX, limit=limit)
    if not events:
        return 0
    _private_dir(path.parent)
    lines = []
    for event in events:
        record: dict[str, Any] = {
            "ledger_id": event.id,
            "at": event.at,
            "kind": event.kind[len(JOB_KIND_PREFIX) :],
        }
        record.update(event.data)
        slot = record.get("slot")
        if isinstance(slot, int | float):
            record["slot"] = slot_name(float(slot))
        lines.append(json.dumps(record, sort_keys=True))
    data = ("\n".join(lines) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        size = os.fstat(fd).st_size
        if size:
            # A torn line from a crash mid-append: end it, so ours start on their own.
            with path.open("rb") as handle:
                handle.seek(size - 1)
                if handle.read(1) != b"\n":
                    data = b"\n" + data
        os.write(fd, data)
    finally:
        os.close(fd)
    if path.stat().st_size >= ROTATE_BYTES:
        _rotate(path)
    return len(lines)
