"""HERMES_UID/HERMES_GID and their aliases PUID/PGID, as init-volume reads them.

The choice between the names is `wanted_ids` in lib.sh (the HERMES_ names win); the
image's init-volume script then validates and applies the values. These tests run the
real lib.sh and the real script: the remap itself (groupmod, /etc/passwd) is exercised by
the docker tier, so here every case is one that changes no account on this machine (an
error before any change, or ids equal to the account's own).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.unit.test_volume_repair import (
    ID_VARIABLES,
    LIB,
    require_root,
    run_init_volume,
    system_user,
)

FAKE_ID = '#!/bin/sh\n[ "$1" = -u ] && { echo "${FAKE_UID:?}"; exit 0; }\nexit 1\n'
SKIP_REPAIR = {"HERMES_FIX_OWNERSHIP": "0", "HERMES_FIX_MODES": "0"}


def wanted_ids(env: dict[str, str]) -> str:
    """What lib.sh's wanted_ids decides for env: `uid_var=uid_value gid_var=gid_value`."""
    environ = {k: v for k, v in os.environ.items() if k not in ID_VARIABLES}
    proc = subprocess.run(
        ["sh", "-c", f'. "{LIB}"; wanted_ids; echo "$uid_var=$uid_value $gid_var=$gid_value"'],
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return proc.stdout.strip()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "PUID= PGID="),
        ({"PUID": "1000", "PGID": "1001"}, "PUID=1000 PGID=1001"),
        ({"HERMES_UID": "2000", "HERMES_GID": "2001"}, "HERMES_UID=2000 HERMES_GID=2001"),
        (
            {"HERMES_UID": "2000", "HERMES_GID": "2001", "PUID": "1000", "PGID": "1001"},
            "HERMES_UID=2000 HERMES_GID=2001",
        ),
        ({"HERMES_UID": "2000", "PGID": "1001"}, "HERMES_UID=2000 PGID=1001"),
        ({"PUID": "1000", "HERMES_GID": "2001"}, "PUID=1000 HERMES_GID=2001"),
        # an empty HERMES_ name counts as unset, as an empty PUID always did
        ({"HERMES_UID": "", "PUID": "1000"}, "PUID=1000 PGID="),
    ],
)
def test_the_hermes_names_win_over_puid_and_pgid(env: dict[str, str], expected: str) -> None:
    assert wanted_ids(env) == expected


def test_without_root_either_name_is_refused_naming_both(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "id").write_text(FAKE_ID)
    (bin_dir / "id").chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    path = f"{bin_dir}:{os.environ['PATH']}"
    for name in ID_VARIABLES:
        proc = run_init_volume(home, "nobody", PATH=path, FAKE_UID="1000", **{name: "1000"})
        assert proc.returncode == 1, (name, proc.stdout, proc.stderr)
        assert proc.stderr == (
            "init-volume: error: HERMES_UID/HERMES_GID (or PUID/PGID) need the container to"
            " start as root; with --user, choose the ids there\n"
        )
    # neither set: the --user path goes on (and finds the volume writable)
    proc = run_init_volume(home, "nobody", PATH=path, FAKE_UID="1000")
    assert proc.returncode == 0, proc.stderr
    assert "running as uid 1000, not root" in proc.stdout


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"HERMES_UID": "abc"}, "HERMES_UID='abc' is not a valid id"),
        ({"HERMES_GID": "0"}, "HERMES_GID='0' is out of range"),
        ({"PUID": "70000"}, "PUID='70000' is out of range"),
        ({"PGID": "x1"}, "PGID='x1' is not a valid id"),
    ],
)
def test_a_bad_value_stops_init_volume_naming_the_variable_that_was_set(
    tmp_path: Path, env: dict[str, str], needle: str
) -> None:
    require_root()
    user, _uid, _gid = system_user()
    passwd = Path("/etc/passwd").read_bytes()
    home = tmp_path / "home"
    home.mkdir()
    proc = run_init_volume(home, user, **env, **SKIP_REPAIR)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"init-volume: error: {needle}"), proc.stderr
    assert Path("/etc/passwd").read_bytes() == passwd


def test_a_good_hermes_uid_wins_over_a_bad_puid(tmp_path: Path) -> None:
    """The HERMES_ values are the account's own ids, so nothing is remapped; the bad
    aliases would stop the container if they were read at all."""
    require_root()
    user, uid, gid = system_user()
    passwd = Path("/etc/passwd").read_bytes()
    home = tmp_path / "home"
    home.mkdir()
    env = {"HERMES_UID": str(uid), "HERMES_GID": str(gid), "PUID": "abc", "PGID": "0"}
    proc = run_init_volume(home, user, **env, **SKIP_REPAIR)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "is now" not in proc.stdout  # no remap: the ids already match
    assert Path("/etc/passwd").read_bytes() == passwd
    # and the other way round: a bad HERMES_UID is not saved by a good PUID
    env = {"HERMES_UID": "0", "PUID": str(uid)}
    proc = run_init_volume(home, user, **env, **SKIP_REPAIR)
    assert proc.returncode == 1
    assert proc.stderr.startswith("init-volume: error: HERMES_UID='0' is out of range")
