"""Tail a log file as Server-Sent Events, surviving s6-log rotation of `current`."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from hermes_container.tail import last_lines

BACKLOG_BYTES = 64 * 1024
MAX_LINE = 4096
POLL_S = 0.5
HEARTBEAT_S = 15.0


def tail_lines(path: Path, limit: int = 200) -> list[str]:
    """The last `limit` lines of `path` within its last BACKLOG_BYTES, each cut to
    MAX_LINE for the page; [] when it cannot be read."""
    return [line[:MAX_LINE] for line in last_lines([path], limit, BACKLOG_BYTES)]


_LINE_ENDS = re.compile(r"\r\n|[\r\n]")


def sse_event(data: str, event: str | None = None) -> bytes:
    # An event stream ends a line at CR, LF or CRLF: a CR inside a log line must not let
    # the rest of that line pass for a field of its own (`event:`, `id:`, ...).
    head = f"event: {event}\n" if event else ""
    body = "".join(f"data: {line}\n" for line in _LINE_ENDS.split(data))
    return (head + body + "\n").encode("utf-8")


async def follow(
    path: Path,
    is_disconnected: Callable[[], Awaitable[bool]],
    *,
    backlog: int = 200,
    once: bool = False,
) -> AsyncIterator[bytes]:
    """Backlog first, then new lines as they are appended; reopens on rotation."""
    for line in tail_lines(path, backlog):
        yield sse_event(line)
    yield sse_event("", event="backlog-end")
    if once:
        return
    position, inode = _end(path)
    pending = b""
    idle = 0.0
    while not await is_disconnected():
        await asyncio.sleep(POLL_S)
        idle += POLL_S
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        if stat.st_ino != inode or stat.st_size < position:
            position, inode, pending = 0, stat.st_ino, b""  # rotated: read the new file
        if stat.st_size == position:
            if idle >= HEARTBEAT_S:
                idle = 0.0
                yield b": keep-alive\n\n"
            continue
        with path.open("rb") as fh:
            fh.seek(position)
            chunk = fh.read(BACKLOG_BYTES)
            position = fh.tell()
        *lines, pending = (pending + chunk).split(b"\n")
        for raw in lines:
            yield sse_event(raw.decode("utf-8", "replace")[:MAX_LINE])
        idle = 0.0


def _end(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return 0, 0
    return stat.st_size, stat.st_ino
