"""A profile's `config.yaml`: model provider settings and its gateway port."""

from __future__ import annotations

import os
import re

from hermes_container.errors import ConfigError
from hermes_container.home import CONFIG_FILE
from hermes_container.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path
    from typing import Any, TypeGuard

DEFAULT_PORT_BASE = 8642
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"
DASHBOARD_DEFAULT_PORT = 9119
INGRESS_DEFAULT_PORT = 8640


def port_base(env: Mapping[str, str] | None = None) -> int:
    """The default profile's port; new profiles take the lowest free one above it."""
    return env_port("HERMES_GATEWAY_PORT_BASE", DEFAULT_PORT_BASE, env)


def env_port(name: str, default: int, env: Mapping[str, str] | None = None) -> int:
    """Environment variable `name` as a TCP port, `default` when it is unset or empty;
    ConfigError when it is set to anything but a port."""
    environ = os.environ if env is None else env
    raw = environ.get(name, "").strip()
    return parse_port(name, raw) if raw else default


def is_port(value: object) -> TypeGuard[int]:
    """The one test of a TCP port number (1-65535), wherever one comes from: a YAML
    `true` is an int to Python but no port."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


def parse_port(name: str, raw: str) -> int:
    """Environment variable `name`'s value `raw` as a TCP port (1-65535), else ConfigError."""
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a port number") from None
    if not is_port(value):
        raise ConfigError(f"{name}={value} is outside 1-65535")
    return value


class ProfileConfig(Record):
    """A parsed config.yaml; `raw` is the whole mapping."""

    __slots__ = ("raw",)

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw

    @property
    def port(self) -> int | None:
        gateway = self.raw.get("gateway")
        port = gateway.get("port") if isinstance(gateway, dict) else None
        return port if is_port(port) else None


def load_yaml(path: Path) -> dict[str, Any]:
    """Load a YAML mapping; a missing file is empty, a malformed one a ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    return parse_yaml(text, path)


def parse_yaml(text: str, where: Path | str) -> dict[str, Any]:
    """`text` as a YAML mapping (empty: {}); ConfigError naming `where` otherwise."""
    import yaml  # lazy: keeps `hermes --help` free of it

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{where}: malformed YAML{line}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    return data


def load_config(profile_dir: Path) -> ProfileConfig:
    return ProfileConfig(load_yaml(profile_dir / CONFIG_FILE))


def read_port(profile_dir: Path) -> int | None:
    """The profile's gateway port, as `load_config(...).port` would say.

    `gateway status` needs only this one number, and importing PyYAML costs more than
    the rest of the command; so config files in the plain block style we write are
    scanned directly, and anything else is parsed for real.
    """
    try:
        text = (profile_dir / CONFIG_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return load_config(profile_dir).port  # raises the same error a full parse would
    scanned = scan_port(text)
    return load_config(profile_dir).port if isinstance(scanned, _Unsure) else scanned


class _Unsure:
    """The scan met YAML it does not model; only a real parse can tell."""


UNSURE = _Unsure()
# YAML features the scan leaves to PyYAML: quoting, flow style, anchors, aliases, merge
# keys, tags, block scalars, directives, complex keys, tabs, multiple documents.
_FANCY = frozenset("\"'{}[]&*!|>%?@`\t")
_ENTRY = re.compile(r"([A-Za-z0-9_-]+):(?: +(.*))?")
_PORT = re.compile(r"[1-9][0-9]{0,4}")


def _strip_comment(line: str) -> str:
    if line.lstrip().startswith("#"):
        return ""
    cut = line.find(" #")
    return (line if cut < 0 else line[:cut]).rstrip()


def _plain_value(value: str) -> bool:
    """A one-line plain scalar that PyYAML reads as such (no nested mapping or list)."""
    return ": " not in value and not value.endswith(":") and not value.startswith(("- ", "<<"))


def scan_port(text: str) -> int | _Unsure | None:
    """`gateway.port` from a block-style YAML mapping without PyYAML, or UNSURE.

    Every line must be `key: plain-value` or `key:` opening a deeper block, with
    consistent indentation and no duplicate keys; anything else is UNSURE.
    """
    port: int | None = None
    indents = [0]  # indentation of each open block, outermost first
    keys: list[set[str]] = [set()]  # the keys seen in each open block
    path: list[str] = []  # the key that opened each block below the top
    opens_block = False  # the previous entry had no value: a deeper block may follow
    for raw in text.splitlines():
        line = _strip_comment(raw)
        if "\t" in raw:
            return UNSURE  # YAML's tab rules differ in comments, values and indentation
        if not line:
            continue
        if _FANCY.intersection(line) or line.startswith(("---", "...")):
            return UNSURE
        indent = len(line) - len(line.lstrip(" "))
        entry = _ENTRY.fullmatch(line[indent:])
        if entry is None:
            return UNSURE
        key, value = entry.groups()
        if indent > indents[-1]:
            if not opens_block:
                return UNSURE
            indents.append(indent)
            keys.append(set())
        else:
            while indent < indents[-1]:
                indents.pop()
                keys.pop()
                path.pop()
            if indent != indents[-1]:
                return UNSURE
            if path and len(path) >= len(indents):
                path.pop()
        if key in keys[-1] or (value is not None and not _plain_value(value)):
            return UNSURE
        keys[-1].add(key)
        opens_block = value is None
        if opens_block:
            path.append(key)
        elif path == ["gateway"] and key == "port":
            if not _PORT.fullmatch(value):
                return UNSURE
            port = int(value)
    return port if is_port(port) else None


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
