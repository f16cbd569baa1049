"""The exec shim (`root/opt/hermes/bin/hermes`), every branch, outside Docker.

The shim runs with a PATH holding only a fake `id` (reports FAKE_UID), the real `tr`,
and -- when a test wants it -- a fake `s6-setuidgid` that records the user it was asked
for. The venv's `hermes` is a fake that records its argv, uid "view" and HOME. The only
change to the real script is its one `HERMES_VENV_BIN=` line, pointed at the fake, and
its `. /opt/hermes/libexec/lib.sh` line, pointed at the helpers in the checkout.
The main wrapper (`root/opt/hermes/libexec/main`) is covered the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOT = REPO / "root"  # the image's files, laid out as in the image
SHIM = ROOT / "opt" / "hermes" / "bin" / "hermes"
MAIN = ROOT / "opt" / "hermes" / "libexec" / "main"
LIB = ROOT / "opt" / "hermes" / "libexec" / "lib.sh"
VENV_LINE = "HERMES_VENV_BIN=/opt/hermes/.venv/bin/hermes"
SHIM_LINE = "shim=/opt/hermes/bin/hermes"
LIB_LINE = ". /opt/hermes/libexec/lib.sh"

FAKE_HERMES = """#!/bin/sh
# records how it was started, then exits with $FAKE_EXIT
{
  printf '{"argv": ['
  sep=
  for a in "$@"; do printf '%s"%s"' "$sep" "$a"; sep=', '; done
  printf '], "dropped_to": "%s", "home": "%s", "user": "%s"}\\n' \\
    "${FAKE_DROPPED_TO:-}" "${HOME:-}" "${USER:-}"
} > "$FAKE_RECORD"
exit "${FAKE_EXIT:-0}"
"""

FAKE_ID = """#!/bin/sh
# `id -u` for the shim: whatever the test says
[ "$1" = -u ] && { echo "${FAKE_UID:?}"; exit 0; }
exit 1
"""

FAKE_SETUIDGID = """#!/bin/sh
# s6-setuidgid USER PROG...: record USER and exec PROG (the real one would drop privileges)
user=$1; shift
if [ -n "${FAKE_SETUIDGID_FAIL:-}" ]; then
  echo "s6-setuidgid: fatal: unknown user $user" >&2
  exit 111
fi
FAKE_DROPPED_TO=$user
export FAKE_DROPPED_TO
exec "$@"
"""

FAKE_DIRECT = """#!/bin/sh
# stands in for bash/sh/sleep run by the main wrapper
printf '{"argv0": "%s", "dropped_to": "%s", "home": "%s"}\\n' \\
  "$0" "${FAKE_DROPPED_TO:-}" "${HOME:-}" > "$FAKE_RECORD"
