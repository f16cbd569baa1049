"""Fixtures shared by every tier."""

from __future__ import annotations

import os
import socket
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


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def set_port(profile_dir: Path, port: int | None = None) -> int:
    """Rewrite the `port:` line of a profile's config.yaml (default: a port free right now,
    so tests never collide); returns the port."""
    port = free_port() if port is None else port
    config = profile_dir / "config.yaml"
    lines = [
        f"  port: {port}" if line.startswith("  port:") else line
        for line in config.read_text().splitlines()
    ]
    config.write_text("\n".join(lines) + "\n")
    return port


@pytest.fixture(autouse=True)
def _restore_umask() -> Iterator[None]:
    """`hermes_container.cli.main` sets umask 077 for its process; a test that calls it
    in-process must not change what later tests create."""
    before = os.umask(0o022)
    os.umask(before)
    yield
    os.umask(before)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """A real PostgreSQL server for the session (tests/postgres_server.py); skips
    without the binaries unless HERMES_REQUIRE_POSTGRES=1."""
    from tests.postgres_server import running_server

    with running_server() as server:
        yield server
