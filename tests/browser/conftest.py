"""Headless Chromium (Debian's /usr/bin/chromium) driven by Playwright for Python.

Playwright's own browser download is never used: the system Chromium is launched
through `executable_path`. Without it (or without playwright) the tier is skipped,
unless HERMES_REQUIRE_BROWSER=1 (CI), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("HERMES_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _unavailable(reason: str) -> None:
    if os.environ.get("HERMES_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}; HERMES_REQUIRE_BROWSER=1 forbids skipping")
    pytest.skip(reason)


# Module scope, not session: Playwright's sync API keeps an asyncio loop running in
# this thread while it is open, which would break every later test that calls
# asyncio.run() in the same pytest process.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        _unavailable(f"{CHROMIUM} not found (apt-get install chromium)")
    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def require_s6() -> None:
    missing = [
        t for t in ("s6-svscan", "s6-supervise", "s6-svc", "s6-svstat") if not shutil.which(t)
    ]
    if missing:
        reason = f"s6 binaries missing: {', '.join(missing)}"
        if (
            os.environ.get("HERMES_REQUIRE_BROWSER") == "1"
            or os.environ.get("HERMES_REQUIRE_S6") == "1"
        ):
            pytest.fail(reason)
        pytest.skip(reason)
