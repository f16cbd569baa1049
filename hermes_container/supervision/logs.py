"""`hermes logs [-p P] [--follow] [--lines N]`: read a gateway's s6-log directory.

s6-log writes `current` and rotates it into `@<tai64n>.s` (or `.u`) files; names sort
in time order, so the last N lines are read newest-file-first (hermes_container.tail).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from hermes_container.errors import HermesError
from hermes_container.tail import last_lines

FOLLOW_POLL = 0.2


def log_files(log_dir: Path) -> list[Path]:
    """Rotated files oldest first, then `current`."""
    try:
        rotated = sorted(p for p in log_dir.iterdir() if p.name.startswith("@"))
    except FileNotFoundError:
        return []
    current = log_dir / "current"
    return rotated + ([current] if current.exists() else [])


def follow(current: Path, stop_after: float | None = None) -> None:
    """Print what is appended to `current`, surviving rotation; until interrupted."""
    started = time.monotonic()
    position = current.stat().st_size if current.exists() else 0
    inode = current.stat().st_ino if current.exists() else None
    while stop_after is None or time.monotonic() - started < stop_after:
        try:
            st = current.stat()
        except FileNotFoundError:
            time.sleep(FOLLOW_POLL)
            continue
        if st.st_ino != inode or st.st_size < position:
            inode, position = st.st_ino, 0  # rotated: the new `current` starts empty
        if st.st_size > position:
            with open(current, "rb") as fh:
                fh.seek(position)
                chunk = fh.read()
            position += len(chunk)
            sys.stdout.write(chunk.decode("utf-8", "replace"))
            sys.stdout.flush()
        time.sleep(FOLLOW_POLL)


def show_logs(log_dir: Path, *, lines: int, follow_it: bool) -> int:
    files = log_files(log_dir)
    if not files and not follow_it:
        raise HermesError(f"no logs yet in {log_dir} (has this gateway ever been started?)")
    for line in last_lines(files, lines):
        print(line)
    sys.stdout.flush()
    if follow_it:
        follow(log_dir / "current")
    return 0
