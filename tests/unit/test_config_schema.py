"""The catalogue of config.yaml keys: lookups, the one check per value, and that the
gateway and the dispatcher judge values exactly as the catalogue does."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from hermes_container.config_schema import (
    DEFAULT_ONLY,
    FLOAT,
    INT,
    KEYS,
    check_value,
    display,
    effective_values,
    keys_for,
    lookup,
    mask_userinfo,
    parse_text,
)
from hermes_container.errors import ConfigError
from hermes_container.gateway.profile_settings import Settings, settings_from_raw
from hermes_container.kanban import settings as kanban_settings
from hermes_container.kanban.jobs import settings as jobs_settings

GOOD_RAW = {
    "model": {"base_url": "http://127.0.0.1:9/v1", "name": "m"},
    "gateway": {"port": 8700},
}
DOTENV = {"API_SERVER_KEY": "hk-test"}


def _gateway_error(name: str, value: object, tmp_path: Path) -> str:
    section, _, leaf = name.partition(".")
    raw: dict[str, Any] = {s: dict(v) for s, v in GOOD_RAW.items()}
    raw[section][leaf] = value
    with pytest.raises(ConfigError) as caught:
        settings_from_raw("default", tmp_path, raw, DOTENV, {})
    return caught.value.message


# -- lookups -----------------------------------------------------------------------------


def test_unknown_key_names_the_closest_one() -> None:
    with pytest.raises(ConfigError) as caught:
        lookup("model.nmae")
    assert caught.value.message == "unknown key 'model.nmae' (did you mean 'model.name'?)"
    with pytest.raises(ConfigError, match=r"did you mean 'gateway\.port'"):
        lookup("gateway.prot")


def test_unknown_key_without_a_close_one_points_at_the_list() -> None:
    with pytest.raises(ConfigError) as caught:
        lookup("zzz")
    assert "unknown key 'zzz'" in caught.value.message
    assert "hermes config list" in caught.value.message


def test_dispatcher_keys_belong_to_the_default_profile() -> None:
    assert lookup("kanban.max_in_progress", profile_is_default=True).scope == DEFAULT_ONLY
    with pytest.raises(ConfigError, match=r"default profile's config\.yaml only"):
        lookup("kanban.max_in_progress", profile_is_default=False)
    names = {k.name for k in keys_for(profile_is_default=False)}
    assert "model.name" in names and not any(n.startswith(("kanban.", "jobs.")) for n in names)


def test_every_key_is_documented_and_consistent() -> None:
    for key in KEYS.values():
        assert key.help and key.name.count(".") == 1, key.name
        assert not (key.required and key.default is not None), key.name
        if key.default is not None:
            assert check_value(key, key.default) == key.default, key.name


# -- one check per value ------------------------------------------------------------------

BAD_VALUES = [
    ("model.base_url", "ftp://x", "model.base_url must be an http(s) URL, not 'ftp://x'"),
    ("model.base_url", "http://[::1", "model.base_url must be an http(s) URL"),
    ("model.base_url", "http://h:99999/v1", "model.base_url must be an http(s) URL"),
    ("model.name", "   ", "model.name must be a non-empty string"),
    ("model.name", 5, "model.name must be a non-empty string"),
    ("model.read_timeout_s", -1, "model.read_timeout_s must be a positive number, not -1"),
    ("model.read_timeout_s", 0, "must be a positive number, not 0"),
    ("model.read_timeout_s", True, "must be a positive number, not True"),
    ("model.read_timeout_s", math.nan, "must be a positive number, not nan"),
    ("model.connect_timeout_s", math.inf, "must be a positive number, not inf"),
    ("model.client", "turbo", "model.client must be auto, fast or httpx, not 'turbo'"),
    ("model.proxy", "socks5://u:secret@p:1", "model.proxy must be an http(s) proxy URL"),
    ("gateway.port", "http", "gateway.port 'http' is not a port number (1-65535)"),
    ("gateway.port", 0, "gateway.port 0 is not a port number"),
    ("gateway.port", True, "gateway.port True is not a port number"),
    ("gateway.max_body_bytes", "1MB", "gateway.max_body_bytes must be a positive integer"),
    ("gateway.max_body_bytes", 1.5, "gateway.max_body_bytes must be a positive integer"),
    ("gateway.persona", "sometimes", "must be always or unless-client-system, not 'sometimes'"),
]


@pytest.mark.parametrize(("name", "value", "message"), BAD_VALUES)
def test_bad_values_are_refused_with_one_line(name: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_value(KEYS[name], value)
    assert message in caught.value.message
    assert "\n" not in caught.value.message
    assert "secret" not in caught.value.message  # a proxy password is never repeated


@pytest.mark.parametrize(("name", "value", "message"), BAD_VALUES)
def test_the_gateway_refuses_exactly_what_the_catalogue_refuses(
    name: str, value: object, message: str, tmp_path: Path
) -> None:
    """settings_from_raw (start, reload, `config set`) reports the catalogue's own line."""
    with pytest.raises(ConfigError) as caught:
        check_value(KEYS[name], value)
    gateway_says = _gateway_error(name, value, tmp_path)
    assert gateway_says == f"{tmp_path / 'config.yaml'}: {caught.value.message}"


