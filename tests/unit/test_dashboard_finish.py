"""The dashboard slot's finish: one decision, `hermes _dashboard-finish`, for the image's
s6-rc service (root/.../dashboard/finish) and for `hermes supervise --dashboard`.

Exit 125 parks the slot (s6-supervise does not restart it): a disabled dashboard (the
image's HERMES_DASHBOARD switch) and a refused configuration (exit 78). Anything else
is restarted. The image's script runs with its `. /opt/hermes/libexec/lib.sh` line
pointed at the checkout's helpers and a fake `id` (and `s6-setuidgid` for root).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hermes_container.supervision.host import render_dashboard_finish
from tests.conftest import run_hermes

REPO = Path(__file__).resolve().parents[2]
IMAGE_FINISH = REPO / "root" / "etc" / "s6-overlay" / "s6-rc.d" / "dashboard" / "finish"
LIB = REPO / "root" / "opt" / "hermes" / "libexec" / "lib.sh"
LIB_LINE = ". /opt/hermes/libexec/lib.sh"
HERMES = str(Path(sys.executable).parent / "hermes")
PARK = 125

FAKE_ID = '#!/bin/sh\n[ "$1" = -u ] && { echo "${FAKE_UID:?}"; exit 0; }\nexit 1\n'
FAKE_SETUIDGID = '#!/bin/sh\necho "dropped to $1" >&2\nshift\nexec "$@"\n'


@pytest.fixture
def fakes(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("id", FAKE_ID), ("s6-setuidgid", FAKE_SETUIDGID)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def _image_finish(tmp_path: Path) -> Path:
    text = IMAGE_FINISH.read_text()
    assert LIB_LINE in text
    script = tmp_path / "image-finish"
    script.write_text(text.replace(LIB_LINE, f". {LIB}"))
    return script


def _finish(script: Path, exit_code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(script), exit_code, "0"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("switch", ["", "0", "off", "no"])
def test_image_parks_a_disabled_dashboard_without_running_hermes(
    tmp_path: Path, fakes: Path, switch: str
) -> None:
    env = {"HERMES_DASHBOARD": switch, "HERMES_BIN": str(tmp_path / "absent")}
    proc = _finish(_image_finish(tmp_path), "0", {**env, "PATH": f"{fakes}:{os.environ['PATH']}"})
    assert proc.returncode == PARK, proc.stderr
    assert proc.stdout == proc.stderr == ""


@pytest.mark.parametrize(("exit_code", "expected"), [("78", PARK), ("0", 0), ("1", 0), ("256", 0)])
@pytest.mark.parametrize("uid", ["10000", "0"])
def test_image_and_host_decide_alike(
    tmp_path: Path,
    fakes: Path,
    monkeypatch: pytest.MonkeyPatch,
    exit_code: str,
    expected: int,
    uid: str,
) -> None:
    monkeypatch.setenv("HERMES_BIN", HERMES)
    host = tmp_path / "host-finish"
    host.write_text(render_dashboard_finish())
    env = {
        "HERMES_DASHBOARD": "TRUE",
        "HERMES_BIN": HERMES,
        "PATH": f"{fakes}:{os.environ['PATH']}",
        "FAKE_UID": uid,
    }
    image = _finish(_image_finish(tmp_path), exit_code, env)
    assert image.returncode == expected, image.stderr
    # Root runs no Python: the image's script drops to hermes first, as its run does.
    assert ("dropped to hermes" in image.stderr) == (uid == "0"), image.stderr
    hosted = _finish(host, exit_code, env)
    assert hosted.returncode == expected, hosted.stderr
    assert hosted.stdout == image.stdout
    if expected == PARK:
        assert "exit 78" in image.stdout and "parked" in image.stdout
    else:
        assert image.stdout == ""


def test_the_finish_command_is_hidden() -> None:
    assert "_dashboard-finish" not in run_hermes("--help").stdout
    assert run_hermes("_dashboard-finish", "x").returncode == 2  # s6 passes a number
