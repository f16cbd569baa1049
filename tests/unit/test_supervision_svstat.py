"""Parsing `s6-svstat -o up,wantedup,...` output."""

from __future__ import annotations

import pytest

from hermes_container.supervision.svstat import FIELDS, parse_svstat

EARLY = "@400000006b06ca0b115e79ef"
LATE = "@400000006b06ca0b123bcd4f"


def test_fields_are_the_documented_ones() -> None:
    assert FIELDS[:5] == ("up", "wantedup", "normallyup", "ready", "paused")


def test_up_and_ready() -> None:
    st = parse_svstat(f"true true false true false 6572 -1 -1 {EARLY} {LATE} 12\n")
    assert st.up and st.wanted_up and st.ready and st.pid == 6572
    assert st.exit_code is None and st.signal is None and st.updown_for == 12
    assert not st.finishing and not st.down_and_finished


def test_down_after_signal_finish_over() -> None:
    st = parse_svstat(f"false false true false false -1 -1 15 {EARLY} {LATE} 3")
    assert not st.up and st.pid is None and st.signal == 15 and st.exit_code is None
    assert st.down_and_finished


def test_down_while_finish_runs() -> None:
    st = parse_svstat(f"false true true false false -1 78 0 {LATE} {EARLY} 0")
    assert st.exit_code == 78 and st.signal is None and st.finishing


@pytest.mark.parametrize("text", ["", "up", "maybe true false true false 1 2 3 @a @b 4"])
def test_garbage_is_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_svstat(text)
