"""Profile name rules: `^[a-z0-9][a-z0-9_-]{0,62}$`, nothing else."""

from __future__ import annotations

import re

from hermes_container.errors import UsageError

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}", re.ASCII)
MAX_NAME_LENGTH = 63


def is_valid_profile_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


def validate_profile_name(name: str) -> str:
    """Return `name` unchanged or raise a one-line UsageError saying what is wrong."""
    if is_valid_profile_name(name):
        return name
    if not name:
        reason = "it is empty"
    elif len(name) > MAX_NAME_LENGTH:
        reason = f"it is longer than {MAX_NAME_LENGTH} characters"
    elif not name.isascii():
        reason = "it contains non-ASCII characters"
    elif "/" in name or name in (".", ".."):
        reason = "it looks like a path"
    elif name != name.lower():
        reason = "it contains uppercase letters"
    elif not name[0].isalnum():
        reason = "it must start with a lowercase letter or a digit"
    else:
        reason = "only a-z, 0-9, '_' and '-' are allowed"
    shown = name if len(name) <= 40 else name[:40] + "..."
    raise UsageError(
        f"invalid profile name {shown!r}: {reason} (expected ^[a-z0-9][a-z0-9_-]{{0,62}}$)"
    )
