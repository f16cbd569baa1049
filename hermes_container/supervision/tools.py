"""Locate and run the s6 command-line tools (on PATH, or under s6-overlay's /command)."""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache

from hermes_container.errors import HermesError

S6_OVERLAY_BIN = "/command"


@cache
def find_tool(name: str) -> str | None:
    """Absolute path of an s6/execline tool, or None when it is not installed."""
    found = shutil.which(name)
    if found:
        return os.path.abspath(found)
    candidate = os.path.join(S6_OVERLAY_BIN, name)
    return candidate if os.access(candidate, os.X_OK) else None


def require_tool(name: str) -> str:
    path = find_tool(name)
    if path is None:
        raise HermesError(f"{name} not found on PATH or in {S6_OVERLAY_BIN} (install s6)")
    return path


def run_tool(
    name: str, *args: str, timeout: float = 10.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run an s6 tool; a non-zero exit becomes a one-line HermesError when `check`."""
    argv = [require_tool(name), *args]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise HermesError(f"{name} did not answer within {timeout:g}s") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        reason = detail[-1] if detail else f"exit {proc.returncode}"
        raise HermesError(f"{name} {' '.join(args)} failed: {reason}")
    return proc
