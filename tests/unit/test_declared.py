"""Declarative profiles (HERMES_PROFILES_FILE, hermes_container/declared.py) without a
supervision tree: parsing and its one-line errors, the plan, `hermes profiles apply`
creating, updating and pruning profiles, applying twice changing nothing, and a rejected
file reported by the boot step and by `gateway status`. The live tree (reloads, boot
with the file) is tests/s6/test_declared_boot.py."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from hermes_container.declared import (
    CREATE,
    DELETE,
    UPDATE,
    apply_at_boot,
    load,
    make_plan,
)
from hermes_container.declared_result import read_result, result_path
from hermes_container.envfile import read_env
from hermes_container.errors import UsageError
from hermes_container.events.ledger import ledger_dir
from hermes_container.home import HermesHome
from hermes_container.profiles import create_profile, ensure_default_profile
from hermes_container.state import read_state
from tests.conftest import free_port, run_hermes

MODEL_KEY = "sk-declared-0123456789"
FILE_KEY = "sk-from-a-file-9876543210"
pytestmark = pytest.mark.usefixtures("forget_ledgers")  # apply_at_boot records in-process


@pytest.fixture
def home(hermes_home: HermesHome, monkeypatch: pytest.MonkeyPatch) -> HermesHome:
    monkeypatch.delenv("HERMES_PROFILES_FILE", raising=False)
    monkeypatch.delenv("HERMES_EVENTS", raising=False)
    # No tree here: `profiles apply` must find none (and never the CI's).
    monkeypatch.setenv("HERMES_S6_SCANDIR", str(hermes_home.root.parent / "no-svscan"))
    monkeypatch.setenv("HERMES_GATEWAY_PORT_BASE", str(free_port()))
    return hermes_home


def write(path: Path, data: Any) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def declaration(tmp_path: Path, **top: Any) -> dict[str, Any]:
    """A file with three profiles: the default's model, a new one with everything, and
    one whose key and persona come from files beside the declaration."""
    (tmp_path / "writer.md").write_text("You write prose.")
    (tmp_path / "writer.key").write_text(FILE_KEY + "\n")
    return {
        "profiles": [
            {"name": "default", "model": "model-of-default"},
            {
                "name": "coder",
                "base_url": "http://127.0.0.1:9/v1",
                "model": "coder-model",
                "persona": "You write code.\n",
                "api_key_env": "DECLARED_KEY",
                "state": "running",
                "config": {"model": {"read_timeout_s": 60}, "gateway.persona": "always"},
            },
            {
                "name": "writer",
                "persona_file": "writer.md",
                "api_key_file": "writer.key",
                "state": "stopped",
            },
        ],
        **top,
    }


def apply_cli(path: Path, *extra: str, **env: str) -> Any:
    return run_hermes("profiles", "apply", "--file", str(path), *extra, env=env)


def events(kind: str | None = None) -> list[dict[str, Any]]:
    proc = run_hermes("events", "--json")
    assert proc.returncode == 0, proc.stderr
    found = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return [e for e in found if kind is None or e["kind"] == kind]


def files_with_mtimes(root: Path) -> dict[str, tuple[int, int]]:
    found = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            found[path] = (st.st_mtime_ns, st.st_size)
    return found


# -- parsing ---------------------------------------------------------------------------

BAD_FILES: list[tuple[str, str]] = [
    ("profiles: [\n", "malformed YAML (line 2)"),
    ("- name: x\n", "expected a mapping with a `profiles:` list"),
    ("profiles: {name: x}\n", "`profiles:` must be a list"),
    ("prune: yes please\nprofiles: []\n", "prune must be true or false"),
    ("profile: []\n", "unknown top-level key 'profile' (did you mean 'profiles'?)"),
    ("profiles:\n  - model: m\n", "profiles entry 1: needs a `name:`"),
    ("profiles:\n  - 3\n", "profiles entry 1: must be a mapping"),
    ("profiles:\n  - name: Bad/Name\n", "invalid profile name 'Bad/Name'"),
    ("profiles:\n  - name: a\n  - name: a\n", "profile 'a': is listed twice"),
    ("profiles:\n  - name: a\n    modle: m\n", "unknown field 'modle' (did you mean 'model'?)"),
    ("profiles:\n  - name: a\n    api_key: sk-inline\n", "a key never goes in this file"),
    ("profiles:\n  - name: a\n    base_url: ftp://x\n", "base_url must be an http(s) URL"),
    ("profiles:\n  - name: a\n    model: ''\n", "model must be a non-empty string"),
    ("profiles:\n  - name: a\n    state: paused\n", "state must be running or stopped"),
    ("profiles:\n  - name: a\n    persona: ''\n", "persona must be non-empty text"),
    ("profiles:\n  - name: a\n    persona: x\n    persona_file: f\n", "not both"),
    ("profiles:\n  - name: a\n    persona_file: nowhere.md\n", "persona_file"),
    ("profiles:\n  - name: a\n    api_key_env: NOT_SET_ANYWHERE\n", "NOT_SET_ANYWHERE is not set"),
    ("profiles:\n  - name: a\n    api_key_env: 'a b'\n", "must name an environment variable"),
    ("profiles:\n  - name: a\n    api_key_file: missing.key\n", "missing.key': cannot read it"),
    ("profiles:\n  - name: a\n    api_key_env: X\n    api_key_file: f\n", "not both"),
    ("profiles:\n  - name: a\n    config: 3\n", "config must be a mapping"),
    ("profiles:\n  - name: a\n    config: {model.nmae: x}\n", "did you mean 'model.name'?"),
    ("profiles:\n  - name: a\n    config: {model.api_key: x}\n", "is a secret"),
    ("profiles:\n  - name: a\n    config: {gateway.port: 70000}\n", "is not a port number"),
    ("profiles:\n  - name: a\n    config: {kanban.max_in_progress: 2}\n", "default profile's"),
    ("profiles:\n  - name: a\n    model: m\n    config: {model.name: n}\n", "already given"),
    ("profiles:\n  - name: a\n    config: {model.read_timeout_s: null}\n", "needs a value"),
    (
        "profiles:\n  - name: a\n    config: {gateway.port: 9001}\n"
        "  - name: b\n    config: {gateway.port: 9001}\n",
        "gateway.port 9001 is also declared for 'a'",
    ),
]


@pytest.mark.parametrize(("text", "fragment"), BAD_FILES, ids=[f for _, f in BAD_FILES])
def test_a_bad_file_is_one_line_naming_the_file(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path / "profiles.yaml", text)
    with pytest.raises(UsageError) as caught:
        load(path, {})
    message = caught.value.message
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    assert fragment in message, message
    assert "sk-inline" not in message  # an inline key is refused without being repeated


def test_unreadable_and_oversized_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read it"):
        load(tmp_path / "missing.yaml", {})
    big = write(tmp_path / "big.yaml", "# " + "x" * (1024 * 1024) + "\nprofiles: []\n")
    with pytest.raises(UsageError, match="larger than"):
        load(big, {})
    (tmp_path / "latin1.yaml").write_bytes(b"profiles: []\n# \xe9\n")
    with pytest.raises(UsageError, match="not UTF-8"):
        load(tmp_path / "latin1.yaml", {})


def test_load_reads_keys_and_personas(tmp_path: Path) -> None:
    path = write(tmp_path / "profiles.yaml", declaration(tmp_path))
    key_file = tmp_path / "env.key"
    key_file.write_text(MODEL_KEY + "\n")
    # api_key_env's variable may itself come as its _FILE form.
    declared = load(path, {"DECLARED_KEY_FILE": str(key_file)})
    assert declared.prune is False
    by_name = {p.name: p for p in declared.profiles}
    coder = by_name["coder"]
    assert coder.api_key == MODEL_KEY and coder.key_source == "env DECLARED_KEY"
    assert coder.values == {
        "model.base_url": "http://127.0.0.1:9/v1",
        "model.name": "coder-model",
        "model.read_timeout_s": 60,
        "gateway.persona": "always",
    }
    writer = by_name["writer"]
    assert writer.soul == "You write prose.\n"  # relative to the file, newline added
    assert writer.api_key == FILE_KEY
    assert MODEL_KEY not in repr(declared) and FILE_KEY not in repr(declared)
    with pytest.raises(UsageError, match="set DECLARED_KEY or DECLARED_KEY_FILE, not both"):
        load(path, {"DECLARED_KEY": "a", "DECLARED_KEY_FILE": str(key_file)})


# -- the plan --------------------------------------------------------------------------


def test_plan_compares_with_the_home_and_writes_nothing(home: HermesHome, tmp_path: Path) -> None:
    ensure_default_profile(home)
    create_profile(home, "writer", soul="You write prose.\n", model_api_key=FILE_KEY)
    create_profile(home, "handmade")
    path = write(tmp_path / "profiles.yaml", declaration(tmp_path, prune=True))
    before = files_with_mtimes(home.root)
    plan = make_plan(home, load(path, {"DECLARED_KEY": MODEL_KEY}))
    assert files_with_mtimes(home.root) == before
    actions = {p.name: (p.action, p.changes) for p in plan.profiles}
    assert actions == {
        "handmade": (DELETE, []),
        "default": (UPDATE, ["model.name"]),
        "coder": (
            CREATE,
            [
                "model.base_url",
                "model.name",
                "model.read_timeout_s",
                "gateway.persona",
                "soul",
                "env.HERMES_MODEL_API_KEY",
                "desired_state=running",
            ],
        ),
        "writer": (UPDATE, ["desired_state=stopped"]),  # persona and key already match
    }
    assert plan.profiles[0].name == "handmade"  # deletions first: they free ports


def test_dry_run_prints_the_plan_and_changes_nothing(home: HermesHome, tmp_path: Path) -> None:
    ensure_default_profile(home)
    path = write(tmp_path / "profiles.yaml", declaration(tmp_path))
    before = files_with_mtimes(home.root)
    proc = apply_cli(path, "--dry-run", DECLARED_KEY=MODEL_KEY)
    assert proc.returncode == 0, proc.stderr
    assert "  create coder: model.base_url, model.name" in proc.stdout
    assert "Dry run: nothing was changed" in proc.stdout
    assert MODEL_KEY not in proc.stdout and FILE_KEY not in proc.stdout
    assert files_with_mtimes(home.root) == before
    assert not home.profile_dir("coder").exists()


# -- applying --------------------------------------------------------------------------


def test_apply_creates_updates_and_keeps_hand_made_profiles(
    home: HermesHome, tmp_path: Path
) -> None:
    ensure_default_profile(home)
    create_profile(home, "handmade")
    config = home.root / "config.yaml"
    config.write_text(config.read_text().replace("model:\n", "model:  # mine, keep me\n", 1))
    path = write(tmp_path / "profiles.yaml", declaration(tmp_path))
    proc = apply_cli(path, DECLARED_KEY=MODEL_KEY)
    assert proc.returncode == 0, proc.stderr
    assert "Created profile 'coder'" in proc.stdout
    assert "Updated profile 'default': model.name" in proc.stdout
    assert MODEL_KEY not in proc.stdout + proc.stderr

    # default: only the listed key changed, its comment kept
    text = config.read_text()
    assert "model:  # mine, keep me\n" in text
    assert yaml.safe_load(text)["model"]["name"] == "model-of-default"
    # coder: created with every listed setting
    coder = home.profile_dir("coder")
    raw = yaml.safe_load((coder / "config.yaml").read_text())
    assert raw["model"] == {
        "base_url": "http://127.0.0.1:9/v1",
        "name": "coder-model",
        "read_timeout_s": 60,
    }
    assert raw["gateway"]["persona"] == "always"
    assert (coder / "SOUL.md").read_text() == "You write code.\n"
    env = read_env(coder / ".env")
    assert env["HERMES_MODEL_API_KEY"] == MODEL_KEY and env["API_SERVER_KEY"]
    assert (coder / ".env").stat().st_mode & 0o777 == 0o600
    assert read_state(coder, warn=False).desired_state == "running"
    # writer: persona and key from the files beside the declaration
    writer = home.profile_dir("writer")
    assert (writer / "SOUL.md").read_text() == "You write prose.\n"
    assert read_env(writer / ".env")["HERMES_MODEL_API_KEY"] == FILE_KEY
    assert read_state(writer, warn=False).desired_state == "stopped"
    # a profile the file does not list stays (no prune)
    assert home.profile_dir("handmade").is_dir()

    applied = events("profiles.applied")
    assert len(applied) == 1
    data = applied[0]["data"]
    assert data["created"] == ["coder", "writer"]
    assert data["updated"] == {"default": ["model.name"]}
    assert data["desired"] == {"coder": "running", "writer": "stopped"}
    assert data["deleted"] == [] and data["failed"] == {}
    ledger_files = [f for f in ledger_dir(home.root).rglob("*") if f.is_file()]
    assert ledger_files
    for file in ledger_files:
        assert MODEL_KEY.encode() not in file.read_bytes()
    result = read_result(home)
    assert result is not None and result["result"] == "applied"


def test_applying_twice_changes_nothing(home: HermesHome, tmp_path: Path) -> None:
    ensure_default_profile(home)
    path = write(tmp_path / "profiles.yaml", declaration(tmp_path))
    first = apply_cli(path, DECLARED_KEY=MODEL_KEY)
    assert first.returncode == 0, first.stderr
    before, ledger_before = files_with_mtimes(home.root), events()

    second = apply_cli(path, DECLARED_KEY=MODEL_KEY)
    assert second.returncode == 0, second.stderr
    assert "Nothing to change: every profile is as declared" in second.stdout
    assert all(f"  keep {name}" in second.stdout for name in ("default", "coder", "writer"))
    assert files_with_mtimes(home.root) == before  # not one file rewritten
    assert events() == ledger_before  # and no event


def test_a_changed_file_updates_only_what_changed(home: HermesHome, tmp_path: Path) -> None:
    ensure_default_profile(home)
    data = declaration(tmp_path)
    path = write(tmp_path / "profiles.yaml", data)
    assert apply_cli(path, DECLARED_KEY=MODEL_KEY).returncode == 0
    writer_files = files_with_mtimes(home.profile_dir("writer"))

    data["profiles"][1]["persona"] = "You review code.\n"
    data["profiles"][1]["config"]["model"]["read_timeout_s"] = 90
    write(path, data)
    proc = apply_cli(path, "--json", DECLARED_KEY="sk-rotated-key-000")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["result"]["updated"] == {
        "coder": ["model.read_timeout_s", "env.HERMES_MODEL_API_KEY", "soul"]
    }
    assert "sk-rotated-key-000" not in proc.stdout
    coder = home.profile_dir("coder")
    assert (coder / "SOUL.md").read_text() == "You review code.\n"
    assert read_env(coder / ".env")["HERMES_MODEL_API_KEY"] == "sk-rotated-key-000"
    assert yaml.safe_load((coder / "config.yaml").read_text())["model"]["read_timeout_s"] == 90
    assert files_with_mtimes(home.profile_dir("writer")) == writer_files


def test_prune_deletes_profiles_the_file_does_not_list(home: HermesHome, tmp_path: Path) -> None:
    ensure_default_profile(home)
    create_profile(home, "handmade")
    create_profile(home, "listed")
    path = write(tmp_path / "profiles.yaml", {"prune": True, "profiles": [{"name": "listed"}]})
    proc = apply_cli(path)
    assert proc.returncode == 0, proc.stderr
    assert "Deleted profile 'handmade'" in proc.stdout
    assert not home.profile_dir("handmade").exists()
    assert home.profile_dir("listed").is_dir() and (home.root / "config.yaml").is_file()
    assert [e["profile"] for e in events("profile.deleted")] == ["handmade"]
    assert events("profiles.applied")[0]["data"]["deleted"] == ["handmade"]


def test_a_profile_that_fails_is_reported_and_the_others_apply(
    home: HermesHome, tmp_path: Path
) -> None:
    ensure_default_profile(home)
    taken = create_profile(home, "taken")
    port = yaml.safe_load((taken / "config.yaml").read_text())["gateway"]["port"]
    path = write(
        tmp_path / "profiles.yaml",
        {
            "profiles": [
                {"name": "clash", "config": {"gateway.port": port}},
                {"name": "fine", "model": "m"},
            ]
        },
    )
    proc = apply_cli(path)
    assert proc.returncode == 1
    assert f"Not applied to profile 'clash': gateway.port {port} is already the port" in (
        proc.stdout
    )
    assert "Created profile 'fine'" in proc.stdout
    assert events("profiles.applied")[0]["data"]["failed"] == {
        "clash": f"gateway.port {port} is already the port of profile 'taken'"
    }
    status = run_hermes("gateway", "status")
    assert status.returncode == 0
    assert status.stdout.splitlines()[-1] == (
        f"profiles file partly applied: profile 'clash': gateway.port {port} is already the "
        "port of profile 'taken'"
    )


def test_env_file_form_in_dotenv_is_a_clash(home: HermesHome, tmp_path: Path) -> None:
    ensure_default_profile(home)
    directory = create_profile(home, "keyed")
    env_file = directory / ".env"
    env_file.write_text(env_file.read_text() + "HERMES_MODEL_API_KEY_FILE=/run/secrets/k\n")
    path = write(tmp_path / "profiles.yaml", {"profiles": [{"name": "keyed", "api_key_env": "K"}]})
    before = env_file.read_bytes()
    proc = apply_cli(path, K=MODEL_KEY)
    assert proc.returncode == 1
    assert "its .env sets HERMES_MODEL_API_KEY_FILE" in proc.stdout
    assert env_file.read_bytes() == before


# -- at boot: an invalid file stops nothing ----------------------------------------------


def test_boot_reports_a_rejected_file_and_gateway_status_shows_it(
    home: HermesHome, tmp_path: Path
) -> None:
    ensure_default_profile(home)
    path = write(tmp_path / "profiles.yaml", "profiles:\n  - name: a\n    modle: m\n")
    before = files_with_mtimes(home.root)
    line = apply_at_boot(home, None, {"HERMES_PROFILES_FILE": str(path)})
    assert line is not None
    assert line.startswith(f"profiles_file={path} result=rejected reason={path}: ")
    assert "unknown field 'modle'" in line
    # nothing applied: only the report (and the ledger) was written
    changed = {p for p, m in files_with_mtimes(home.root).items() if before.get(p) != m}
    assert {Path(p).name for p in changed} - {"ledger.db", "ledger.db-wal", "ledger.db-shm"} <= {
        "profiles-file.json"
    }
    assert not home.profile_dir("a").exists()
    rejected = events("profiles.rejected")
    assert len(rejected) == 1 and "unknown field 'modle'" in rejected[0]["data"]["reason"]

    status = run_hermes("gateway", "status")
    assert status.returncode == 0, status.stderr
    reason = rejected[0]["data"]["reason"]
    assert status.stdout.splitlines()[-1] == f"profiles file rejected: {reason}"
    all_status = run_hermes("status")
    assert all_status.stdout.count("profiles file rejected: ") == 1  # once, not per profile
    assert json.loads(run_hermes("gateway", "status", "--json").stdout)["profile"] == "default"

    # fixed: applied, and the line is gone
    write(path, {"profiles": [{"name": "a", "model": "m"}]})
    line = apply_at_boot(home, None, {"HERMES_PROFILES_FILE": str(path)})
    assert line is not None and "result=applied created=a " in line
    assert home.profile_dir("a").is_dir()
    assert "profiles file" not in run_hermes("gateway", "status").stdout
    # again: unchanged, the status file not rewritten, no event
    stamp = result_path(home).stat().st_mtime_ns
    count = len(events())
    line = apply_at_boot(home, None, {"HERMES_PROFILES_FILE": str(path)})
    assert line is not None and " result=unchanged " in line
    assert result_path(home).stat().st_mtime_ns == stamp and len(events()) == count
    # no file any more: nothing to report
    assert apply_at_boot(home, None, {}) is None
    assert not result_path(home).exists()


def test_cli_refusal_writes_no_report(home: HermesHome, tmp_path: Path) -> None:
    """At the command line the error is the report: exit 2, one line, nothing written."""
    ensure_default_profile(home)
    path = write(tmp_path / "profiles.yaml", "profiles:\n  - name: a\n    state: paused\n")
    before = files_with_mtimes(home.root)
    proc = apply_cli(path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "state must be running or stopped" in proc.stderr
    assert files_with_mtimes(home.root) == before


def test_apply_uses_hermes_profiles_file(home: HermesHome, tmp_path: Path) -> None:
    path = write(tmp_path / "profiles.yaml", {"profiles": [{"name": "viaenv", "model": "m"}]})
    proc = run_hermes("profiles", "apply", env={"HERMES_PROFILES_FILE": str(path)})
    assert proc.returncode == 0, proc.stderr
    assert home.profile_dir("viaenv").is_dir()
    unset = run_hermes("profiles", "apply", env={"HERMES_PROFILES_FILE": ""})
    assert unset.returncode == 2 and "give --file or set HERMES_PROFILES_FILE" in unset.stderr
