"""The dispatcher's settings: the `kanban:` section of the default profile's config.yaml.

Every key parses; a value that cannot be used falls back to its default with a warning
naming the key; the file is read again whenever its bytes change, and a dispatcher
logs each distinct warning once, not once per tick.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hermes_container.home import HermesHome
from hermes_container.kanban.dispatcher import Dispatcher
from hermes_container.kanban.model import ClaimLimits, RetryPolicy
from hermes_container.kanban.settings import KanbanSettings, SettingsFile, parse
from hermes_container.kanban.store import Store, open_store
from hermes_container.profiles import ensure_default_profile

WHERE = "config.yaml kanban"

ALL_KEYS: dict[str, Any] = {
    "default_assignee": "coder",
    "max_in_progress": 5,
    "max_in_progress_per_profile": 2,
    "failure_limit": 4,
    "dispatch_interval_seconds": 12.5,
    "claim_ttl_seconds": 45,
    "retry_backoff_seconds": 3,
    "retry_backoff_max_seconds": 90,
    "rate_limit_cooldown_seconds": 7,
    "request_timeout_seconds": 300,
}


def warnings_naming(settings: KanbanSettings, key: str) -> list[str]:
    return [w for w in settings.warnings if f"kanban.{key}" in w]


def test_no_section_means_the_defaults_without_warnings() -> None:
    settings = parse(None, WHERE)
    assert settings == KanbanSettings()
    assert settings.warnings == ()
    assert settings.default_assignee is None
    assert settings.max_in_progress == 8
    assert settings.max_in_progress_per_profile is None
    assert settings.failure_limit == 2


def test_every_key_is_read() -> None:
    settings = parse(dict(ALL_KEYS), WHERE)
    assert settings.warnings == ()
    assert settings.default_assignee == "coder"
    assert settings.max_in_progress == 5
    assert settings.max_in_progress_per_profile == 2
    assert settings.failure_limit == 4
    assert settings.dispatch_interval_seconds == 12.5
    assert settings.claim_ttl_seconds == 45.0
    assert settings.retry_backoff_seconds == 3.0
    assert settings.retry_backoff_max_seconds == 90.0
    assert settings.rate_limit_cooldown_seconds == 7.0
    assert settings.request_timeout_seconds == 300.0
    # ... and reaches the store's claim caps and failure accounting.
    assert settings.limits == ClaimLimits(
        max_in_progress=5, max_in_progress_per_profile=2, claim_ttl_seconds=45.0
    )
    policy = settings.retry_policy
    assert isinstance(policy, RetryPolicy)
    assert (policy.failure_limit, policy.backoff_seconds, policy.backoff_max_seconds) == (
        4,
        3.0,
        90.0,
    )


@pytest.mark.parametrize("value", ["", "   ", "\t\n"])
def test_empty_or_whitespace_default_assignee_is_off(value: str) -> None:
    settings = parse({"default_assignee": value}, WHERE)
    assert settings.default_assignee is None
    assert settings.warnings == ()


def test_default_assignee_is_stripped() -> None:
    assert parse({"default_assignee": "  coder \n"}, WHERE).default_assignee == "coder"


@pytest.mark.parametrize("value", ["Not A Name", "../etc", ["coder"], {"a": 1}, True])
def test_unusable_default_assignee_is_off_with_a_warning(value: Any) -> None:
    settings = parse({"default_assignee": value}, WHERE)
    assert settings.default_assignee is None
    assert len(warnings_naming(settings, "default_assignee")) == 1
    assert len(settings.warnings) == 1


@pytest.mark.parametrize("key", ["max_in_progress_per_profile", "max_in_progress"])
@pytest.mark.parametrize("value", [0, -1, -50, 2.5, 2.0, "2", None, True, [2]])
def test_a_cap_that_is_not_a_positive_integer_means_no_cap_with_one_warning(
    key: str, value: Any
) -> None:
    settings = parse({key: value}, WHERE)
    assert getattr(settings, key) is None
    assert settings.limits.max_in_progress_per_profile is None or key == "max_in_progress"
    named = warnings_naming(settings, key)
    assert len(named) == 1, settings.warnings
    assert "no cap" in named[0]
    assert len(settings.warnings) == 1


@pytest.mark.parametrize("value", [1, 3, 1000])
def test_a_positive_integer_is_a_cap(value: int) -> None:
    settings = parse({"max_in_progress_per_profile": value, "max_in_progress": value}, WHERE)
    assert settings.max_in_progress_per_profile == value
    assert settings.max_in_progress == value
    assert settings.warnings == ()


@pytest.mark.parametrize("value", [0, -2, 1.5, "3", None, False])
def test_bad_failure_limit_is_the_default_with_a_warning(value: Any) -> None:
    settings = parse({"failure_limit": value}, WHERE)
    assert settings.failure_limit == 2
    assert len(warnings_naming(settings, "failure_limit")) == 1
    assert len(settings.warnings) == 1


SECONDS_KEYS = [
    "dispatch_interval_seconds",
    "claim_ttl_seconds",
    "retry_backoff_seconds",
    "retry_backoff_max_seconds",
    "rate_limit_cooldown_seconds",
    "request_timeout_seconds",
]


@pytest.mark.parametrize("key", SECONDS_KEYS)
@pytest.mark.parametrize("value", [-1, "soon", math.inf, math.nan, True, None, [1]])
def test_bad_seconds_are_the_default_with_a_warning(key: str, value: Any) -> None:
    section = {key: value}
    if key == "retry_backoff_seconds":
        section["retry_backoff_max_seconds"] = 10_000  # keep the ordering check quiet
    settings = parse(section, WHERE)
    assert getattr(settings, key) == getattr(KanbanSettings(), key)
    assert len(warnings_naming(settings, key)) == 1, settings.warnings
    assert len(settings.warnings) == 1


@pytest.mark.parametrize(
    ("key", "too_small"),
    [("dispatch_interval_seconds", 0.05), ("claim_ttl_seconds", 1), ("request_timeout_seconds", 0)],
)
def test_values_that_would_spin_steal_claims_or_fail_every_task_are_refused(
    key: str, too_small: float
) -> None:
    settings = parse({key: too_small}, WHERE)
    assert getattr(settings, key) == getattr(KanbanSettings(), key)
    assert len(warnings_naming(settings, key)) == 1


def test_backoff_max_below_backoff_is_warned_about() -> None:
    settings = parse({"retry_backoff_seconds": 60, "retry_backoff_max_seconds": 10}, WHERE)
    assert len(warnings_naming(settings, "retry_backoff_max_seconds")) == 1


@pytest.mark.parametrize("section", [5, "max_in_progress: 3", ["a"]])
def test_a_section_that_is_not_a_mapping_is_the_defaults_with_a_warning(section: Any) -> None:
    settings = parse(section, WHERE)
    assert settings == KanbanSettings()
    assert len(settings.warnings) == 1
    assert WHERE in settings.warnings[0]


def test_an_unknown_key_is_named_in_a_warning() -> None:
    # A typo must not silently do nothing: the operator meant a cap.
    settings = parse({"max_in_progres_per_profile": 1, "max_in_progress": 3}, WHERE)
    assert settings.max_in_progress == 3
    assert settings.max_in_progress_per_profile is None
    assert len(settings.warnings) == 1
    assert "kanban.max_in_progres_per_profile" in settings.warnings[0]


def test_one_bad_key_does_not_spoil_the_others() -> None:
    settings = parse({**ALL_KEYS, "failure_limit": "lots", "max_in_progress": 0}, WHERE)
    assert settings.failure_limit == 2
    assert settings.max_in_progress is None
    assert settings.max_in_progress_per_profile == 2
    assert settings.default_assignee == "coder"
    assert settings.claim_ttl_seconds == 45.0
    assert len(settings.warnings) == 2


# -- the file -------------------------------------------------------------------------


@pytest.fixture
def home(hermes_home: HermesHome) -> HermesHome:
    ensure_default_profile(hermes_home)
    return hermes_home


def write_section(home: HermesHome, section: Any) -> Path:
    """Set the `kanban:` section of the default profile's config.yaml, keeping the rest."""
    path = home.root / "config.yaml"
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:  # a test broke it on purpose
        data = {}
    data["kanban"] = section
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_file_without_a_section_gives_the_defaults(home: HermesHome) -> None:
    assert SettingsFile(home).read() == KanbanSettings()


