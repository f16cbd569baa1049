"""Fixtures shared by every tier."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    what: str = "condition",
    *,
    interval: float = 0.05,
    tolerate: tuple[type[BaseException], ...] = (),
) -> Any:
    """Poll `predicate` until it returns something truthy and return that; fail the test
    after `timeout` seconds. Exceptions of the `tolerate` types count as "not yet"."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = predicate()
        except tolerate as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what} (last: {last!r})"
            )
        time.sleep(interval)
