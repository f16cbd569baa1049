"""What `hermes logs [-p P] [--follow] [--lines N]` shows: a gateway's s6-log directory.

s6-log writes `current` and rotates it into `@<tai64n>.s` (or `.u`) files; names sort
in time order, so the last N lines are read newest-file-first (hermes_container.tail).
The command (hermes_container.commands.supervision) prints what these functions return.
"""

from __future__ import annotations

import time
from pathlib import Path

from hermes_container.errors import HermesError
from hermes_container.tail import last_lines

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

FOLLOW_POLL = 0.2


def log_files(log_dir: Path) -> list[Path]:
    """Rotated files oldest first, then `current`."""
    try:
        rotated = sorted(p for p in log_dir.iterdir() if p.name.startswith("@"))
    except FileNotFoundError:
        return []
    current = log_dir / "current"
    return rotated + ([current] if current.exists() else [])


def follow(current: Path, stop_after: float | None = None) -> Iterator[str]:
    """Yield what is appended to `current` as it comes (text, as read: whole lines or
    not), surviving rotation; until interrupted, or for `stop_after` seconds."""
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
            yield chunk.decode("utf-8", "replace")
        time.sleep(FOLLOW_POLL)


def recent_lines(log_dir: Path, *, lines: int, following: bool = False) -> list[str]:
    """The last `lines` lines of the log, oldest first (without their newlines).

    HermesError when there is no log at all, unless `following`: then the lines will
    come when the gateway first writes.
    """
    files = log_files(log_dir)
    if not files and not following:
        raise HermesError(f"no logs yet in {log_dir} (has this gateway ever been started?)")
    return last_lines(files, lines)
