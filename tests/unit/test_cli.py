from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hermes_container import __version__
from hermes_container.home import HermesHome
from hermes_container.state import read_state
from tests.conftest import run_hermes

HEAVY = (
    "fastapi",
    "uvicorn",
    "authlib",
    "httpx",
    "starlette",
    "pydantic",
    # The work layer: its store (sqlite3 or psycopg) loads only for `hermes kanban`.
    "hermes_container.kanban",
    "psycopg",
    "sqlite3",
)
# Standard modules `gateway status` does without: together about 60 ms of imports on a
# 2-core machine, more than the whole command may take (bench/bench_cli.py: <= 2.5x bare
# python). Its plain forms are parsed without argparse (cli.status_args), which would
# bring gettext and locale with it.
SLOW_STDLIB = (
    "argparse",
    "gettext",
    "locale",
    "dataclasses",
    "datetime",
    "inspect",
    "logging",
    "shutil",
    "subprocess",
    "tempfile",
    "typing",
    "yaml",
)

_IMPORT_PROBE = """
import sys
from pathlib import Path
from hermes_container.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
names = {heavy!r}
heavy = sorted(m for m in sys.modules if m in names or m.split(".")[0] in names)
print("HEAVY=" + ",".join(heavy))
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["profile", "list"],
        ["profile", "list", "--json"],
        ["gateway", "status"],
        ["status"],
    ],
)
def test_fast_commands_import_no_heavy_modules(hermes_home: HermesHome, argv: list[str]) -> None:
    probe = _IMPORT_PROBE.format(heavy=set(HEAVY))
    proc = subprocess.run(
        [sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=60
    )
    assert "invalid choice" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last == "HEAVY=", f"{argv} imported {last} (stderr: {proc.stderr[-500:]})"


@pytest.mark.parametrize(
    "argv",
    [
        ["gateway", "status"],
        ["gateway", "status", "--all", "--json"],
        ["status"],
        ["status", "--json"],
    ],
)
def test_status_imports_no_slow_stdlib_modules(hermes_home: HermesHome, argv: list[str]) -> None:
    assert run_hermes("profile", "create", "coder").returncode == 0
    probe = _IMPORT_PROBE.format(heavy=set(SLOW_STDLIB))
    proc = subprocess.run(
        [sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=60
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Profile:" in proc.stdout or '"profile"' in proc.stdout, proc.stdout
    last = proc.stdout.strip().splitlines()[-1]
    assert last == "HEAVY=", f"{argv} imported {last}"


@pytest.mark.parametrize("argv", [["-p", "coder", "gateway", "status"], ["status"]])
def test_plain_status_of_profiles_that_never_ran_imports_no_json(
    hermes_home: HermesHome, argv: list[str]
) -> None:
    """No state file, no profiles-file result, no --json: nothing to parse or print as
    JSON, so json stays unloaded; nor is the ledger's actor module needed (status records
    nothing)."""
    assert run_hermes("profile", "create", "coder").returncode == 0
    assert not (hermes_home.profile_dir("coder") / "gateway_state.json").exists()
    probe = _IMPORT_PROBE.format(heavy={"json", "hermes_container.events"})
    proc = subprocess.run(
        [sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=60
    )
    assert "Profile:   coder" in proc.stdout, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY=", proc.stdout


# What the fast path parses by hand, and what argparse must answer the same way.
_STATUS_ARGVS = [
    ["gateway", "status"],
    ["gateway", "status", "--all"],
    ["gateway", "status", "--json"],
    ["gateway", "status", "--json", "--all", "--json"],
    ["status"],
    ["status", "--json"],
    ["-p", "coder", "gateway", "status"],
    ["--profile", "coder", "status", "--json"],
    ["--profile=coder", "gateway", "status", "--all"],
    ["--profile=", "gateway", "status"],
    ["-p", "gateway", "status"],  # the profile named "gateway", then `status`
    ["-v", "-p", "x", "-v", "--verbose", "gateway", "status"],
    ["-p", "a", "-p", "b", "gateway", "status"],  # the last one wins
]


@pytest.mark.parametrize("argv", _STATUS_ARGVS)
@pytest.mark.parametrize("env_profile", [None, "fromenv"])
def test_status_fast_path_matches_argparse(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], env_profile: str | None
) -> None:
    from hermes_container.cli import build_parser, status_args

    if env_profile is None:
        monkeypatch.delenv("HERMES_PROFILE", raising=False)
    else:
        monkeypatch.setenv("HERMES_PROFILE", env_profile)
    fast = status_args(argv)
    assert fast is not None, argv
    assert vars(fast) == vars(build_parser(argv).parse_args(argv))


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--help"],
        ["gateway"],
        ["gateway", "start"],
        ["gateway", "status", "--help"],
        ["gateway", "status", "--at", "1h"],
        ["gateway", "status", "--js"],  # an abbreviation: argparse's business
        ["gateway", "status", "extra"],
        ["status", "--all"],  # an error, which argparse words
        ["-pcoder", "gateway", "status"],
        ["-p", "-x", "gateway", "status"],
        ["-p"],
        ["--", "status"],
        ["--prof", "x", "status"],
        ["profile", "list"],
    ],
)
def test_status_fast_path_leaves_everything_else_to_argparse(argv: list[str]) -> None:
    from hermes_container.cli import status_args

    assert status_args(argv) is None


def test_status_fast_path_exit_keeps_output_and_exit_code(hermes_home: HermesHome) -> None:
    """The console script leaves a status run with os._exit (cli._exit_without_teardown):
    what was printed must still arrive whole, and the exit code must be the command's."""
    for name in ("alpha", "beta"):
        assert run_hermes("profile", "create", name).returncode == 0
    proc = run_hermes("status")
    assert proc.returncode == 0, proc.stderr
    assert [line for line in proc.stdout.splitlines() if line.startswith("Profile:")] == [
        "Profile:   default",
        "Profile:   alpha",
        "Profile:   beta",
    ]
    assert proc.stdout.endswith("Gateway:   -\n")
    missing = run_hermes("-p", "ghost", "gateway", "status", "--json")
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr == (
        "hermes: error: profile 'ghost' does not exist (see: hermes profile list)\n"
    )