def test_the_gateway_applies_the_catalogue_defaults(tmp_path: Path) -> None:
    settings = settings_from_raw("default", tmp_path, GOOD_RAW, DOTENV, {})
    fields = {
        "model.connect_timeout_s": settings.connect_timeout_s,
        "model.read_timeout_s": settings.read_timeout_s,
        "model.client": settings.model_client,
        "gateway.max_body_bytes": settings.max_body_bytes,
        "gateway.max_response_bytes": settings.max_response_bytes,
        "gateway.shutdown_grace_s": settings.shutdown_grace_s,
        "gateway.persona": settings.persona,
        "gateway.host": settings.host,
    }
    for name, value in fields.items():
        assert value == KEYS[name].default, name
    assert Settings.__dataclass_fields__["read_timeout_s"].default == 120.0


def test_null_means_unset(tmp_path: Path) -> None:
    raw = {**GOOD_RAW, "model": {**GOOD_RAW["model"], "read_timeout_s": None, "proxy": None}}
    settings = settings_from_raw("default", tmp_path, raw, DOTENV, {})
    assert settings.read_timeout_s == 120.0 and settings.proxy is None
    raw = {**GOOD_RAW, "gateway": {"port": None}}
    assert "gateway.port is missing" in _gateway_message(raw, tmp_path)


