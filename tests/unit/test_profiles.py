from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hermes_container.envfile import read_env
from hermes_container.errors import HermesError, UsageError
from hermes_container.home import HermesHome
from hermes_container.profiles import (
    allocate_port,
    create_profile,
    delete_profile,
    describe_profile,
    ensure_default_profile,
    list_profiles,
)
from hermes_container.state import read_state


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }


def test_create_writes_config_env_soul(hermes_home: HermesHome) -> None:
    path = create_profile(hermes_home, "coder")
    assert path == hermes_home.root / "profiles" / "coder"
    assert "base_url:" in (path / "config.yaml").read_text()
    env = read_env(path / ".env")
    assert len(env["API_SERVER_KEY"]) > 30
    assert stat.S_IMODE((path / ".env").stat().st_mode) == 0o600
    assert (path / "SOUL.md").read_text().startswith("# Persona")
    # The default profile is the home itself and got its own files too.
    assert read_env(hermes_home.root / ".env")["API_SERVER_KEY"] != env["API_SERVER_KEY"]
    assert describe_profile(hermes_home, "default").port == 8642


def test_ports_are_unique_and_lowest_free(hermes_home: HermesHome) -> None:
    for name in ("a", "b", "c"):
        create_profile(hermes_home, name)
    ports = [describe_profile(hermes_home, n).port for n in ("default", "a", "b", "c")]
    assert ports == [8642, 8643, 8644, 8645]
    delete_profile(hermes_home, "b")
    assert allocate_port(hermes_home) == 8644
    create_profile(hermes_home, "d")
    assert describe_profile(hermes_home, "d").port == 8644


def test_port_base_from_env(hermes_home: HermesHome, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERMES_GATEWAY_PORT_BASE", "20000")
    create_profile(hermes_home, "x")
    assert describe_profile(hermes_home, "default").port == 20000
    assert describe_profile(hermes_home, "x").port == 20001


def test_bad_port_base_is_a_config_error(
    hermes_home: HermesHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HERMES_GATEWAY_PORT_BASE", "nope")
    with pytest.raises(HermesError, match="HERMES_GATEWAY_PORT_BASE"):
        create_profile(hermes_home, "x")
    assert not (hermes_home.root / "profiles" / "x").exists()


@pytest.mark.parametrize(
    "name", ["", "..", "../evil", "a/b", "Upper", "ünï", "a" * 64, "-x", "profiles/../x"]
)
def test_bad_names_create_nothing(hermes_home: HermesHome, name: str) -> None:
    with pytest.raises(UsageError):
        create_profile(hermes_home, name)
    assert not hermes_home.root.exists()


def test_existing_profile_is_untouched(hermes_home: HermesHome) -> None:
    create_profile(hermes_home, "coder")
    (hermes_home.profile_dir("coder") / "SOUL.md").write_text("custom persona")
    before = snapshot(hermes_home.root)
    with pytest.raises(HermesError, match="already exists"):
        create_profile(hermes_home, "coder")
    with pytest.raises(HermesError, match="already exists"):
        create_profile(hermes_home, "default")
    assert snapshot(hermes_home.root) == before


def test_clone_copies_settings_but_not_key_or_port(hermes_home: HermesHome) -> None:
    src = create_profile(hermes_home, "src")
    (src / "SOUL.md").write_text("You are terse.")
    config = (src / "config.yaml").read_text().replace("gpt-4o-mini", "my-model")
    (src / "config.yaml").write_text(config)
    clone = create_profile(hermes_home, "dst", clone_from="src")
    assert (clone / "SOUL.md").read_text() == "You are terse."
    info = describe_profile(hermes_home, "dst")
    assert info.model_name == "my-model"
    assert info.port != describe_profile(hermes_home, "src").port
    assert read_env(clone / ".env")["API_SERVER_KEY"] != read_env(src / ".env")["API_SERVER_KEY"]
    assert not (clone / "gateway_state.json").exists()


def test_clone_from_missing_profile_creates_nothing(hermes_home: HermesHome) -> None:
    with pytest.raises(HermesError, match="does not exist"):
        create_profile(hermes_home, "dst", clone_from="ghost")
    assert list_profiles(hermes_home) == ["default"]
    assert not [p for p in hermes_home.profiles_dir.iterdir() if p.name.startswith(".tmp")]


def test_create_records_no_desired_state(hermes_home: HermesHome) -> None:
    # Starting is the supervisor's business (`profile create --start` = create, then start).
    assert read_state(create_profile(hermes_home, "idle")).problem == "missing"


def test_list_skips_junk_and_sorts(hermes_home: HermesHome) -> None:
    for name in ("zeta", "alpha"):
        create_profile(hermes_home, name)
    (hermes_home.profiles_dir / ".tmp-half").mkdir()
    (hermes_home.profiles_dir / "Bad Name").mkdir()
    (hermes_home.profiles_dir / "file").write_text("x")
    assert list_profiles(hermes_home) == ["default", "alpha", "zeta"]


def test_default_cannot_be_deleted(hermes_home: HermesHome) -> None:
    ensure_default_profile(hermes_home)
    with pytest.raises(UsageError, match="cannot be deleted"):
        delete_profile(hermes_home, "default")
    assert (hermes_home.root / "config.yaml").exists()


def test_delete_missing_profile_errors(hermes_home: HermesHome) -> None:
    ensure_default_profile(hermes_home)
    with pytest.raises(HermesError, match="does not exist"):
        delete_profile(hermes_home, "ghost")


def test_delete_never_follows_symlinks_out_of_home(hermes_home: HermesHome, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    path = create_profile(hermes_home, "coder")
    (path / "link").symlink_to(outside)
    delete_profile(hermes_home, "coder")
    assert (outside / "precious").read_text() == "keep me"
    assert not path.exists()
    # A profile directory that is itself a symlink is refused outright.
    (hermes_home.profiles_dir / "sneaky").symlink_to(outside)
    with pytest.raises(HermesError, match="symlink"):
        delete_profile(hermes_home, "sneaky")
    assert (outside / "precious").exists()


def test_delete_leaves_no_temp_dir(hermes_home: HermesHome) -> None:
    create_profile(hermes_home, "coder")
    delete_profile(hermes_home, "coder")
    assert list(hermes_home.profiles_dir.iterdir()) == []


def test_concurrent_create_exactly_one_wins(hermes_home: HermesHome) -> None:
    ensure_default_profile(hermes_home)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "hermes_container", "profile", "create", "race"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        for _ in range(6)
    ]
    results = [(p.wait(60), p.stderr.read() if p.stderr else "") for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1, 1, 1, 1, 1]
    assert all("already exists" in err for code, err in results if code)
    assert list_profiles(hermes_home) == ["default", "race"]
    assert describe_profile(hermes_home, "race").port == 8643


def test_concurrent_creates_of_different_names_get_distinct_ports(hermes_home: HermesHome) -> None:
    ensure_default_profile(hermes_home)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "hermes_container", "profile", "create", f"p{i}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(5)
    ]
    assert [p.wait(60) for p in procs] == [0] * 5
    ports = {describe_profile(hermes_home, f"p{i}").port for i in range(5)}
    assert ports == {8643, 8644, 8645, 8646, 8647}
