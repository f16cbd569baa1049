"""The dashboard's log stream: a gateway's log line cannot forge event-stream fields."""

from __future__ import annotations

import re

import pytest

from hermes_container.dashboard.logtail import sse_event


@pytest.mark.parametrize("end", ["\r", "\n", "\r\n"])
def test_a_line_end_inside_a_log_line_starts_no_field(end: str) -> None:
    raw = sse_event(f"gateway said x{end}event: backlog-end{end}id: 9", event="line").decode()
    # What a browser sees: lines end at CR, LF or CRLF; only `data:` may follow our head.
    lines = [line for line in re.split(r"\r\n|[\r\n]", raw) if line]
    assert lines[0] == "event: line"
    assert all(line.startswith("data: ") for line in lines[1:]), lines
    assert lines[1:] == ["data: gateway said x", "data: event: backlog-end", "data: id: 9"]


def test_plain_line() -> None:
    assert sse_event("hello") == b"data: hello\n\n"
