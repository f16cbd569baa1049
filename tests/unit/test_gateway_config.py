"""Bad configuration: one clear line and exit 78 (the slot parks), nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from hermes_container.errors import ConfigError
from hermes_container.gateway.profile_settings import load_settings
from hermes_container.home import GATEWAY_LOCK, STATE_FILE
from tests.conftest import run_hermes
from tests.unit.conftest import GatewayProfile

ROOT_OK = {"HERMES_ALLOW_ROOT_GATEWAY": "1"}


def _drop_api_key(profile: GatewayProfile) -> None:
    env = profile.dir / ".env"
    lines = [ln for ln in env.read_text().splitlines() if not ln.startswith("API_SERVER_KEY=")]
    env.write_text("\n".join(lines) + "\n")


def _set_yaml(text: str) -> object:
    return lambda p: (p.dir / "config.yaml").write_text(text)


BAD_CONFIGS = {
    "no API_SERVER_KEY": (_drop_api_key, "API_SERVER_KEY is missing"),
    "port is text": (lambda p: p.configure(port="http"), "gateway.port 'http' is not a port"),
    "port out of range": (lambda p: p.configure(port=70000), "gateway.port 70000"),
    "port missing": (lambda p: p.configure(port=None), "gateway.port is missing"),
    "malformed YAML": (_set_yaml("model: [unclosed\n"), "malformed YAML"),
    "top level not a mapping": (_set_yaml("- a\n- b\n"), "expected a mapping"),
    "no base_url": (lambda p: p.configure(model={"base_url": None}), "model.base_url is missing"),
    "base_url not http": (
        lambda p: p.configure(model={"base_url": "ftp://x"}),
        "must be an http(s) URL",
    ),
    "no model name": (lambda p: p.configure(model={"name": None}), "model.name is missing"),
    "bad timeout": (
        lambda p: p.configure(model={"read_timeout_s": -1}),
        "model.read_timeout_s must be a positive number",
    ),
    "bad body limit": (
        lambda p: p.configure(max_body_bytes="1MB"),
        "gateway.max_body_bytes must be a positive integer",
    ),
    "model not a mapping": (_set_yaml("model: 3\ngateway: {port: 1}\n"), "'model' must be"),
    "unknown persona mode": (
        lambda p: p.configure(persona="sometimes"),
        "gateway.persona must be always or unless-client-system, not 'sometimes'",
    ),
    "persona not a string": (
        lambda p: p.configure(persona=True),
        "gateway.persona must be always or unless-client-system, not True",
    ),
    "bad response limit": (
        lambda p: p.configure(max_response_bytes=0),
        "gateway.max_response_bytes must be a positive integer",
    ),
    "model key with a space": (
        lambda p: p.configure(model={"api_key": "sk-a b"}),
        "model API key (model.api_key / HERMES_MODEL_API_KEY) contains characters",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_exits_78_with_one_line(profile: GatewayProfile, case: str) -> None:
    breaker, expected = BAD_CONFIGS[case]
    breaker(profile)  # type: ignore[operator]
    proc = run_hermes("gateway", "run", "--supervised", env=ROOT_OK)
    assert proc.returncode == 78, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("hermes: error:")
    assert expected in proc.stderr
    assert not (profile.dir / GATEWAY_LOCK).exists()
    assert not (profile.dir / STATE_FILE).exists()


def test_missing_profile_is_refused(profile: GatewayProfile) -> None:
    proc = run_hermes("-p", "ghost", "gateway", "run", env=ROOT_OK)
    assert proc.returncode == 1 and "ghost" in proc.stderr


def test_invalid_profile_name_is_a_usage_error(profile: GatewayProfile) -> None:
    proc = run_hermes("-p", "../etc", "gateway", "run", env=ROOT_OK)
    assert proc.returncode == 2 and "invalid profile name" in proc.stderr


def test_settings_defaults_and_precedence(profile: GatewayProfile) -> None:
    env_file = profile.dir / ".env"
    env_file.write_text(env_file.read_text() + "HERMES_MODEL_API_KEY=from-dotenv\n")
    (profile.dir / "SOUL.md").write_text("  You are terse.  \n")
    s = load_settings("default", profile.dir, {"HERMES_GATEWAY_HOST": "0.0.0.0"})
    assert s.host == "0.0.0.0" and s.port == profile.port
    assert s.model_api_key == "from-dotenv" and s.soul == "You are terse."
    assert s.max_body_bytes == 1024 * 1024 and s.shutdown_grace_s == 10
    assert s.max_response_bytes == 16 * 1024 * 1024 and s.persona == "always"
    assert s.completions_url == profile.upstream.base_url + "/chat/completions"
    assert "from-dotenv" not in repr(s) and s.api_key not in repr(s)

    profile.configure(
        model={"api_key": "from-config"},
        host="127.0.0.2",
        persona="unless-client-system",
        max_response_bytes=4096,
    )
    s = load_settings("default", profile.dir, {"HERMES_GATEWAY_HOST": "0.0.0.0"})
    assert s.host == "127.0.0.2" and s.model_api_key == "from-config"
    assert s.persona == "unless-client-system" and s.max_response_bytes == 4096


def test_settings_host_defaults_to_loopback(profile: GatewayProfile) -> None:
    assert load_settings("default", profile.dir, {}).host == "127.0.0.1"


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config\.yaml is missing"):
        load_settings("x", tmp_path, {})
