"""Which of a profile's settings changed since its gateway last started or reloaded.

A profile's settings are edited by hand (config.yaml, .env, SOUL.md) or by commands;
the ledger's `profile.config_changed` names the keys that changed, never a value. The
gateway checks at each start: it fingerprints the settings (each key's value hashed)
and compares with the fingerprint it kept last time, in a 0600 file beside them. So an
edit is recorded when it takes effect, whoever made it, with no watcher running.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

from hermes_container.home import CONFIG_FILE, ENV_FILE, SOUL_FILE

FINGERPRINT_FILE = ".settings-fingerprint.json"
MAX_KEYS = 50  # keys named in one event; more are counted, not listed


def _digest(value: object) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix or "(root)"] = _digest(value)


def fingerprint(profile_dir: Path) -> dict[str, str]:
    """Dotted key -> a short hash of its value: config.yaml's leaves, `env.NAME` for each
    .env entry, `soul` for SOUL.md. A file that cannot be read or parsed is one key."""
    from hermes_container.config import load_yaml
    from hermes_container.envfile import read_env
    from hermes_container.errors import HermesError

    out: dict[str, str] = {}
    try:
        _flatten("", load_yaml(profile_dir / CONFIG_FILE), out)
    except (HermesError, OSError) as exc:
        out[CONFIG_FILE] = _digest(f"unreadable: {type(exc).__name__}")
    with contextlib.suppress(OSError):  # no .env: no keys from it
        for name, value in read_env(profile_dir / ENV_FILE).items():
            out[f"env.{name}"] = _digest(value)
    with contextlib.suppress(OSError):
        out["soul"] = _digest((profile_dir / SOUL_FILE).read_text(errors="replace"))
    return out


def changed_keys(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def check(profile_dir: Path) -> list[str] | None:
    """Keys changed since the last check (None: this is the first, nothing to compare);
    the new fingerprint is kept for the next."""
    from hermes_container.fsutil import atomic_write_json

    path = profile_dir / FINGERPRINT_FILE
    now = fingerprint(profile_dir)
    try:
        before = json.loads(path.read_text())
        if not isinstance(before, dict):
            before = None
    except (OSError, ValueError):
        before = None
    if before == now:
        return []
    atomic_write_json(path, now)
    return None if before is None else changed_keys(before, now)


def event_data(keys: list[str]) -> dict[str, object]:
    return {"keys": keys[:MAX_KEYS], "count": len(keys)}
