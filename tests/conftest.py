"""Fixtures shared by every tier."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hermes_container.home import HermesHome

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def hermes_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HermesHome]:
    """A fresh HERMES_HOME, also exported to the environment for subprocesses."""
    root = tmp_path / "home"
    monkeypatch.setenv("HERMES_HOME", str(root))
    monkeypatch.delenv("HERMES_PROFILE", raising=False)
    monkeypatch.delenv("HERMES_GATEWAY_PORT_BASE", raising=False)
    yield HermesHome(root)


def run_hermes(
    *args: str, env: dict[str, str] | None = None, input: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess (`python -m hermes_container`)."""
    return subprocess.run(
        [sys.executable, "-m", "hermes_container", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        input=input,
        timeout=timeout,
        check=False,
    )