def test_status_is_gateway_status_all(hermes_home: HermesHome) -> None:
    assert run_hermes("profile", "create", "coder").returncode == 0
    for extra in ([], ["--json"]):
        short = run_hermes("status", *extra)
        long = run_hermes("gateway", "status", "--all", *extra)
        assert short.returncode == long.returncode == 0, short.stderr + long.stderr
        assert short.stdout == long.stdout and short.stderr == long.stderr == ""
    text = run_hermes("status").stdout
    assert "Profile:   default" in text and "Profile:   coder" in text
    # the same at a past time, replayed from the ledger
    short = run_hermes("status", "--at", "1m", "--json")
    long = run_hermes("gateway", "status", "--all", "--at", "1m", "--json")
    assert short.returncode == long.returncode, short.stderr + long.stderr
    assert short.stdout == long.stdout


def test_version() -> None:
    proc = run_hermes("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"hermes {__version__}"


def test_help_lists_profile_command() -> None:
    proc = run_hermes("--help")
    assert proc.returncode == 0
    assert "profile" in proc.stdout


def test_no_command_prints_usage_and_fails() -> None:
    proc = run_hermes()
    assert proc.returncode == 2
    assert "usage:" in proc.stderr


def test_unknown_command_is_one_line_exit_2() -> None:
    proc = run_hermes("frobnicate")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("hermes: error:")


def test_profile_lifecycle_through_cli(hermes_home: HermesHome) -> None:
    assert run_hermes("profile", "create", "coder").returncode == 0
    listed = json.loads(run_hermes("profile", "list", "--json").stdout)
    assert [p["name"] for p in listed] == ["default", "coder"]
    assert listed[1]["port"] == 8643 and listed[1]["api_key_set"] is True
    # The key itself is never printed.
    key_line = (hermes_home.profile_dir("coder") / ".env").read_text()
    api_key = next(ln for ln in key_line.splitlines() if ln.startswith("API_SERVER_KEY="))
    shown = run_hermes("profile", "show", "coder")
    assert shown.returncode == 0 and api_key.split("=", 1)[1] not in shown.stdout
    table = run_hermes("profile", "list")
    assert "coder" in table.stdout and "8643" in table.stdout
    deleted = run_hermes("profile", "delete", "coder", "--yes")
    assert deleted.returncode == 0
    assert not hermes_home.profile_dir("coder").exists()


def test_global_profile_option_and_env(hermes_home: HermesHome) -> None:
    run_hermes("profile", "create", "coder")
    by_flag = json.loads(run_hermes("-p", "coder", "profile", "show", "--json").stdout)
    assert by_flag["name"] == "coder"
    by_env = run_hermes("profile", "show", "--json", env={"HERMES_PROFILE": "coder"})
    assert json.loads(by_env.stdout)["name"] == "coder"
    bad = run_hermes("-p", "../x", "profile", "show")
    assert bad.returncode == 2 and "invalid profile name" in bad.stderr


@pytest.mark.parametrize("name", ["..", "a/b", "Upper", "ünï", "", "a" * 64, "../../etc", "x\ny"])
def test_bad_name_exit_2_one_line_nothing_created(hermes_home: HermesHome, name: str) -> None:
    proc = run_hermes("profile", "create", name)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "invalid profile name" in proc.stderr
    assert not hermes_home.root.exists()


def test_duplicate_create_fails_cleanly(hermes_home: HermesHome) -> None:
    run_hermes("profile", "create", "coder")
    proc = run_hermes("profile", "create", "coder")
    assert proc.returncode == 1
    assert "already exists" in proc.stderr


def test_create_start_without_a_tree_records_desired_running(hermes_home: HermesHome) -> None:
    proc = run_hermes("profile", "create", "coder", "--start")
    assert proc.returncode == 0, proc.stderr
    assert "hermes supervise" in proc.stdout
    assert read_state(hermes_home.profile_dir("coder")).desired_state == "running"
    run_hermes("profile", "create", "idle")
    assert read_state(hermes_home.profile_dir("idle")).problem == "missing"


def test_delete_needs_confirmation_without_tty(hermes_home: HermesHome) -> None:
    run_hermes("profile", "create", "coder")
    proc = run_hermes("profile", "delete", "coder", input="y\n")
    assert proc.returncode == 1 and "--yes" in proc.stderr
    assert hermes_home.profile_dir("coder").is_dir()


def test_delete_confirmed_on_a_tty(hermes_home: HermesHome) -> None:
    run_hermes("profile", "create", "coder")
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # child: stdin is the pty
        os.execv(
            sys.executable, [sys.executable, "-m", "hermes_container", "profile", "delete", "coder"]
        )
    output = b""
    while b"[y/N]" not in output:
        output += os.read(fd, 1024)
    os.write(fd, b"y\n")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not hermes_home.profile_dir("coder").exists()


def test_delete_default_refused(hermes_home: HermesHome) -> None:
    proc = run_hermes("profile", "delete", "default", "--yes")
    assert proc.returncode == 2 and "cannot be deleted" in proc.stderr


def test_env_file_mode_600(hermes_home: HermesHome) -> None:
    run_hermes("profile", "create", "coder")
    for path in (hermes_home.root / ".env", hermes_home.profile_dir("coder") / ".env"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_command_map_matches_what_modules_register() -> None:
    """Building one command's parser must never miss a command: the map is complete."""
    import argparse

    from hermes_container.cli import COMMANDS, build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(COMMANDS)
    for name, module in COMMANDS.items():
        one = build_parser([name])
        one_sub = next(a for a in one._actions if isinstance(a, argparse._SubParsersAction))
        assert name in one_sub.choices, (name, module)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["gateway", "status"], "gateway"),
        (["-p", "coder", "gateway", "start"], "gateway"),
        (["--profile", "coder", "logs"], "logs"),
        (["--profile=coder", "-v", "profile", "list"], "profile"),
        (["-pcoder", "chat", "hi"], "chat"),
        (["--help"], None),
        (["-p"], None),
        ([], None),
        (["-x", "gateway"], None),
    ],
)
def test_command_name(argv: list[str], expected: str | None) -> None:
    from hermes_container.cli import command_name

    assert command_name(argv) == expected


