"""Round-trip editing of config.yaml text: every line but the changed one is kept byte
for byte, comments stay where they were, and what the gateway's parser reads is exactly
the old mapping with the one change."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from hermes_container import config_edit
from hermes_container.config import render_config
from tests.unit.conftest import line_diff

TEMPLATE = render_config(8643)  # what `profile create` writes
HAND_WRITTEN = """\
# My profile.
model:
  # the provider
  base_url: http://127.0.0.1:9/v1   # local
  name: m1  # which model
  # timeouts, in seconds
  read_timeout_s: 30

# the listener
gateway:
  port: 8650
  persona: always
# kanban settings below, one day
"""
ODD = """\
---
model:
    base_url:   http://127.0.0.1:9/v1
    name:  m1     # spaced
gateway: {port: 8650}
...
"""
SAMPLES = {"template": TEMPLATE, "hand": HAND_WRITTEN, "odd": ODD}


def _set(text: str, name: str, value: object) -> str:
    return config_edit.edited_text(text, {name: value}, "config.yaml")


def _unset(text: str, name: str) -> str:
    doc = config_edit._Document(text, Path("config.yaml"))
    assert config_edit._unset_path(doc, name)
    return doc.result()


def _expected(text: str, name: str, value: object, *, unset: bool = False) -> Any:
    data = copy.deepcopy(yaml.safe_load(text))
    section, _, leaf = name.partition(".")
    if unset:
        del data[section][leaf]
        if not data[section]:
            del data[section]
    else:
        data.setdefault(section, {})[leaf] = value
    return data


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_changing_a_value_changes_only_its_line(sample: str) -> None:
    text = SAMPLES[sample]
    after = _set(text, "model.name", "m2")
    removed, added = line_diff(text, after)
    assert len(removed) == 1 and "name:" in removed[0], (removed, added)
    assert len(added) == 1 and "name: m2" in added[0], (removed, added)
    assert yaml.safe_load(after) == _expected(text, "model.name", "m2")
    if "#" in removed[0]:  # an end-of-line comment stays on its line
        assert removed[0][removed[0].index("#") :] in added[0]


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_a_new_key_adds_one_line_in_its_section(sample: str) -> None:
    text = SAMPLES[sample]
    after = _set(text, "model.connect_timeout_s", 3)
    removed, added = line_diff(text, after)
    assert removed == [] and [a.strip() for a in added] == ["connect_timeout_s: 3"]
    assert yaml.safe_load(after) == _expected(text, "model.connect_timeout_s", 3)


def test_a_new_key_goes_before_the_comments_of_the_next_section() -> None:
    after = _set(HAND_WRITTEN, "model.connect_timeout_s", 3)
    lines = after.splitlines()
    assert lines[lines.index("  read_timeout_s: 30") + 1] == "  connect_timeout_s: 3"
    assert lines[-1] == "# kanban settings below, one day"


def test_a_new_section_keeps_the_end_of_file_comment_last() -> None:
    after = _set(HAND_WRITTEN, "kanban.max_in_progress", 3)
    assert after.endswith("kanban:\n  max_in_progress: 3\n# kanban settings below, one day\n")
    removed, added = line_diff(HAND_WRITTEN, after)
    assert removed == [] and added == ["kanban:", "  max_in_progress: 3"]


def test_a_new_key_in_a_flow_mapping_stays_in_it() -> None:
    after = _set(ODD, "gateway.host", "127.0.0.2")
    assert line_diff(ODD, after) == (
        ["gateway: {port: 8650}"],
        ["gateway: {port: 8650, host: 127.0.0.2}"],
    )
    assert after.startswith("---\n") and after.endswith("...\n")


def test_four_space_indentation_is_kept_for_new_keys() -> None:
    after = _set(ODD, "model.client", "httpx")
    assert "    client: httpx" in after.splitlines()


@pytest.mark.parametrize(
    ("name", "removed_line"),
    [
        ("model.name", "  name: m1  # which model"),
        ("model.read_timeout_s", "  read_timeout_s: 30"),
        ("model.base_url", "  base_url: http://127.0.0.1:9/v1   # local"),
        ("gateway.persona", "  persona: always"),
    ],
)
def test_unset_removes_only_its_line(name: str, removed_line: str) -> None:
    after = _unset(HAND_WRITTEN, name)
    assert line_diff(HAND_WRITTEN, after) == ([removed_line], [])
    assert yaml.safe_load(after) == _expected(HAND_WRITTEN, name, None, unset=True)


def test_unset_of_a_sections_last_key_removes_the_section() -> None:
    text = "model:\n  name: m\n# about kanban\nkanban:\n  failure_limit: 3\n# the end\n"
    after = _unset(text, "kanban.failure_limit")
    assert after == "model:\n  name: m\n# about kanban\n# the end\n"


@pytest.mark.parametrize("value", ["yes", "no", "on", "null", "~", "1:20", "0o17", "1e3", "a: b"])
def test_strings_the_gateway_would_misread_are_quoted(value: str) -> None:
    after = _set(TEMPLATE, "model.name", value)
    assert yaml.safe_load(after)["model"]["name"] == value
    assert len(line_diff(TEMPLATE, after)[1]) == 1


def test_a_long_value_is_never_folded() -> None:
    long_name = "x" * 300
    after = _set(TEMPLATE, "model.name", long_name)
    assert f"  name: {long_name}" in after.splitlines()


def test_an_empty_file_gets_the_key() -> None:
    assert yaml.safe_load(_set("", "model.name", "m")) == {"model": {"name": "m"}}
    after = _set("# only a comment\n", "model.name", "m")
    assert after.startswith("# only a comment\n") and yaml.safe_load(after) == {
        "model": {"name": "m"}
    }


@pytest.mark.parametrize("sample", sorted(SAMPLES))
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("model.base_url", "https://api.example/v1"),
        ("model.read_timeout_s", 7.5),
        ("gateway.port", 9001),
        ("gateway.host", "0.0.0.0"),
        ("jobs.max_concurrent", 2),
    ],
)
def test_every_edit_reads_back_as_the_old_mapping_plus_the_change(
    sample: str, name: str, value: object
) -> None:
    text = SAMPLES[sample]
    after = _set(text, name, value)
    assert yaml.safe_load(after) == _expected(text, name, value)
    removed, added = line_diff(text, after)
    assert len(removed) <= 1 and 1 <= len(added) <= 2, (removed, added)