def test_a_missing_file_gives_the_defaults(hermes_home: HermesHome) -> None:
    assert not (hermes_home.root / "config.yaml").exists()
    assert SettingsFile(hermes_home).read() == KanbanSettings()


def test_the_file_is_read_again_when_it_changes(home: HermesHome) -> None:
    write_section(home, {"max_in_progress_per_profile": 2})
    settings = SettingsFile(home)
    first = settings.read()
    assert first.max_in_progress_per_profile == 2
    assert settings.read() is first  # unchanged: not parsed again
    # Same size, same clock tick of the file system: still seen.
    write_section(home, {"max_in_progress_per_profile": 3})
    assert settings.read().max_in_progress_per_profile == 3
    write_section(home, {"default_assignee": "coder", "failure_limit": 5})
    again = settings.read()
    assert (again.default_assignee, again.failure_limit) == ("coder", 5)
    assert again.max_in_progress_per_profile is None
    (home.root / "config.yaml").unlink()
    assert settings.read() == KanbanSettings()


def test_a_malformed_file_keeps_what_was_read_before(home: HermesHome) -> None:
    path = write_section(home, {"max_in_progress_per_profile": 2, "default_assignee": "coder"})
    settings = SettingsFile(home)
    assert settings.read().max_in_progress_per_profile == 2
    path.write_text("kanban: [unclosed\n")
    kept = settings.read()
    assert kept.max_in_progress_per_profile == 2
    assert kept.default_assignee == "coder"
    assert len(kept.warnings) == 1
    assert "malformed" in kept.warnings[0]
    write_section(home, {"max_in_progress_per_profile": 4})
    fixed = settings.read()
    assert fixed.max_in_progress_per_profile == 4
    assert fixed.warnings == ()


