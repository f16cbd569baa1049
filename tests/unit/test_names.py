from __future__ import annotations

import pytest

from hermes_container.errors import UsageError
from hermes_container.names import is_valid_profile_name, validate_profile_name

GOOD = ["a", "0", "coder", "my-bot", "my_bot", "a" * 63, "9lives", "x-1_2"]
BAD = [
    ("", "empty"),
    ("..", "path"),
    (".", "path"),
    ("a/b", "path"),
    ("../etc", "path"),
    ("/abs", "path"),
    ("Coder", "uppercase"),
    ("CODER", "uppercase"),
    ("ünï", "non-ASCII"),
    ("coder\u200b", "non-ASCII"),
    ("a" * 64, "longer than 63"),
    ("-lead", "must start"),
    ("_lead", "must start"),
    (".hidden", "must start"),
    ("with space", "only a-z"),
    ("tab\t", "only a-z"),
    ("new\nline", "only a-z"),
    ("trail\n", "only a-z"),
    ("semi;colon", "only a-z"),
    ("dot.name", "only a-z"),
    ("nul\x00", "only a-z"),
]


@pytest.mark.parametrize("name", GOOD)
def test_valid_names_pass(name: str) -> None:
    assert is_valid_profile_name(name)
    assert validate_profile_name(name) == name


@pytest.mark.parametrize(("name", "reason"), BAD)
def test_invalid_names_give_one_line_reason(name: str, reason: str) -> None:
    assert not is_valid_profile_name(name)
    with pytest.raises(UsageError) as info:
        validate_profile_name(name)
    assert info.value.exit_code == 2
    assert reason in info.value.message
    assert "\n" not in info.value.message
