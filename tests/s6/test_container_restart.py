"""A simulated container restart: new svscan, new scandir, `hermes reconcile`."""

from __future__ import annotations

import re

import pytest

from hermes_container.state import write_desired
from tests.s6.conftest import Tree, chown_home, gateway_pids

LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ profile=(?P<profile>[a-z0-9_-]+) "
    r"prior_state=(?P<prior_state>[a-z_]+) action=(?P<action>started|registered|skipped) "
    r"prior_exit=(?P<prior_exit>clean|unclean|unknown)$"
)


def _boot_lines(tree: Tree) -> dict[str, dict[str, str]]:
    lines = tree.home.boot_log.read_text().splitlines()
    parsed = {}
    for line in lines:
        match = LINE.match(line)
        assert match, f"malformed boot log line: {line!r}"
        parsed[match["profile"]] = match.groupdict()  # the last boot wins
    return parsed


def _restart_container(tree: Tree, *, crash: bool, env: dict[str, str] | None = None) -> None:
    if crash:
        tree.kill_everything()  # docker kill / host crash: nobody records anything
    else:
        tree.stop_svscan()  # docker stop: SIGTERM to every service
        tree.kill_everything()
    tree.start_svscan(tree.base / f"service-{len(tree.scandirs)}")
    tree.ok("reconcile", as_root=True, env=env)


def test_crash_restart_restores_desired_state_exactly(tree: Tree) -> None:
    for name in ("up1", "up2", "down1", "corrupt"):
        tree.create(name)
    tree.ok("-p", "up1", "gateway", "start")
    tree.ok("-p", "up2", "gateway", "start")
    tree.ok("-p", "corrupt", "gateway", "start")
    tree.ok("-p", "down1", "gateway", "start")
    tree.ok("-p", "down1", "gateway", "stop")
    (tree.home.profile_dir("corrupt") / "gateway_state.json").write_text("{not json")
    # Leftovers of an interrupted registration and of a killed gateway.
    leftover = tree.base / "service-1" / ".gateway-up1.tmp-deadbeef"
    leftover.mkdir(parents=True)
    (tree.home.profile_dir("up2") / "gateway.pid").write_text("999999\n")

    _restart_container(tree, crash=True)

    assert not leftover.exists(), "leftover temp slot cleaned at boot"
    assert not (tree.home.profile_dir("up2") / "gateway.pid").exists() or gateway_pids(
        "up2", tree.base
    )
    for name in ("up1", "up2"):
        st = tree.wait_ready(name)
        assert st["desired_state"] == "running"
    down = tree.status("down1")
    assert not down["up"] and down["registered"] and down["desired_state"] == "stopped"
    corrupt = tree.status("corrupt")
    assert corrupt["registered"] and not corrupt["up"]

    lines = _boot_lines(tree)
    assert set(lines) == {"default", "up1", "up2", "down1", "corrupt"}
    assert lines["up1"] == {
        "profile": "up1",
        "prior_state": "running",
        "action": "started",
        "prior_exit": "unclean",
    }
    assert lines["down1"]["action"] == "registered"
    assert lines["down1"]["prior_state"] == "stopped" and lines["down1"]["prior_exit"] == "clean"
    assert lines["corrupt"] == {
        "profile": "corrupt",
        "prior_state": "none",
        "action": "registered",
        "prior_exit": "unknown",
    }
    assert lines["default"]["action"] == "registered"  # the fixture recorded it stopped


def test_docker_stop_never_turns_running_into_stopped(tree: Tree) -> None:
    tree.create("keep")
    tree.ok("-p", "keep", "gateway", "start")
    _restart_container(tree, crash=False)
    st = tree.wait_ready("keep")
    assert st["desired_state"] == "running"
    line = _boot_lines(tree)["keep"]
    assert line["prior_state"] == "stopped" and line["prior_exit"] == "clean"
    assert line["action"] == "started"


def test_default_runs_on_first_boot_without_state(tree: Tree) -> None:
    # An upgrade from an image without state files: default must come up running.
    tree.kill_everything()
    (tree.home.root / "gateway_state.json").unlink()
    tree.start_svscan(tree.base / "service-fresh")
    tree.ok("reconcile", as_root=True)
    st = tree.wait_ready("default")
    assert st["desired_state"] == "running"
    assert _boot_lines(tree)["default"]["action"] == "started"


@pytest.mark.parametrize("stagger", ["0", "0.1"])
def test_boot_starts_every_running_profile(tree: Tree, stagger: str) -> None:
    """Both ways of starting at boot: all at once (stagger 0: one pass writing `u` to
    every slot's control FIFO) and one by one with a pause between."""
    names = ["a1", "a2", "a3"]
    for name in names:
        write_desired(tree.create(name), "running")
    chown_home(tree)
    tree.kill_everything()
    tree.start_svscan(tree.base / "service-1")
    tree.ok("reconcile", as_root=True, env={"HERMES_GATEWAY_STAGGER": stagger})

    pids = {name: tree.wait_ready(name)["pid"] for name in names}
    assert len(set(pids.values())) == 3
    for name in names:
        assert gateway_pids(name, tree.base) == [pids[name]]
    lines = _boot_lines(tree)
    assert {lines[name]["action"] for name in names} == {"started"}
    assert lines["default"]["action"] == "registered"
    assert not tree.status("default")["up"]


@pytest.mark.parametrize("fix_modes", [None, "no"])
def test_boot_makes_keys_transcripts_and_logs_private(tree: Tree, fix_modes: str | None) -> None:
    """Files an older version (or another tool) left readable by others are repaired at
    boot by the reconciler, as the home's owner: here there is no root init-volume.
    HERMES_FIX_MODES=no turns that off, as it does in init-volume."""
    tree.create("reader")
    profile = tree.home.profile_dir("reader")
    readable = [
        profile / "config.yaml",
        profile / ".env",
        profile / "sessions.db",
        tree.home.logs_dir / "dashboard-auth.log",
    ]
    for path in readable:
        path.touch()
        path.chmod(0o644)
    profile.chmod(0o755)
    chown_home(tree)
    env = {} if fix_modes is None else {"HERMES_FIX_MODES": fix_modes}
    _restart_container(tree, crash=False, env=env)
    if fix_modes is None:
        for path in [*readable, profile, tree.home.root]:
            assert path.stat().st_mode & 0o077 == 0, f"{path} is still open to other users"
    else:
        for path in readable:
            assert path.stat().st_mode & 0o777 == 0o644, f"{path} changed with the repair off"
