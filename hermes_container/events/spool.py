"""Events that could not be written in time wait here: `events/spool/*.json`.

Each file is one writer's batch, created whole (write to a temp name, then rename), so a
reader never sees half a file. Every entry carries a source key unique to its file and
position, and the ledger ignores a source it has already, so a delivery that is cut
off after inserting but before removing the file inserts nothing twice next time.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from hermes_container.events.ledger import Ledger, Pending
from hermes_container.fsutil import atomic_write_json

SPOOL_DIR = "spool"
MAX_FILES_PER_DELIVERY = 200


def spool_dir(ledger_directory: Path) -> Path:
    return ledger_directory / SPOOL_DIR


def put(ledger_directory: Path, events: list[Pending]) -> Path:
    """Keep `events` for later delivery; the file written."""
    directory = spool_dir(ledger_directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = f"{time.time_ns():020d}-{os.getpid()}-{os.urandom(4).hex()}.json"
    entries = []
    for index, event in enumerate(events):
        entry = event.to_json()
        entry["source"] = event.source or f"spool:{name}#{index}"
        entries.append(entry)
    path = directory / name
    atomic_write_json(path, entries)
    return path


def pending_files(ledger_directory: Path) -> list[Path]:
    try:
        names = sorted(n for n in os.listdir(spool_dir(ledger_directory)) if n.endswith(".json"))
    except FileNotFoundError:
        return []
    return [spool_dir(ledger_directory) / n for n in names]


def deliver(ledger: Ledger) -> int:
    """Move spooled events into the ledger, oldest file first; events inserted. Stops at
    the first failure (the ledger is still busy): the rest waits for the next call."""
    inserted = 0
    for path in pending_files(ledger.directory)[:MAX_FILES_PER_DELIVERY]:
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
            events = [Pending.from_json(e) for e in entries]
        except FileNotFoundError:
            continue  # another process delivered it
        except (OSError, ValueError, TypeError):
            # Unreadable: set aside rather than block every later file behind it.
            with contextlib.suppress(OSError):
                path.rename(path.with_suffix(".bad"))
            continue
        inserted += ledger.write(events)  # raises when still busy: try again later
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return inserted
