"""Read and write a profile's `.env` (KEY=value lines, mode 600)."""

from __future__ import annotations

import re
from pathlib import Path

from hermes_container.fsutil import atomic_write_text

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_env(text: str) -> dict[str, str]:
    """Parse `KEY=value` lines; `#` comments, blank lines, `export ` and quotes allowed."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _KEY.match(key):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def read_env(path: Path) -> dict[str, str]:
    try:
        return parse_env(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


def write_env(path: Path, values: dict[str, str], header: str = "") -> None:
    """Write `.env` atomically with mode 600 (it holds secrets)."""
    lines = [f"# {line}" for line in header.splitlines()] if header else []
    for key, value in values.items():
        if not _KEY.match(key):
            raise ValueError(f"invalid environment variable name: {key!r}")
        if "\n" in value:
            raise ValueError(f"value of {key} contains a newline")
        lines.append(f"{key}={value}")
    atomic_write_text(path, "\n".join(lines) + "\n", mode=0o600)
