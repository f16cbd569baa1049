"""The last lines of a file, read from its end: `hermes logs`, the dashboard's log and boot
log pages, the audit trail.

A file is read backwards in blocks and only as far as its reader takes lines (or
`max_bytes`), so showing the end of a log never loads all of it. Every line is whole:
when a bounded read starts inside a line (after its start, before its newline), that
line is dropped. Bytes are decoded as UTF-8 with bad ones replaced, and split as
str.splitlines() does, as every reader did before; a last line without a newline is
still a line (a writer may be in the middle of it). A file that cannot be read has no
lines: a log page must not fail because a log is missing.

Standard library only, and cheap to import: the CLI's fast commands may use it.
"""

from __future__ import annotations

import os
from itertools import chain, islice

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path
    from typing import BinaryIO

BLOCK = 64 * 1024


def lines_backwards(path: Path, max_bytes: int | None = None) -> Iterator[str]:
    """The lines of `path`, newest first, from its last `max_bytes` (all when None)."""
    try:
        with open(path, "rb") as fh:
            yield from _backwards(fh, max_bytes)
    except OSError:
        return


def last_lines(files: Sequence[Path], count: int, max_bytes: int | None = None) -> list[str]:
    """The last `count` lines of `files` taken as one log (oldest file first, as s6-log's
    rotated names sort), oldest line first; `max_bytes` bounds the read of each file."""
    if count <= 0:
        return []
    newest_first = chain.from_iterable(lines_backwards(p, max_bytes) for p in reversed(files))
    return list(islice(newest_first, count))[::-1]


def _backwards(fh: BinaryIO, max_bytes: int | None) -> Iterator[str]:
    end = fh.seek(0, os.SEEK_END)
    start = 0 if max_bytes is None else max(0, end - max_bytes)
    # The first line read is whole if the file starts there or a newline ends the byte
    # before; otherwise the read starts inside a line.
    first_is_whole = start == 0 or _byte_at(fh, start - 1) == b"\n"
    # Bytes read but not yet yielded, latest first: the end of a line whose start is
    # still unread. A list, so a line longer than a block is joined once, not re-copied.
    pending: list[bytes] = []
    position = end
    while position > start:
        size = min(BLOCK, position - start)
        position -= size
        fh.seek(position)
        block = fh.read(size)
        cut = block.find(b"\n")
        if cut < 0:
            pending.append(block)
            continue
        # After the block's first newline, lines start here: they are complete.
        whole = block[cut + 1 :] + b"".join(reversed(pending))
        pending = [block[: cut + 1]]
        yield from reversed(_split(whole))
    if first_is_whole:
        yield from reversed(_split(b"".join(reversed(pending))))


def _byte_at(fh: BinaryIO, offset: int) -> bytes:
    fh.seek(offset)
    return fh.read(1)


def _split(data: bytes) -> list[str]:
    # UTF-8 never puts a newline byte inside a character, so decoding piece by piece,
    # cut after newlines, gives what decoding the whole file would.
    return data.decode("utf-8", "replace").splitlines()