def test_a_command_builds_only_its_own_parser(hermes_home: HermesHome) -> None:
    probe = (
        "import sys\n"
        "from hermes_container.cli import main\n"
        "main(['gateway', 'status'])\n"
        "print(sorted(m for m in sys.modules if m.startswith('hermes_container.commands.')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.stdout.strip().splitlines()[-1] == "['hermes_container.commands.gateway']"


@pytest.mark.parametrize(
    "argv",
    [
        ["_slot-finish", "coder", "256", "9"],
        ["_slot-finish", "coder", "0"],
        ["_slot-finish", "gateway", "78", "0"],
    ],
)
def test_finish_fast_path_matches_argparse(
    monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    """A slot's finish script is on the crash -> ready path: its plain form skips argparse
    but must mean exactly what argparse would make of it."""
    from hermes_container.cli import build_parser, finish_args

    monkeypatch.delenv("HERMES_PROFILE", raising=False)
    fast = finish_args(argv)
    assert fast is not None, argv
    assert vars(fast) == vars(build_parser(argv).parse_args(argv))


@pytest.mark.parametrize(
    "argv",
    [
        ["_slot-finish"],
        ["_slot-finish", "coder"],
        ["_slot-finish", "coder", "1", "2", "3"],
        ["_slot-finish", "--help"],
        ["_slot-finish", "coder", "-1", "0"],
        ["-p", "x", "_slot-finish", "coder", "1", "0"],
        ["gateway", "status"],
    ],
)
def test_finish_fast_path_leaves_everything_else_to_argparse(argv: list[str]) -> None:
    from hermes_container.cli import finish_args

    assert finish_args(argv) is None


def test_finish_imports_no_argparse(hermes_home: HermesHome, tmp_path: Path) -> None:
    """The finish script's run loads neither argparse nor logging's setup: s6 restarts the
    gateway only once it has exited."""
    code = (
        "import sys\n"
        "from hermes_container.cli import main\n"
        "rc = main(['_slot-finish', 'nosuch', 'x', 'y'])\n"
        "print(rc, 'argparse' in sys.modules, 'gettext' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "HERMES_HOME": str(hermes_home.root)},
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    assert proc.stdout.split() == ["0", "False", "False"]
    assert "bad exit/signal 'x' 'y'" in proc.stderr