"""


def _write_exec(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@dataclass
class Rig:
    tmp: Path
    bin: Path
    shim: Path
    main: Path
    record: Path

    def run(
        self,
        script: Path,
        *args: str,
        uid: int,
        env: dict[str, str] | None = None,
        setuidgid: bool = True,
    ) -> tuple[subprocess.CompletedProcess[str], dict[str, object] | None]:
        setuid_path = self.bin / "s6-setuidgid"
        if setuidgid and not setuid_path.exists():
            _write_exec(setuid_path, FAKE_SETUIDGID)
        if not setuidgid and setuid_path.exists():
            setuid_path.unlink()
        if self.record.exists():
            self.record.unlink()
        full_env = {
            "PATH": str(self.bin),
            "FAKE_UID": str(uid),
            "FAKE_RECORD": str(self.record),
            "HOME": "/root",
            **(env or {}),
        }
        proc = subprocess.run(
            ["/bin/sh", str(script), *args],
            env=full_env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        record = json.loads(self.record.read_text()) if self.record.exists() else None
        return proc, record


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake_hermes = _write_exec(tmp_path / "venv-hermes", FAKE_HERMES)
    _write_exec(bindir / "id", FAKE_ID)
    tr = shutil.which("tr")
    assert tr is not None
    os.symlink(tr, bindir / "tr")

    text = SHIM.read_text()
    assert text.count(VENV_LINE) == 1, "the shim's venv path line changed; update this test"
    assert text.count(LIB_LINE) == 1, "the shim's helpers line changed; update this test"
    text = text.replace(LIB_LINE, f". {LIB}")
    shim = _write_exec(
        tmp_path / "hermes-shim", text.replace(VENV_LINE, f"HERMES_VENV_BIN={fake_hermes}")
    )
    # The main wrapper calls the shim by absolute path: point it at the rig's shim.
    main_text = MAIN.read_text()
    assert main_text.count(SHIM_LINE) == 1, "the main wrapper's shim line changed; update this test"
    assert main_text.count(LIB_LINE) == 1, "main's helpers line changed; update this test"
    main_text = main_text.replace(LIB_LINE, f". {LIB}")
    main = _write_exec(tmp_path / "main", main_text.replace(SHIM_LINE, f"shim={shim}"))
    return Rig(tmp_path, bindir, shim, main, tmp_path / "record.json")


def test_shim_is_posix_sh_and_executable() -> None:
    assert SHIM.read_text().startswith("#!/bin/sh\n")
    assert os.access(SHIM, os.X_OK)


def test_non_root_execs_the_venv_directly(rig: Rig) -> None:
    proc, rec = rig.run(rig.shim, "profile", "list", "--json", uid=1000)
    assert proc.returncode == 0, proc.stderr
    assert rec == {
        "argv": ["profile", "list", "--json"],
        "dropped_to": "",
        "home": "/root",
        "user": "",
    }


def test_non_root_never_needs_s6_setuidgid(rig: Rig) -> None:
    proc, rec = rig.run(rig.shim, "gateway", "status", uid=10000, setuidgid=False)
    assert proc.returncode == 0, proc.stderr
    assert rec is not None and rec["dropped_to"] == ""


def test_arguments_pass_through_verbatim(rig: Rig) -> None:
    args = ("-p", "coder", "chat", "two words", "--", "*")
    for uid in (0, 1000):
        proc, rec = rig.run(rig.shim, *args, uid=uid)
        assert proc.returncode == 0, proc.stderr
        assert rec is not None and rec["argv"] == list(args)


def test_root_drops_to_hermes_with_home_opt_data(rig: Rig) -> None:
    proc, rec = rig.run(rig.shim, "profile", "create", "coder", uid=0)
    assert proc.returncode == 0, proc.stderr
    assert rec == {
        "argv": ["profile", "create", "coder"],
        "dropped_to": "hermes",
        "home": "/opt/data",
        "user": "hermes",
    }


@pytest.mark.parametrize("value", ["1", "true", "yes", "TRUE", "Yes", "YES", "True", "tRuE"])
def test_root_stays_root_when_asked(rig: Rig, value: str) -> None:
    proc, rec = rig.run(
        rig.shim, "gateway", "status", uid=0, env={"HERMES_DOCKER_EXEC_AS_ROOT": value}
    )
    assert proc.returncode == 0, proc.stderr
    assert rec is not None and rec["dropped_to"] == "" and rec["home"] == "/root"


@pytest.mark.parametrize("value", ["0", "false", "no", "", "on", "2", "y", " 1", "yes ", "root"])
def test_any_other_value_drops(rig: Rig, value: str) -> None:
    proc, rec = rig.run(
        rig.shim, "gateway", "status", uid=0, env={"HERMES_DOCKER_EXEC_AS_ROOT": value}
    )
    assert proc.returncode == 0, proc.stderr
    assert rec is not None and rec["dropped_to"] == "hermes" and rec["home"] == "/opt/data"


def test_root_without_s6_setuidgid_exits_126_and_never_runs(rig: Rig) -> None:
    proc, rec = rig.run(rig.shim, "profile", "list", uid=0, setuidgid=False)
    assert proc.returncode == 126
    assert rec is None, "the CLI must not run as root when s6-setuidgid is missing"
    assert "s6-setuidgid" in proc.stderr and "HERMES_DOCKER_EXEC_AS_ROOT" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_root_without_s6_setuidgid_but_opted_in_stays_root(rig: Rig) -> None:
    env = {"HERMES_DOCKER_EXEC_AS_ROOT": "1"}
    proc, rec = rig.run(rig.shim, "profile", "list", uid=0, env=env, setuidgid=False)
    assert proc.returncode == 0, proc.stderr
    assert rec is not None and rec["dropped_to"] == ""


def test_failing_s6_setuidgid_never_falls_through_to_root(rig: Rig) -> None:
    proc, rec = rig.run(rig.shim, "profile", "list", uid=0, env={"FAKE_SETUIDGID_FAIL": "1"})
    assert proc.returncode == 111
    assert rec is None


@pytest.mark.parametrize("uid", [0, 1000])
def test_exit_code_is_the_clis(rig: Rig, uid: int) -> None:
    proc, rec = rig.run(rig.shim, "gateway", "start", uid=uid, env={"FAKE_EXIT": "78"})
    assert proc.returncode == 78
    assert rec is not None


# --- main wrapper (the container CMD) -------------------------------------------------


@pytest.fixture
def direct(rig: Rig) -> Path:
    """Fake bash/sh/sleep on the rig's PATH."""
    for name in ("bash", "sh", "sleep"):
        _write_exec(rig.bin / name, FAKE_DIRECT)
    return rig.bin


@pytest.mark.parametrize("cmd", ["bash", "sh", "sleep"])
def test_main_runs_shells_directly_as_hermes(rig: Rig, direct: Path, cmd: str) -> None:
    proc, rec = rig.run(rig.main, cmd, "-c", "true", uid=0)
    assert proc.returncode == 0, proc.stderr
    assert rec is not None
    assert Path(str(rec["argv0"])).name == cmd
    assert rec["dropped_to"] == "hermes" and rec["home"] == "/opt/data"


def test_main_runs_absolute_shell_paths_directly(rig: Rig, direct: Path) -> None:
    proc, rec = rig.run(rig.main, str(direct / "sleep"), "5", uid=0)
    assert proc.returncode == 0, proc.stderr
    assert rec is not None and rec["dropped_to"] == "hermes"


def test_main_keeps_root_for_shells_only_when_asked(rig: Rig, direct: Path) -> None:
    proc, rec = rig.run(rig.main, "bash", uid=0, env={"HERMES_DOCKER_EXEC_AS_ROOT": "yes"})
    assert proc.returncode == 0, proc.stderr
    assert rec is not None and rec["dropped_to"] == ""


def test_main_sends_everything_else_to_hermes(rig: Rig) -> None:
    proc, rec = rig.run(rig.main, "gateway", "run", uid=0)
    assert proc.returncode == 0, proc.stderr
    assert rec is not None
    assert rec["argv"] == ["gateway", "run"] and rec["dropped_to"] == "hermes"


def test_main_strips_a_leading_hermes(rig: Rig) -> None:
    proc, rec = rig.run(rig.main, "hermes", "-p", "coder", "gateway", "run", uid=0)
    assert proc.returncode == 0, proc.stderr
    assert rec is not None and rec["argv"] == ["-p", "coder", "gateway", "run"]


def test_main_without_a_command_is_a_usage_error(rig: Rig) -> None:
    proc, rec = rig.run(rig.main, uid=0)
    assert proc.returncode == 2 and rec is None