def test_warnings_name_the_file_and_key(home: HermesHome) -> None:
    write_section(home, {"max_in_progress_per_profile": 0})
    (warning,) = SettingsFile(home).read().warnings
    assert warning.startswith("config.yaml kanban.max_in_progress_per_profile: 0 ")


@pytest.fixture
def store(home: HermesHome, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    monkeypatch.delenv("HERMES_KANBAN_DATABASE_URL", raising=False)
    opened = open_store(home)
    yield opened
    opened.close()


def test_a_dispatcher_logs_each_warning_once_and_rereads_every_tick(
    home: HermesHome, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    write_section(home, {"max_in_progress_per_profile": -1})
    dispatcher = Dispatcher(home, store)
    with caplog.at_level(logging.WARNING, logger="hermes.kanban"):
        for _ in range(3):
            report = dispatcher.tick()
            # Every tick's report carries the warning (the CLI prints it) ...
            assert [w for w in report.warnings if "max_in_progress_per_profile" in w]
        # ... but the log has it once.
        logged = [r.getMessage() for r in caplog.records]
        assert len([m for m in logged if "max_in_progress_per_profile" in m]) == 1
        write_section(home, {"max_in_progress_per_profile": 0, "failure_limit": 0})
        report = dispatcher.tick()
        assert dispatcher.settings().failure_limit == 2
        logged = [r.getMessage() for r in caplog.records]
    # A different problem is a new warning, logged once as well.
    assert len([m for m in logged if "failure_limit" in m]) == 1
    assert len(report.warnings) == 2
    write_section(home, {"default_assignee": "coder"})
    report = dispatcher.tick()
    assert report.warnings == []
    assert report.default_assignee == "coder"
