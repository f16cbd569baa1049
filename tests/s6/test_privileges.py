"""The slot's `run` drops to the owner of HERMES_HOME; a root gateway needs an explicit opt-in."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.s6.conftest import (
    GATEWAY_UID,
    Tree,
    booted_tree,
    chown_home,
    require_s6,
    wait_for,
)

STAND_IN = """#!/bin/sh
# Test stand-in for `hermes`: only records who the slot made it, then stays up.
[ "$3" = gateway ] || exit 0
echo "$(id -u):$(id -g) HOME=$HOME NO_PROXY=$NO_PROXY" > "$HERMES_HOME/whoami"
echo >&3
exec sleep 300
"""


@pytest.fixture
def owned_tree() -> Iterator[Tree]:
    """A home owned by uid 10000 whatever this interpreter allows; CLI runs as root."""
    require_s6()
    if os.geteuid() != 0:
        pytest.skip("the privilege drop needs a root supervisor")
    with booted_tree(drop=True) as tree:
        yield tree


def test_run_drops_to_the_home_owner(owned_tree: Tree) -> None:
    tree = owned_tree
    stand_in = tree.base / "hermes-stand-in"
    stand_in.write_text(STAND_IN)
    stand_in.chmod(0o755)
    use_stand_in = {"HERMES_BIN": str(stand_in)}  # baked into the slot when registered
    tree.ok("profile", "create", "who", as_root=True, env=use_stand_in)
    chown_home(tree)
    tree.ok("-p", "who", "gateway", "start", as_root=True)
    whoami = wait_for(lambda: (tree.home.root / "whoami").exists(), what="stand-in to run")
    assert whoami
    text = (tree.home.root / "whoami").read_text().strip()
    assert text == f"{GATEWAY_UID}:{GATEWAY_UID} HOME={tree.home.root} NO_PROXY=127.0.0.1,localhost"
    # The log directory and slot control files belong to the owner too.
    assert (tree.home.gateway_log_dir("who")).stat().st_uid == GATEWAY_UID
    assert (tree.slot("who") / "supervise" / "control").stat().st_uid == GATEWAY_UID
    assert (tree.slot("who") / "event").stat().st_uid == GATEWAY_UID


@pytest.fixture
def root_tree(request: pytest.FixtureRequest) -> Iterator[Tree]:
    require_s6()
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with booted_tree(drop=False, extra_env={"HERMES_ALLOW_ROOT_GATEWAY": request.param}) as tree:
        yield tree


@pytest.mark.parametrize("root_tree", ["1"], indirect=True)
def test_root_gateway_with_opt_in(root_tree: Tree) -> None:
    root_tree.create("rooted")
    root_tree.ok("-p", "rooted", "gateway", "start")
    st = root_tree.status("rooted")
    assert st["ready"]
    assert open(f"/proc/{st['pid']}/status").read().count("Uid:\t0\t") == 1


@pytest.mark.parametrize("root_tree", ["0"], indirect=True)
def test_root_gateway_without_opt_in_is_parked(root_tree: Tree) -> None:
    root_tree.create("rooted")
    proc = root_tree.hermes("-p", "rooted", "gateway", "start")
    assert proc.returncode == 1
    st = root_tree.status("rooted")
    assert st["parked"] and st["gateway_state"] == "startup_failed"
    assert "root" in st["exit_reason"]


def test_root_cli_becomes_the_home_owner_before_writing(owned_tree: Tree) -> None:
    """`HERMES_DOCKER_EXEC_AS_ROOT=1 hermes ...` must not let root follow a path the owner
    planted: here `logs/gateways` points at a root-owned directory outside the home."""
    tree = owned_tree
    victim = tree.base / "root-only"
    victim.mkdir(mode=0o755)
    gateways = tree.home.logs_dir / "gateways"
    gateways.rename(tree.home.logs_dir / "gateways.real")
    os.symlink(victim, gateways)
    os.chown(gateways, GATEWAY_UID, GATEWAY_UID, follow_symlinks=False)

    created = tree.hermes("profile", "create", "planted", as_root=True)
    made = tree.home.profile_dir("planted") / "config.yaml"
    if created.returncode == 0:
        assert made.stat().st_uid == GATEWAY_UID, "a root CLI wrote as root"
    assert list(victim.iterdir()) == [], "root followed the planted symlink"
    assert victim.stat().st_uid == 0

    # Without the plant, a root `profile create` makes owner files, private ones.
    gateways.unlink()
    (tree.home.logs_dir / "gateways.real").rename(gateways)
    tree.ok("profile", "create", "byroot", as_root=True)
    for path in tree.home.profile_dir("byroot").iterdir():
        assert path.lstat().st_uid == GATEWAY_UID, path
        assert path.lstat().st_mode & 0o077 == 0, f"{path} is readable by other users"
    # A reading command keeps root when asked to (nothing it does writes).
    assert tree.status("byroot")["profile"] == "byroot"
