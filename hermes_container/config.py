"""A profile's `config.yaml`: model provider settings and its gateway port."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hermes_container.errors import ConfigError
from hermes_container.fsutil import atomic_write_text
from hermes_container.home import CONFIG_FILE

DEFAULT_PORT_BASE = 8642
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"
DASHBOARD_DEFAULT_PORT = 9119


def port_base(env: dict[str, str] | None = None) -> int:
    """The default profile's port; new profiles take the lowest free one above it."""
    environ = os.environ if env is None else env
    raw = environ.get("HERMES_GATEWAY_PORT_BASE", "").strip()
    if not raw:
        return DEFAULT_PORT_BASE
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"HERMES_GATEWAY_PORT_BASE={raw!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise ConfigError(f"HERMES_GATEWAY_PORT_BASE={value} is outside 1-65535")
    return value


@dataclass(frozen=True)
class ProfileConfig:
    raw: dict[str, Any]

    @property
    def port(self) -> int | None:
        gateway = self.raw.get("gateway")
        port = gateway.get("port") if isinstance(gateway, dict) else None
        if isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535:
            return port
        return None


def load_yaml(path: Path) -> dict[str, Any]:
    """Load a YAML mapping; a missing file is empty, a malformed one a ConfigError."""
    import yaml  # lazy: keeps `hermes --help` free of it

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: malformed YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_config(profile_dir: Path) -> ProfileConfig:
    return ProfileConfig(load_yaml(profile_dir / CONFIG_FILE))


def render_config(
    port: int, *, base_url: str = DEFAULT_BASE_URL, model: str = DEFAULT_MODEL
) -> str:
    return (
        "# Hermes profile configuration.\n"
        "model:\n"
        "  # Any OpenAI-compatible endpoint. The API key is read from .env\n"
        "  # (HERMES_MODEL_API_KEY) or from model.api_key here.\n"
        f"  base_url: {base_url}\n"
        f"  name: {model}\n"
        "gateway:\n"
        "  # Unique per profile; assigned at creation so profiles never collide.\n"
        f"  port: {port}\n"
    )


def write_config_data(profile_dir: Path, data: dict[str, Any]) -> None:
    import yaml

    text = "# Hermes profile configuration.\n" + yaml.safe_dump(data, sort_keys=False)
    atomic_write_text(profile_dir / CONFIG_FILE, text)