def _gateway_message(raw: dict[str, Any], tmp_path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        settings_from_raw("default", tmp_path, raw, DOTENV, {})
    return caught.value.message


def test_the_model_key_check_is_shared(tmp_path: Path) -> None:
    message = _gateway_message_with_env(tmp_path, {"HERMES_MODEL_API_KEY": "sk a"})
    assert "the model API key (model.api_key / HERMES_MODEL_API_KEY) contains" in message


def _gateway_message_with_env(tmp_path: Path, dotenv: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        settings_from_raw("default", tmp_path, GOOD_RAW, {**DOTENV, **dotenv}, {})
    return caught.value.message


# -- the dispatcher's keys: the catalogue's ranges are what its parsers accept -----------


def _dispatcher_warnings(name: str, value: object) -> list[str]:
    """What the dispatcher's parser says about this one key's value (cross-key warnings,
    such as a maximum below its minimum, are config_edit's to check as a whole)."""
    section, _, leaf = name.partition(".")
    if section == "kanban":
        warnings = list(kanban_settings.parse({leaf: value}, "kanban").warnings)
    else:
        warnings = jobs_settings.parse({leaf: value}, "jobs")[1]
    return [w for w in warnings if w.startswith(f"{name}:")]


DISPATCHER_KEYS = [k for k in KEYS.values() if k.scope == DEFAULT_ONLY]


@pytest.mark.parametrize("key", DISPATCHER_KEYS, ids=lambda k: k.name)
def test_dispatcher_ranges_match_its_parsers(key: Any) -> None:
    if key.kind in (INT, FLOAT):
        low = int(key.minimum) if key.kind == INT else key.minimum
        below = low - 1 if key.kind == INT else low - 0.05
        assert check_value(key, low) == low
        assert _dispatcher_warnings(key.name, low) == []
        with pytest.raises(ConfigError):
            check_value(key, below)
        assert _dispatcher_warnings(key.name, below), (key.name, below)
        if key.maximum is not None:
            assert _dispatcher_warnings(key.name, int(key.maximum)) == []
            assert _dispatcher_warnings(key.name, int(key.maximum) + 1)
            with pytest.raises(ConfigError):
                check_value(key, int(key.maximum) + 1)
    else:  # kanban.default_assignee: a profile name
        assert _dispatcher_warnings(key.name, "coder") == []
        assert _dispatcher_warnings(key.name, "Bad/Name")
        with pytest.raises(ConfigError, match="invalid profile name"):
            check_value(key, "Bad/Name")


def test_dispatcher_defaults_match_its_dataclasses() -> None:
    kanban = kanban_settings.KanbanSettings()
    jobs = jobs_settings.JobsSettings()
    for key in DISPATCHER_KEYS:
        section, _, leaf = key.name.partition(".")
        expected = getattr(kanban if section == "kanban" else jobs, leaf)
        assert key.default == expected, key.name
    known = {k.name.partition(".")[2] for k in DISPATCHER_KEYS if k.section == "kanban"}
    assert known == set(kanban_settings._KNOWN)


# -- text from the command line ----------------------------------------------------------


def test_parse_text_types_values_by_key_not_by_yaml() -> None:
    assert parse_text(KEYS["model.read_timeout_s"], "30") == 30  # kept as typed
    assert parse_text(KEYS["model.read_timeout_s"], "2.5") == 2.5
    assert parse_text(KEYS["gateway.port"], "08080") == 8080  # decimal, never octal
    assert parse_text(KEYS["model.name"], "yes") == "yes"  # not a YAML boolean
    assert parse_text(KEYS["model.name"], "1:20") == "1:20"  # not a sexagesimal int
    for name, text in (
        ("gateway.port", "80.5"),
        ("gateway.port", "0x50"),
        ("gateway.max_body_bytes", "1e6"),
        ("model.read_timeout_s", "nan"),
        ("model.read_timeout_s", "abc"),
        ("model.client", "AUTO"),
    ):
        with pytest.raises(ConfigError, match=name):
            parse_text(KEYS[name], text)


# -- what may be shown --------------------------------------------------------------------


def test_secrets_and_passwords_are_never_displayed() -> None:
    assert display(KEYS["model.api_key"], "sk-very-secret") == "(set)"
    assert display(KEYS["model.api_key"], "") == "(not set)"
    shown = display(KEYS["model.proxy"], "http://user:hunter2@proxy:3128")
    assert shown == "http://user:***@proxy:3128"
    assert mask_userinfo("http://h/v1") == "http://h/v1"


def test_effective_values_say_where_each_value_comes_from() -> None:
    raw = {"model": {"name": "m", "read_timeout_s": -3}, "gateway": {"port": 8700}}
    found = {
        e.key.name: e
        for e in effective_values(
            raw,
            {"HERMES_MODEL_API_KEY": "sk-x"},
            {"HERMES_GATEWAY_HOST": "0.0.0.0"},
            profile_is_default=False,
        )
    }
    assert found["model.name"].source == "config.yaml"
    assert found["model.base_url"].source == "missing"
    assert found["model.api_key"].source == ".env" and found["model.api_key"].shown == "(set)"
    assert found["gateway.host"].source == "environment"
    assert found["gateway.host"].value == "0.0.0.0"
    assert found["model.connect_timeout_s"].source == "default"
    assert found["model.proxy"].source == "unset"
    assert "must be a positive number" in (found["model.read_timeout_s"].problem or "")
    assert "kanban.max_in_progress" not in found


@pytest.mark.parametrize("where", ["dotenv", "env"])
def test_a_secret_from_a_file_is_set_and_never_read(where: str, tmp_path: Path) -> None:
    secret = tmp_path / "model-key"
    secret.write_text("sk-from-file\n")
    names = {"HERMES_MODEL_API_KEY_FILE": str(secret)}
    dotenv, env = (names, {}) if where == "dotenv" else ({}, names)
    found = {e.key.name: e for e in effective_values({}, dotenv, env, profile_is_default=False)}
    key = found["model.api_key"]
    assert key.shown == "(set)"
    assert key.source.endswith("HERMES_MODEL_API_KEY_FILE")
    assert key.value == str(secret)  # the path, not what the file holds
