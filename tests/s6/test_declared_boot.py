"""HERMES_PROFILES_FILE under a real s6-svscan: the boot reconciler creates and starts
the declared profiles; run again on an edited file it reloads the changed profile's
running gateway (same pid) and leaves the others alone; a file it cannot apply stops
nothing and is reported in container-boot.log, the ledger and `gateway status`."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import free_port
from tests.fake_upstream import FakeUpstream
from tests.s6.conftest import Tree, boot, make_base, make_tree, require_s6, wait_for
from tests.s6.support import chat, gateway_key

MODEL_KEY = "sk-declared-boot-0123456789"


@pytest.fixture
def declared_dir() -> Iterator[Path]:
    """Where the declaration lives: outside the home, readable by the home's owner."""
    path = Path(tempfile.mkdtemp(prefix="hermes-declared-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_declaration(path: Path, data: Any) -> None:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    path.chmod(0o644)


def profiles(
    upstream: FakeUpstream, ports: dict[str, int], alpha_persona: str, alpha_model: str
) -> dict[str, Any]:
    def entry(name: str, state: str, **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "base_url": upstream.base_url,
            "api_key_env": "DECLARED_KEY",
            "state": state,
            "config": {"gateway.port": ports[name]},
            **extra,
        }

    return {
        "profiles": [
            entry("alpha", "running", model=alpha_model, persona=alpha_persona),
            entry("beta", "running", model="beta-model"),
            entry("gamma", "stopped", model="gamma-model"),
        ]
    }


@pytest.fixture
def ports() -> dict[str, int]:
    """A port free now for each declared profile (profiles never share one)."""
    return {name: free_port() for name in ("alpha", "beta", "gamma")}


@pytest.fixture
def declared_tree(declared_dir: Path) -> Iterator[tuple[Tree, Path]]:
    require_s6()
    base = make_base()
    path = declared_dir / "profiles.yaml"
    tree = make_tree(base, extra_env={"HERMES_PROFILES_FILE": str(path), "DECLARED_KEY": MODEL_KEY})
    try:
        yield tree, path
    finally:
        tree.kill_everything()
        shutil.rmtree(base, ignore_errors=True)


def events(tree: Tree, kind: str) -> list[dict[str, Any]]:
    out = tree.ok("events", "--json", "--kind", kind)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_boot_creates_and_starts_then_a_rerun_reloads_the_changed_profile(
    declared_tree: tuple[Tree, Path], ports: dict[str, int]
) -> None:
    tree, path = declared_tree
    with FakeUpstream() as upstream:
        write_declaration(path, profiles(upstream, ports, "You are alpha one.\n", "alpha-one"))
        boot(tree)

        alpha = tree.wait_ready("alpha")
        beta = tree.wait_ready("beta")
        assert alpha["port"] == ports["alpha"] and beta["port"] == ports["beta"]
        gamma = tree.status("gamma")
        assert gamma["registered"] and not gamma["up"] and gamma["desired_state"] == "stopped"
        answer = chat(alpha["port"], gateway_key(tree.home.profile_dir("alpha")))
        assert answer.status_code == 200 and answer.json()["model"] == "alpha-one"
        sent = upstream.requests[-1]
        assert sent.body["messages"][0]["content"] == "You are alpha one."
        assert sent.headers["authorization"] == f"Bearer {MODEL_KEY}"
        boot_log = tree.home.boot_log.read_text()
        assert f"profiles_file={path} result=applied created=alpha,beta,gamma " in boot_log
        assert "profiles file" not in tree.ok("gateway", "status")

        # The file changes alpha only; the reconciler runs again in the live tree.
        write_declaration(path, profiles(upstream, ports, "You are alpha two.\n", "alpha-two"))
        tree.ok("reconcile", as_root=True)
        after = tree.status("alpha")
        assert after["pid"] == alpha["pid"] and after["ready"]  # reloaded, not restarted
        assert after["restarts"] == alpha["restarts"]
        reloaded = wait_for(lambda: events(tree, "gateway.reloaded"), what="gateway.reloaded")
        assert [e["profile"] for e in reloaded] == ["alpha"]
        assert set(reloaded[0]["data"]["keys"]) == {"soul", "model.name"}
        answer = chat(alpha["port"], gateway_key(tree.home.profile_dir("alpha")))
        assert answer.status_code == 200 and answer.json()["model"] == "alpha-two"
        assert upstream.requests[-1].body["messages"][0]["content"] == "You are alpha two."
        assert tree.status("beta")["pid"] == beta["pid"]
        applied = events(tree, "profiles.applied")
        assert applied[-1]["data"]["updated"] == {"alpha": ["model.name", "soul"]}
        assert applied[-1]["data"]["reloaded"] == ["alpha"]

        # A third run on the same file changes nothing and records nothing.
        count = len(tree.ok("events", "--json").splitlines())
        tree.ok("reconcile", as_root=True)
        assert len(events(tree, "profiles.applied")) == len(applied)
        new = tree.ok("events", "--json").splitlines()[count:]
        assert {json.loads(line)["kind"] for line in new} <= {"boot.reconciled"}
        assert tree.status("alpha")["pid"] == alpha["pid"]


def test_a_rejected_file_stops_nothing_and_is_reported(
    declared_tree: tuple[Tree, Path], ports: dict[str, int]
) -> None:
    tree, path = declared_tree
    write_declaration(path, "profiles:\n  - name: alpha\n    state: sometimes\n")
    boot(tree, default_running=True)

    default = tree.wait_ready("default")  # boot went on
    assert default["ready"]
    assert not tree.home.profile_dir("alpha").exists()
    lines = tree.home.boot_log.read_text().splitlines()
    rejected = [line for line in lines if " result=rejected " in line]
    assert len(rejected) == 1 and "state must be running or stopped" in rejected[0]
    assert any(" profile=default " in line and "action=started" in line for line in lines)
    reported = events(tree, "profiles.rejected")
    assert len(reported) == 1 and reported[0]["actor"] == "boot"
    status = tree.ok("gateway", "status")
    assert status.splitlines()[-1] == f"profiles file rejected: {reported[0]['data']['reason']}"

    with FakeUpstream() as upstream:
        write_declaration(path, profiles(upstream, ports, "You are alpha.\n", "alpha-model"))
        tree.ok("reconcile", as_root=True)
        tree.wait_ready("alpha")
        assert "profiles file" not in tree.ok("gateway", "status")
        assert tree.status("default")["pid"] == default["pid"]


def test_profiles_apply_in_a_live_tree_starts_reloads_and_stops(
    declared_tree: tuple[Tree, Path], ports: dict[str, int]
) -> None:
    tree, path = declared_tree
    write_declaration(path, "profiles: []\n")
    boot(tree)
    with FakeUpstream() as upstream:
        data = profiles(upstream, ports, "You are alpha.\n", "alpha-one")
        data["profiles"] = data["profiles"][:1]  # alpha alone, desired running
        write_declaration(path, data)
        out = tree.ok("profiles", "apply", "--file", str(path))
        assert "Created profile 'alpha'" in out
        first = tree.wait_ready("alpha")  # started by the command, no reconcile needed

        data["profiles"][0]["model"] = "alpha-two"
        write_declaration(path, data)
        out = tree.ok("profiles", "apply", "--file", str(path))
        assert "Gateway 'alpha' reloaded" in out
        wait_for(lambda: events(tree, "gateway.reloaded"), what="gateway.reloaded")
        answer = chat(first["port"], gateway_key(tree.home.profile_dir("alpha")))
        assert answer.status_code == 200 and answer.json()["model"] == "alpha-two"
        assert tree.status("alpha")["pid"] == first["pid"]

        data["profiles"][0]["state"] = "stopped"
        write_declaration(path, data)
        out = tree.ok("profiles", "apply", "--file", str(path))
        assert "Desired state of 'alpha': stopped" in out
        wait_for(lambda: not tree.status("alpha")["up"], what="alpha down")
        assert tree.status("alpha")["desired_state"] == "stopped"
