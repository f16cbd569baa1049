"""create / start / stop / restart / delete through the CLI against a live s6-svscan."""

from __future__ import annotations

import shutil
import subprocess
import sys

from tests.s6.conftest import Tree, gateway_pids, proc_uid, wait_for


def test_create_registers_a_down_slot(tree: Tree) -> None:
    tree.create("alpha")
    slot = tree.slot("alpha")
    assert (slot / "down").exists(), "created without --start: registered but down"
    for name in ("run", "finish", "notification-fd", "timeout-finish", "log/run"):
        assert (slot / name).exists(), name
    assert (slot / "notification-fd").read_text() == "3\n"
    assert subprocess.run(["s6-svok", str(slot)], check=False).returncode == 0
    out = tree.ok("-p", "alpha", "gateway", "status")
    assert "Manager: s6 (container supervisor)" in out
    assert "State:     down" in out
    assert not gateway_pids("alpha", tree.base)


def test_start_status_restart_stop_delete(tree: Tree) -> None:
    tree.create("alpha")
    out = tree.ok("-p", "alpha", "gateway", "start", "--timeout", "20")
    assert "Started gateway 'alpha'" in out and "ready" in out
    st = tree.status("alpha")
    assert st["up"] and st["ready"] and st["desired_state"] == "running"
    assert st["gateway_state"] == "running" and st["restarts"] == 0
    assert st["manager"] == "s6 (container supervisor)"
    assert gateway_pids("alpha", tree.base) == [st["pid"]]
    assert proc_uid(st["pid"]) == tree.owner

    text = tree.ok("-p", "alpha", "gateway", "status")
    for label in ("Manager:", "PID:", "Uptime:", "Ready:     yes", "Restarts:  0", "Port:"):
        assert label in text
    assert f"PID:       {st['pid']}" in text
    assert "Desired:   running" in text

    out = tree.ok("-p", "alpha", "gateway", "restart")
    assert "Restarted gateway 'alpha'" in out
    after = tree.status("alpha")
    assert after["ready"] and after["pid"] != st["pid"]
    assert after["restarts"] == 0, "an asked-for restart is not a crash"

    out = tree.ok("-p", "alpha", "gateway", "stop")
    assert "Stopped gateway 'alpha'" in out
    stopped = tree.status("alpha")
    assert not stopped["up"] and stopped["desired_state"] == "stopped"
    assert stopped["gateway_state"] == "stopped" and not stopped["parked"]
    assert (tree.slot("alpha") / "down").exists()
    assert not gateway_pids("alpha", tree.base)

    tree.ok("profile", "delete", "alpha", "--yes")
    assert not tree.slot("alpha").exists()
    assert not tree.home.profile_dir("alpha").exists()
    assert not [p for p in tree.scandir.iterdir() if "alpha" in p.name]
    wait_for(
        lambda: not [p for p in _supervisors(tree) if "gateway-alpha" in p],
        what="alpha's s6-supervise to exit",
    )


def _supervisors(tree: Tree) -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.startswith("s6-supervise")]


def test_create_with_start_and_status_all(tree: Tree) -> None:
    proc = tree.hermes("profile", "create", "beta", "--start")
    # The port create picked may be taken on a busy host: only insist when it was free.
    if proc.returncode != 0:
        tree.set_port(tree.home.profile_dir("beta"))
        tree.ok("-p", "beta", "gateway", "start")
    st = tree.wait_ready("beta")
    assert st["desired_state"] == "running"
    listing = tree.ok("gateway", "status", "--all", "--json")
    assert '"profile": "default"' in listing and '"profile": "beta"' in listing
    tree.ok("gateway", "stop", "--all")
    assert not tree.status("beta")["up"]


def test_start_registers_a_profile_made_outside_the_tree(tree: Tree) -> None:
    # Files only, e.g. created on the host on the bind-mounted volume.
    from hermes_container.profiles import create_profile
    from tests.s6.conftest import chown_home

    create_profile(tree.home, "hosted")
    chown_home(tree)
    tree.set_port(tree.home.profile_dir("hosted"))
    assert not tree.slot("hosted").exists()
    tree.ok("-p", "hosted", "gateway", "start")
    assert tree.status("hosted")["ready"]


def test_bad_input_is_one_line_error(tree: Tree) -> None:
    proc = tree.hermes("-p", "nope", "gateway", "start")
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr
    proc = tree.hermes("-p", "default", "gateway", "start", "--timeout", "0")
    assert proc.returncode == 2 and "--timeout" in proc.stderr


def test_two_concurrent_starts_of_an_unregistered_profile(tree: Tree) -> None:
    from hermes_container.profiles import create_profile
    from tests.s6.conftest import chown_home

    create_profile(tree.home, "racy")
    chown_home(tree)
    tree.set_port(tree.home.profile_dir("racy"))
    procs = [tree.spawn("-p", "racy", "gateway", "start") for _ in range(2)]
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert len(gateway_pids("racy", tree.base)) == 1


def test_reconcile_drops_slots_of_profiles_deleted_behind_its_back(tree: Tree) -> None:
    tree.create("ghost")
    tree.ok("-p", "ghost", "gateway", "start")
    shutil.rmtree(tree.home.profile_dir("ghost"))
    tree.ok("reconcile", as_root=True)
    assert not tree.slot("ghost").exists()
    wait_for(lambda: not gateway_pids("ghost", tree.base), what="ghost's gateway to stop")


def test_status_in_a_live_tree_stays_off_the_slow_imports(tree: Tree) -> None:
    """Inside a tree `gateway status` asks s6-svstat without loading the S6Manager,
    subprocess, logging or dataclasses (bench/bench_cli.py times it)."""
    from tests.unit.test_cli import _IMPORT_PROBE, SLOW_STDLIB

    tree.create("alpha")
    probe = _IMPORT_PROBE.format(heavy={*SLOW_STDLIB, "hermes_container.supervision.s6"})
    for argv in (["-p", "alpha", "gateway", "status"], ["gateway", "status", "--all"]):
        proc = subprocess.run(
            [sys.executable, "-c", probe, *argv],
            capture_output=True,
            text=True,
            env=tree.env,
            timeout=60,
            check=False,
        )
        assert "Manager: s6 (container supervisor)" in proc.stdout, proc.stderr
        assert "State:     down" in proc.stdout
        assert proc.stdout.strip().splitlines()[-1] == "HEAVY=", proc.stdout
