"""One on/off rule for every HERMES_* switch (the shell's is_truthy applies the same)."""

from __future__ import annotations

import pytest

from hermes_container.envflags import env_flag, env_switch, is_falsy, is_truthy


@pytest.mark.parametrize("value", ["1", "true", "yes", "TRUE", "Yes", " yes ", "tRuE"])
def test_on(value: str) -> None:
    assert is_truthy(value)
    assert env_flag("HERMES_X", {"HERMES_X": value})


@pytest.mark.parametrize("value", [None, "", "0", "false", "no", "on", "y", "2", "yes please"])
def test_off(value: str | None) -> None:
    assert not is_truthy(value)
    assert not env_flag("HERMES_X", {} if value is None else {"HERMES_X": value})


@pytest.mark.parametrize("value", ["0", "false", "no", "NO", " False "])
def test_on_by_default_switch_turned_off(value: str) -> None:
    assert is_falsy(value)
    assert not env_switch("HERMES_FIX_MODES", {"HERMES_FIX_MODES": value})


@pytest.mark.parametrize("value", [None, "", "1", "yes", "off", "n", "disable"])
def test_on_by_default_switch_stays_on(value: str | None) -> None:
    # A typo never disables a safeguard.
    assert env_switch("HERMES_FIX_MODES", {} if value is None else {"HERMES_FIX_MODES": value})
