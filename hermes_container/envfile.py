"""Read and write a profile's `.env` (KEY=value lines, mode 600)."""

from __future__ import annotations

import re
from pathlib import Path

from hermes_container.fsutil import atomic_write_text

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _assignment(line: str) -> tuple[str, str] | None:
    """(key, value) of a `KEY=value` line, or None for a comment, blank or other line."""
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    line = line.removeprefix("export ").strip()
    key, sep, value = line.partition("=")
    key = key.strip()
    if not sep or not _KEY.match(key):
        return None
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return key, value


def parse_env(text: str) -> dict[str, str]:
    """Parse `KEY=value` lines; `#` comments, blank lines, `export ` and quotes allowed."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        found = _assignment(line)
        if found is not None:
            values[found[0]] = found[1]
    return values


def read_env(path: Path) -> dict[str, str]:
    try:
        return parse_env(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


def _line(key: str, value: str) -> str:
    if not _KEY.match(key):
        raise ValueError(f"invalid environment variable name: {key!r}")
    if "\n" in value or "\r" in value:
        raise ValueError(f"value of {key} contains a line break")
    return f"{key}={value}"


def write_env(path: Path, values: dict[str, str], header: str = "") -> None:
    """Write `.env` atomically with mode 600 (it holds secrets)."""
    lines = [f"# {line}" for line in header.splitlines()] if header else []
    lines += [_line(key, value) for key, value in values.items()]
    atomic_write_text(path, "\n".join(lines) + "\n", mode=0o600)


def update_env(path: Path, updates: dict[str, str], header: str = "") -> None:
    """Set `updates` in `.env` and keep everything else as it was: comments, blank lines,
    other entries and their order. A key already there is replaced where it stands (its
    later duplicates, which would win over it, go); a new one is appended. Atomic, mode
    600; a missing file is written whole, `header` first."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        write_env(path, updates, header)
        return
    pending = dict(updates)
    done: set[str] = set()
    lines = []
    for line in text.splitlines():
        found = _assignment(line)
        key = found[0] if found is not None else None
        if key in done:
            continue  # a later duplicate would override the new value
        if key is not None and key in pending:
            lines.append(_line(key, pending.pop(key)))
            done.add(key)
        else:
            lines.append(line)
    lines += [_line(key, value) for key, value in pending.items()]
    atomic_write_text(path, "\n".join(lines) + "\n", mode=0o600)
