"""Bad input for every CLI command and every dashboard and gateway HTTP endpoint.

Each case must get a clear one-line error and a non-zero exit (CLI) or a 4xx (HTTP):
never a 500, never a traceback, and the home is byte-for-byte what it was before
(snapshot of every file, directory and symlink, before and after).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import free_port, set_port
from tests.fake_upstream import FakeUpstream
from tests.s6.conftest import Tree

TOKEN = "bad-input-test-token-0123456789abcdef"
WAIT_S = 30.0
Snapshot = dict[str, tuple[Any, ...]]


# -- the home and its snapshot ----------------------------------------------------------


def snapshot(*roots: Path, skip: tuple[str, ...] = ()) -> Snapshot:
    """Every entry under `roots`: kind, mode, and content hash / link target / size."""
    found: Snapshot = {}
    for root in roots:
        if not os.path.lexists(root):
            found[str(root)] = ("absent",)
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            for name in [*dirnames, *filenames, "."]:
                path = os.path.normpath(os.path.join(dirpath, name))
                if any(part in skip for part in Path(path).relative_to(root).parts):
                    continue
                st = os.lstat(path)
                if os.path.islink(path):
                    found[path] = ("link", os.readlink(path))
                elif os.path.isdir(path):
                    found[path] = ("dir", st.st_mode)
                elif not stat.S_ISREG(st.st_mode):  # FIFOs of s6: never read them
                    found[path] = ("special", st.st_mode)
                else:
                    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
                    found[path] = ("file", st.st_mode, st.st_size, digest)
    return found


def diff(before: Snapshot, after: Snapshot) -> list[str]:
    changes = []
    for path in sorted(set(before) | set(after)):
        if before.get(path) != after.get(path):
            changes.append(f"{path}: {before.get(path)} -> {after.get(path)}")
    return changes


@dataclass
class Home:
    base: Path
    root: Path
    outside: Path  # a directory outside the home that a symlinked "profile" points to
    env: dict[str, str] = field(default_factory=dict)

    def roots(self) -> tuple[Path, ...]:
        return (self.root, self.outside)


def _base_env(home_root: Path, scandir: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HERMES_", "API_SERVER_KEY")) and k not in ("HOME",)
    }
    env.update(
        HERMES_HOME=str(home_root),
        HERMES_S6_SCANDIR=str(scandir),  # no svscan there: outside a supervised tree
        HOME=str(home_root.parent),
        PYTHONDONTWRITEBYTECODE="1",
        NO_PROXY="127.0.0.1,localhost",
    )
    return env


@pytest.fixture(scope="module")
def home() -> Iterator[Home]:
    base = Path(tempfile.mkdtemp(prefix="hermes-badinput-"))
    root = base / "home"
    outside = base / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("not a profile\n")
    h = Home(base=base, root=root, outside=outside, env=_base_env(root, base / "no-svscan"))
    for name in ("alpha", "broken"):
        _cli(h.env, "profile", "create", name, check=True)
    set_port(root, free_port())
    set_port(root / "profiles" / "alpha", free_port())
    broken = root / "profiles" / "broken" / "config.yaml"
    broken.write_text(broken.read_text().replace("  port:", "  port: oops\n  old_port:"))
    (root / "profiles" / "link").symlink_to(outside, target_is_directory=True)
    try:
        yield h
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _cli(
    env: dict[str, str], *args: str, check: bool = False, timeout: float = WAIT_S
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "hermes_container", *args],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )
    if check:
        assert proc.returncode == 0, f"hermes {' '.join(args)}: {proc.stderr}"
    return proc


# -- the CLI table ----------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    expect: str  # a fragment of the one error line
    code: int | None = None  # exact exit code, when it is part of the contract
    env: tuple[tuple[str, str], ...] = ()
    multiline: bool = False  # `hermes` alone prints the whole help on stderr

    @property
    def id(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in self.env)
        return (extra + " " + " ".join(self.args)).strip()[:80] or "<no args>"


def c(*args: str, expect: str, code: int | None = None, **env: str) -> Case:
    return Case(tuple(args), expect, code, tuple(env.items()))


LONG = "a" * 64
INVALID_NAMES = ["", ".", "..", "../x", "a/b", "/etc", "UPPER", "é", "-lead", "_lead", "a b", LONG]
INVALID_NAMES += ["a\nb", "a;b", "a*", "nul\x01x", "default/../alpha"]

CLI_CASES: list[Case] = [
    Case((), "usage:", 2, multiline=True),
    c("nosuchcommand", expect="invalid choice", code=2),
    c("--bogus", expect="unrecognized arguments", code=2),
    c("-p", "../etc", "profile", "show", expect="invalid profile name", code=2),
    c("-p", "", "gateway", "status", expect="invalid profile name", code=2),
    c("-p", "nosuch", "gateway", "status", expect="does not exist", code=1),
    c("gateway", "status", expect="invalid profile name", code=2, HERMES_PROFILE="Bad/Name"),
    # profile create
    *[
        c("profile", "create", "--", n, expect="invalid profile name", code=2)
        for n in INVALID_NAMES
    ],
    c("profile", "create", expect="required: name", code=2),
    c("profile", "create", "x1", "x2", expect="unrecognized arguments", code=2),
    c("profile", "create", "default", expect="already exists", code=1),
    c("profile", "create", "alpha", expect="already exists", code=1),
    c("profile", "create", "link", expect="already exists", code=1),
    c("profile", "create", "fresh", "--clone", "nosuch", expect="does not exist", code=1),
    c("profile", "create", "fresh", "--clone", "../alpha", expect="invalid profile name"),
    c("profile", "create", "fresh", "--clone", expect="expected one argument", code=2),
    c(
        "profile",
        "create",
        "fresh",
        expect="HERMES_GATEWAY_PORT_BASE",
        HERMES_GATEWAY_PORT_BASE="x",
    ),
    c("profile", "create", "fresh", expect="outside 1-65535", HERMES_GATEWAY_PORT_BASE="70000"),
    # profile delete
    *[
        c("profile", "delete", "--yes", "--", n, expect="invalid profile name")
        for n in INVALID_NAMES
    ],
    c("profile", "delete", "default", "--yes", expect="cannot be deleted", code=2),
    c("profile", "delete", "nosuch", "--yes", expect="does not exist", code=1),
    c("profile", "delete", "link", "--yes", expect="does not exist", code=1),
    c("profile", "delete", "alpha", expect="confirm with --yes", code=1),
    c("profile", "delete", expect="required: name", code=2),
    # profile show / list
    *[c("profile", "show", "--", n, expect="invalid profile name", code=2) for n in INVALID_NAMES],
    c("profile", "show", "nosuch", expect="does not exist", code=1),
    c("profile", "show", "link", expect="does not exist", code=1),
    c("profile", "show", "a", "b", expect="unrecognized arguments", code=2),
    c("profile", "list", "extra", expect="unrecognized arguments", code=2),
    c("profile", "list", "--json=yes", expect="ignored explicit argument", code=2),
    c("profile", "bogus", expect="invalid choice", code=2),
    c("profile", "rotate-key", "nosuch", expect="does not exist", code=1),
    c("profile", "rotate-key", "../x", expect="invalid profile name", code=2),
    c("profile", "rotate-key", expect="required: name", code=2),
    c("profile", expect="required: <action>", code=2),
    # gateway start / stop / restart / status
    c("gateway", expect="required: <action>", code=2),
    c("gateway", "bogus", expect="invalid choice", code=2),
    *[
        c("-p", name, "gateway", action, expect=fragment)
        for action in ("start", "stop", "restart", "status", "reload")
        for name, fragment in (("nosuch", "does not exist"), ("../x", "invalid profile name"))
    ],
    *[
        c("gateway", action, "--timeout", value, expect="--timeout")
        for action in ("start", "stop", "restart", "reload")
        for value in ("0", "-1", "abc", "nan")
    ],
    c("gateway", "status", "--timeout", "5", expect="unrecognized arguments", code=2),
    c("-p", "link", "gateway", "stop", expect="does not exist", code=1),
    # gateway run
    c("gateway", "run", "--no-supervise", expect="refusing to run the gateway as root", code=78)
    if os.geteuid() == 0
    else c("-p", "broken", "gateway", "run", expect="gateway.port", code=78),
    c(
        "-p",
        "nosuch",
        "gateway",
        "run",
        "--no-supervise",
        expect="does not exist",
        HERMES_ALLOW_ROOT_GATEWAY="1",
    ),
    c("-p", "../x", "gateway", "run", expect="invalid profile name", HERMES_ALLOW_ROOT_GATEWAY="1"),
    c("gateway", "run", "--notify-fd", "abc", expect="invalid int value", code=2),
    c("gateway", "run", "--bogus", expect="unrecognized arguments", code=2),
    c(
        "-p",
        "broken",
        "gateway",
        "run",
        "--no-supervise",
        expect="gateway.port",
        code=78,
        HERMES_ALLOW_ROOT_GATEWAY="1",
    ),
    # chat
    c("chat", expect="required: message", code=2),
    c("-p", "nosuch", "chat", "hi", expect="does not exist", code=1),
    c("-p", "../x", "chat", "hi", expect="invalid profile name", code=2),
    c("-p", "broken", "chat", "hi", expect="gateway.port"),
    c("-p", "alpha", "chat", "hi", expect="not reachable", code=1),
    *[c("chat", "hi", "--timeout", v, expect="--timeout") for v in ("-1", "nan", "abc")],
    # reconcile / supervise / logs
    c("reconcile", expect="no live s6-svscan", code=1),
    c("reconcile", "extra", expect="unrecognized arguments", code=2),
    c("supervise", "extra", expect="unrecognized arguments", code=2),
    c("supervise", "--dashboard=1", expect="ignored explicit argument", code=2),
    c("logs", "-p", "nosuch", expect="does not exist", code=1),
    c("logs", "-p", "../x", expect="invalid profile name", code=2),
    c("logs", "-p", "link", expect="does not exist", code=1),
    c("logs", "-n", "-1", expect="--lines", code=2),
    c("logs", "-n", "abc", expect="invalid int value", code=2),
    # dashboard: every refusal happens before it binds anything
    c("dashboard", "--port", "abc", expect="invalid int value", code=2),
    *[c("dashboard", "--port", p, expect="port") for p in ("0", "-5", "70000")],
    c("dashboard", "--host", "0.0.0.0", expect="HERMES_DASHBOARD_INSECURE", code=78),
    c("dashboard", expect="HERMES_DASHBOARD_PORT", code=78, HERMES_DASHBOARD_PORT="abc"),
    c("dashboard", expect="HERMES_DASHBOARD_PORT", code=78, HERMES_DASHBOARD_PORT="99999"),
    c("dashboard", expect="incomplete OIDC", code=78, HERMES_DASHBOARD_OIDC_ISSUER="http://x"),
    c("dashboard", expect="TRUSTED_PROXIES", code=78, HERMES_DASHBOARD_TRUSTED_PROXIES="zzz"),
    c("dashboard", expect="PUBLIC_URL", code=78, HERMES_DASHBOARD_PUBLIC_URL="ftp://x"),
    c("dashboard", expect="SESSION_TTL", code=78, HERMES_DASHBOARD_SESSION_TTL="abc"),
    c("dashboard", expect="SESSION_MAX_AGE", code=78, HERMES_DASHBOARD_SESSION_MAX_AGE="0"),
    c("dashboard", "extra", expect="invalid choice", code=2),
    c("dashboard", "login-url", "extra", expect="unrecognized arguments", code=2),
    # ingress, status, jobs
    c("ingress", "extra", expect="invalid choice", code=2),
    c("ingress", "key", "extra", expect="unrecognized arguments", code=2),
    c("status", "extra", expect="unrecognized arguments", code=2),
    c(
        "jobs",
        "add",
        "j",
        "--profile",
        "default",
        "--prompt",
        "p",
        "--cron",
        "61 * * * *",
        expect="bad cron expression",
        code=2,
    ),
    c(
        "jobs",
        "add",
        "j",
        "--profile",
        "nobody",
        "--prompt",
        "p",
        "--every",
        "90s",
        expect="unknown profile",
        code=2,
    ),
    c(
        "jobs",
        "add",
        "j",
        "--profile",
        "default",
        "--prompt",
        "p",
        "--every",
        "0s",
        expect="--every",
        code=2,
    ),
    # healthcheck
    *[c("healthcheck", "--timeout", v, expect="--timeout") for v in ("-1", "nan", "abc")],
    c("healthcheck", "extra", expect="unrecognized arguments", code=2),
    c("healthcheck", "--liveness", "--readiness", expect="not allowed with", code=2),
    # config: every refusal leaves config.yaml and .env byte-identical
    c("config", expect="required: <action>", code=2),
    c("config", "bogus", expect="invalid choice", code=2),
    c("config", "get", "model.nmae", expect="did you mean 'model.name'?", code=2),
    c("-p", "nosuch", "config", "get", "model.name", expect="does not exist", code=1),
    c("-p", "../x", "config", "list", expect="invalid profile name", code=2),
    c("-p", "link", "config", "list", expect="does not exist", code=1),
    c("config", "list", "extra", expect="unrecognized arguments", code=2),
    c("config", "list", "--json=yes", expect="ignored explicit argument", code=2),
    c("config", "set", "model.name", expect="required: value", code=2),
    c("config", "set", "model.nmae", "x", expect="did you mean 'model.name'?", code=2),
    c("config", "set", "dashboard.port", "1", expect="unknown key 'dashboard.port'", code=2),
    *[
        c("-p", "alpha", "config", "set", key, value, expect=fragment, code=2)
        for key, value, fragment in (
            ("model.read_timeout_s", "abc", "must be a positive number"),
            ("model.read_timeout_s", "-1", "must be a positive number"),
            ("model.connect_timeout_s", "inf", "must be a positive number"),
            ("gateway.port", "70000", "is not a port number"),
            ("gateway.port", "8642.0", "is not a port number"),
            ("gateway.max_body_bytes", "0", "must be a positive integer"),
            ("model.base_url", "ftp://x", "must be an http(s) URL"),
            ("model.base_url", "http://[::1", "must be an http(s) URL"),
            ("model.proxy", "socks5://p:1", "must be an http(s) proxy URL"),
            ("model.client", "turbo", "must be auto, fast or httpx"),
            ("gateway.persona", "sometimes", "must be always or unless-client-system"),
            ("model.name", "", "must be a non-empty string"),
            ("model.api_key", "sk-x", "config set-secret HERMES_MODEL_API_KEY"),
            ("kanban.max_in_progress", "3", "default profile's config.yaml only"),
        )
    ],
    c("config", "set", "kanban.max_in_progress", "0", expect="positive integer", code=2),
    c("config", "set", "jobs.delivery_max_attempts", "101", expect="from 1 to 100", code=2),
    c("config", "set", "kanban.default_assignee", "Bad/Name", expect="invalid profile", code=2),
    c("config", "unset", "model.name", expect="model.name is missing", code=2),
    c("config", "unset", "bogus.key", expect="unknown key 'bogus.key'", code=2),
    c("-p", "broken", "config", "set", "model.name", "x", expect="gateway.port", code=2),
    c("config", "set-secret", "HOME", expect="not a secret this project reads", code=2),
    c("config", "set-secret", "API_SERVER_KEY", expect="refusing an empty value", code=2),
    c("config", "edit", expect="$VISUAL or $EDITOR", code=2, EDITOR="", VISUAL=""),
    # setup: refused before any question or request
    c("setup", "--non-interactive", expect="needs --base-url and --model", code=2),
    c("setup", "--api-key-stdin", expect="needs --non-interactive", code=2),
    c(
        "setup",
        "--non-interactive",
        "--base-url",
        "ftp://x",
        "--model",
        "m",
        expect="must be an http(s) URL",
        code=2,
    ),
    c("-p", "../x", "setup", expect="invalid profile name", code=2),
    c("-p", "fresh", "setup", expect="no answer for: Provider URL", code=2),
    c(
        "-p",
        "fresh",
        "setup",
        "--non-interactive",
        "--base-url",
        "http://127.0.0.1:1/v1",
        "--model",
        "m",
        expect="cannot reach the provider",
        code=1,
    ),
    # profile create's values
    c("profile", "create", "fresh", "--base-url", "ftp://x", expect="http(s) URL", code=2),
    c("profile", "create", "fresh", "--model", "", expect="non-empty string", code=2),
    c("profile", "create", "fresh", "--api-key-stdin", expect="refusing an empty", code=2),
    c("profile", "create", "fresh", "--persona-file", "/nonexistent", expect="persona", code=2),
    c("profile", "create", "fresh", "--base-url", expect="expected one argument", code=2),
    # profiles apply (declarative profiles): refused before anything is read or written;
    # bad file contents are PROFILES_FILE_CASES below
    c("profiles", expect="required: <action>", code=2),
    c("profiles", "bogus", expect="invalid choice", code=2),
    c("profiles", "apply", expect="give --file or set HERMES_PROFILES_FILE", code=2),
    c("profiles", "apply", "--file", expect="expected one argument", code=2),
    c("profiles", "apply", "--file", "", expect="--file must name a file", code=2),
    c("profiles", "apply", "--file", "/nonexistent/p.yaml", expect="cannot read it", code=2),
    c("profiles", "apply", "--file", "/dev/null", expect="expected a mapping", code=2),
    c("profiles", "apply", "extra", expect="unrecognized arguments", code=2),
    c("profiles", "apply", "--json=yes", expect="ignored explicit argument", code=2),
    c(
        "profiles",
        "apply",
        expect="cannot read it",
        code=2,
        HERMES_PROFILES_FILE="/nonexistent/p.yaml",
    ),
]


def _check_cli(home: Home, case: Case, env: dict[str, str], roots: tuple[Path, ...]) -> None:
    before = snapshot(*roots)
    try:
        proc = _cli({**env, **dict(case.env)}, *case.args)
    except subprocess.TimeoutExpired:
        pytest.fail(f"hermes {case.id}: did not exit within {WAIT_S:g}s (bad input accepted?)")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"hermes {case.id}: exit 0 on bad input\n{output}"
    if case.code is not None:
        assert proc.returncode == case.code, f"hermes {case.id}: exit {proc.returncode}\n{output}"
    assert "Traceback" not in output, f"hermes {case.id}: traceback\n{output}"
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines, f"hermes {case.id}: no error message on stderr\n{output}"
    if not case.multiline:
        assert len(lines) == 1, f"hermes {case.id}: the error is not one line:\n{proc.stderr}"
        assert lines[0].startswith("hermes"), f"hermes {case.id}: {lines[0]!r}"
    assert case.expect in proc.stderr, f"hermes {case.id}: no {case.expect!r} in\n{proc.stderr}"
    changes = diff(before, snapshot(*roots))
    assert not changes, f"hermes {case.id} changed the disk:\n" + "\n".join(changes)


@pytest.mark.parametrize("case", CLI_CASES, ids=[case.id for case in CLI_CASES])
def test_cli_bad_input(home: Home, case: Case) -> None:
    _check_cli(home, case, home.env, home.roots())


FRESH_CASES = [
    c("profile", "create", "../x", expect="invalid profile name"),
    c("profile", "delete", "nosuch", "--yes", expect="does not exist"),
    c("profile", "show", "nosuch", expect="does not exist"),
    c("-p", "nosuch", "gateway", "start", expect="does not exist"),
    c("gateway", "stop", "--timeout", "nan", expect="--timeout"),
    c("gateway", "start", "--timeout", "-1", expect="--timeout"),
    c("logs", "-p", "nosuch", expect="does not exist"),
    c("chat", "hi", "--timeout", "-1", expect="--timeout"),
    c("dashboard", "--port", "70000", expect="port"),
    c("dashboard", expect="SESSION_TTL", HERMES_DASHBOARD_SESSION_TTL="abc"),
    c("config", "set", "model.nmae", "x", expect="did you mean"),
    c("config", "set-secret", "HOME", expect="not a secret"),
    c("setup", "--non-interactive", "--base-url", "ftp://x", "--model", "m", expect="http(s)"),
    c("profile", "create", "x", "--base-url", "ftp://x", expect="http(s) URL"),
    c("profiles", "apply", "--file", "/nonexistent/p.yaml", expect="cannot read it"),
]


@pytest.mark.parametrize("case", FRESH_CASES, ids=[case.id for case in FRESH_CASES])
def test_cli_bad_input_creates_no_home(home: Home, case: Case) -> None:
    """On a home that does not exist yet, a refused command must not create it."""
    fresh = home.base / "never-created"
    env = {**home.env, "HERMES_HOME": str(fresh)}
    _check_cli(home, case, env, (fresh,))


# `hermes profiles apply --file F` on files it must refuse whole: one line naming the file,
# exit 2, and no profile created, changed or deleted (the file lists `alpha`, which exists,
# and `fresh`, which does not; prune: true would delete `broken`).
PROFILES_FILE_CASES: list[tuple[str, str]] = [
    ("profiles: [\n", "malformed YAML"),
    ("prune: true\n", "`profiles:` must be a list"),
    ("prune: 1\nprofiles: []\n", "prune must be true or false"),
    ("profiles:\n  - name: fresh\n  - name: ../x\n", "invalid profile name"),
    ("profiles:\n  - name: alpha\n    modle: m\n", "did you mean 'model'?"),
    ("profiles:\n  - name: fresh\n    api_key: sk-inline\n", "a key never goes in this file"),
    ("profiles:\n  - name: alpha\n    base_url: ftp://x\n", "base_url must be an http(s) URL"),
    ("profiles:\n  - name: alpha\n    state: paused\n", "state must be running or stopped"),
    ("profiles:\n  - name: fresh\n    api_key_env: UNSET_KEY_VAR\n", "UNSET_KEY_VAR is not set"),
    ("profiles:\n  - name: fresh\n    api_key_file: /nonexistent\n", "api_key_file"),
    ("profiles:\n  - name: fresh\n    persona_file: /nonexistent\n", "persona_file"),
    ("profiles:\n  - name: alpha\n    config: {gateway.port: 0}\n", "is not a port number"),
    ("profiles:\n  - name: alpha\n    config: {model.api_key: k}\n", "is a secret"),
    ("prune: true\nprofiles:\n  - name: fresh\n  - name: fresh\n", "is listed twice"),
]


@pytest.mark.parametrize(
    ("text", "expect"), PROFILES_FILE_CASES, ids=[e for _, e in PROFILES_FILE_CASES]
)
def test_profiles_apply_bad_file(home: Home, text: str, expect: str) -> None:
    path = home.base / "declared" / "profiles.yaml"  # outside the home: not snapshotted
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    case = c("profiles", "apply", "--file", str(path), expect=expect, code=2)
    _check_cli(home, case, home.env, home.roots())


@pytest.mark.parametrize(
    "value", ["/dev/null", "relative-file"], ids=["home-is-dev-null", "home-is-a-file"]
)
@pytest.mark.parametrize(
    "args",
    [
        ("profile", "list"),
        ("profile", "create", "x"),
        ("gateway", "stop"),
        ("gateway", "status"),
        ("healthcheck",),
        ("dashboard", "--port", "1"),
    ],
    ids=lambda a: " ".join(a),
)
def test_cli_home_is_not_a_directory(home: Home, value: str, args: tuple[str, ...]) -> None:
    path = value if value.startswith("/") else str(home.base / value)
    if not value.startswith("/"):
        Path(path).write_text("I am a file\n")
    env = {**home.env, "HERMES_HOME": path}
    before = snapshot(home.base)
    proc = _cli(env, *args)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "Traceback" not in output, output
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hermes"), proc.stderr
    assert not diff(before, snapshot(home.base))


# -- inside a live s6 tree: the same refusals, and the tree's own knobs -----------------

TREE_CASES = [
    c("profile", "create", "../x", expect="invalid profile name", code=2),
    c("profile", "delete", "default", "--yes", expect="cannot be deleted", code=2),
    c("profile", "delete", "nosuch", "--yes", expect="does not exist", code=1),
    c("-p", "nosuch", "gateway", "start", expect="does not exist", code=1),
    c("-p", "nosuch", "gateway", "restart", expect="does not exist", code=1),
    c("gateway", "start", "--timeout", "nan", expect="--timeout"),
    c("gateway", "stop", "--timeout", "-1", expect="--timeout"),
    c("reconcile", expect="HERMES_GATEWAY_STAGGER", HERMES_GATEWAY_STAGGER="abc"),
    c("reconcile", expect="HERMES_GATEWAY_STAGGER", HERMES_GATEWAY_STAGGER="-1"),
    c("logs", "-p", "nosuch", expect="does not exist", code=1),
    c("supervise", expect="already", code=1),
]


@pytest.mark.s6
def test_cli_bad_input_in_a_live_tree(tree: Tree) -> None:
    # s6 writes logs/, supervise/ and event/ on its own schedule; `hermes supervise`
    # must refuse before it writes anything (no run/supervise.lock either).
    skip = ("logs", "supervise", "event")
    for case in TREE_CASES:
        before = snapshot(tree.home.root, tree.scandir, skip=skip)
        proc = tree.hermes(*case.args, env=dict(case.env), timeout=WAIT_S)
        output = proc.stdout + proc.stderr
        assert proc.returncode != 0, f"{case.id}: exit 0\n{output}"
        if case.code is not None:
            assert proc.returncode == case.code, f"{case.id}: exit {proc.returncode}\n{output}"
        assert "Traceback" not in output, f"{case.id}\n{output}"
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and case.expect in lines[0], f"{case.id}\n{proc.stderr}"
        changes = diff(before, snapshot(tree.home.root, tree.scandir, skip=skip))
        assert not changes, f"{case.id} changed the disk:\n" + "\n".join(changes)


# -- HTTP ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Http:
    method: str
    target: str  # sent verbatim on the request line
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    want: tuple[int, ...] = ()  # acceptable statuses (all 4xx)
    label: str = ""

    @property
    def id(self) -> str:
        return self.label or f"{self.method} {self.target[:60]}"


def raw_http(port: int, req: Http, auth: dict[str, str]) -> tuple[int, bytes]:
    """Send the request exactly as written (no client-side normalisation of the target)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT_S)
    try:
        conn.putrequest(req.method, req.target, skip_host=True, skip_accept_encoding=True)
        headers = {"host": f"127.0.0.1:{port}", **auth, **dict(req.headers)}
        for name, value in headers.items():
            if value is not None:
                conn.putheader(name, value)
        if req.body or req.method in ("POST", "PUT", "PATCH"):
            conn.putheader("content-length", str(len(req.body)))
        conn.endheaders(req.body or None)
        response = conn.getresponse()
        return response.status, response.read()
    except (ConnectionResetError, BrokenPipeError):
        return 0, b""  # the server may drop a connection whose body it refused early
    finally:
        conn.close()


def _wait_http(port: int, path: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"server exited: {proc.stderr.read() if proc.stderr else ''}"
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status < 500:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing answered on 127.0.0.1:{port}{path}")


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    try:
        _, err = proc.communicate(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err


JSON = (("content-type", "application/json"),)
MIB = 1024 * 1024
DEEP = b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"

GATEWAY_CASES: list[Http] = [
    Http("GET", "/v1/models", (("authorization", ""),), want=(401,), label="models no auth"),
    Http("GET", "/v1/models", (("authorization", "Bearer nope"),), want=(401,)),
    Http("GET", "/v1/models", (("authorization", "Basic eDp5"),), want=(401,)),
    Http("GET", "/v1/models", (("authorization", "Bearer " + "x" * 60_000),), want=(400, 401, 431)),
    Http("POST", "/v1/chat/completions", (("authorization", ""),), b"{}", (401,), "chat no auth"),
    Http("POST", "/v1/chat/completions", JSON, b"{not json", (400,), "bad json"),
    Http("POST", "/v1/chat/completions", JSON, b"", (400,), "empty body"),
    Http("POST", "/v1/chat/completions", JSON, b"\xff\xfe\x00garbage", (400,), "not utf-8"),
    Http("POST", "/v1/chat/completions", JSON, b"[1, 2]", (400,), "json array"),
    Http("POST", "/v1/chat/completions", JSON, b'"hi"', (400,), "json string"),
    Http("POST", "/v1/chat/completions", JSON, b"{}", (400,), "no messages"),
    Http("POST", "/v1/chat/completions", JSON, b'{"messages": []}', (400,), "empty messages"),
    Http("POST", "/v1/chat/completions", JSON, b'{"messages": "hi"}', (400,), "messages str"),
    Http("POST", "/v1/chat/completions", JSON, b'{"messages": {"a": 1}}', (400,), "messages obj"),
    Http("POST", "/v1/chat/completions", JSON, DEEP, (400, 413), "deeply nested json"),
    Http("POST", "/v1/chat/completions", JSON, b" " * (MIB + 1), (413,), "body over 1 MiB"),
    Http(
        "POST",
        "/v1/chat/completions",
        (("x-hermes-session", "bad id!"),),
        b'{"messages": [{"role": "user", "content": "x"}]}',
        (400,),
        "bad session header",
    ),
    Http(
        "POST",
        "/v1/chat/completions",
        (("x-hermes-session", "a" * 200),),
        b'{"messages": [{"role": "user", "content": "x"}]}',
        (400,),
        "long session header",
    ),
    Http("GET", "/v1/chat/completions", want=(405,)),
    Http("PUT", "/v1/chat/completions", JSON, b"{}", (405,)),
    Http("POST", "/v1/models", JSON, b"{}", (405,)),
    Http("DELETE", "/v1/models", want=(405,)),
    Http("POST", "/health", JSON, b"{}", (405,)),
    Http("GET", "/nope", want=(404,)),
    Http("GET", "/v1/../../etc/passwd", want=(404,)),
    Http("GET", "/v1/%2e%2e/health", want=(404,)),
    Http("GET", "/v1/models/../../health%00", want=(404,)),
    Http("GET", "/" + "a" * 10_000, want=(404, 414)),
]


def _session_rows(db: Path) -> int:
    if not db.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return int(conn.execute("SELECT count(*) FROM exchanges").fetchone()[0])


@pytest.fixture(scope="module")
def gateway(home: Home) -> Iterator[tuple[int, str, Path]]:
    """A real `hermes -p alpha gateway run` relaying to a fake upstream."""
    profile_dir = home.root / "profiles" / "alpha"
    port = free_port()
    set_port(profile_dir, port)
    with FakeUpstream() as upstream:
        config = profile_dir / "config.yaml"
        config.write_text(
            config.read_text().replace("https://api.openai.com/v1", upstream.base_url)
        )
        key = next(
            line.split("=", 1)[1].strip().strip("'\"")
            for line in (profile_dir / ".env").read_text().splitlines()
            if line.startswith("API_SERVER_KEY=")
        )
        env = {**home.env, "HERMES_ALLOW_ROOT_GATEWAY": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "hermes_container", "-p", "alpha", "gateway", "run"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _wait_http(port, "/health", proc)
            yield port, key, profile_dir
        finally:
            err = _stop(proc)
            assert "Traceback" not in err, err


@pytest.mark.parametrize("req", GATEWAY_CASES, ids=[r.id for r in GATEWAY_CASES])
def test_gateway_bad_request(home: Home, gateway: tuple[int, str, Path], req: Http) -> None:
    port, key, profile_dir = gateway
    skip = ("sessions.db", "sessions.db-wal", "sessions.db-shm", "gateway_state.json")
    before = snapshot(*home.roots(), skip=skip)
    rows = _session_rows(profile_dir / "sessions.db")
    status, body = raw_http(port, req, {"authorization": f"Bearer {key}"})
    assert status in req.want or (status == 0 and 413 in req.want), (
        f"{req.id}: HTTP {status} {body[:300]!r}"
    )
    if status and status != 431 and status != 414:
        error = json.loads(body)["error"]
        assert isinstance(error["message"], str) and error["message"], body
    healthy, _ = raw_http(port, Http("GET", "/health"), {})
    assert healthy == 200, f"gateway unhealthy after {req.id}"
    assert _session_rows(profile_dir / "sessions.db") == rows, "a refused request was recorded"
    assert not diff(before, snapshot(*home.roots(), skip=skip))


def dashboard_cases() -> list[Http]:
    names = [
        "nosuch",
        "UPPER",
        "Default",
        quote("é"),
        "%2e%2e",
        "..%2f..%2fetc%2fpasswd",
        "..%252f..%252f",
        "a%00b",
        "default%2f..%2f..%2fetc",
        "%20default",
        "default%20",
        "default%0a",
        "-lead",
        "x" * 300,
        "link",
    ]
    cases: list[Http] = []
    for name in names:
        cases.append(Http("GET", f"/api/profiles/{name}", want=(404,)))
        cases.append(Http("GET", f"/api/profiles/{name}/logs?once=true", want=(404,)))
        cases.append(Http("GET", f"/profiles/{name}", want=(404,)))
        cases.append(Http("POST", f"/api/profiles/{name}/gateway/start", want=(404,)))
    csrf_less = (("x-csrf-token", ""),)
    cases += [
        Http("GET", "/api/profiles", (("x-hermes-session-token", ""),), want=(401,)),
        Http("GET", "/api/profiles", (("x-hermes-session-token", "wrong"),), want=(401,)),
        Http("GET", "/api/profiles/default", (("x-hermes-session-token", ""),), want=(401,)),
        Http("GET", "/api/profiles", (("host", "evil.example"),), want=(400,), label="bad host"),
        Http("GET", "/api/profiles", (("host", "127.0.0.1.evil.example"),), want=(400,)),
        Http("GET", "/api/profiles/default/logs?once=notabool", want=(400, 422)),
        Http("POST", "/api/profiles/default/gateway/explode", want=(404,)),
        Http("POST", "/api/profiles/default/gateway/start", csrf_less, want=(403,)),
        Http(
            "POST", "/api/profiles/default/gateway/start", (("origin", "http://evil"),), want=(403,)
        ),
        Http(
            "POST",
            "/api/profiles/default/gateway/start",
            (("x-csrf-token", ""), ("content-type", "application/x-www-form-urlencoded")),
            b"csrf_token=" + b"a" * (2 * MIB),
            (403, 413),
            "huge form body",
        ),
        Http("POST", "/api/profiles/nosuch/gateway/start", JSON, b"{not json" * 1000, (404,)),
        Http("POST", "/api/profiles/nosuch/gateway/start", JSON, b"x" * (2 * MIB), (404, 413)),
        Http("GET", "/api/profiles/default/gateway/start", want=(405,)),
        Http("DELETE", "/api/profiles", want=(405,)),
        Http("PUT", "/api/status", want=(405,)),
        Http("POST", "/api/status", want=(405,)),
        Http("POST", "/api/status", csrf_less, want=(403,)),
        Http("PATCH", "/api/profiles/default", want=(405,)),
        Http("GET", "/api/nope", want=(404,)),
        Http("GET", "/static/../../../etc/passwd", want=(404,)),
        Http("GET", "/static/%2e%2e/%2e%2e/etc/passwd", want=(404,)),
        Http("GET", "/static/..%2f..%2fdashboard%2fapp.py", want=(404,)),
        Http("GET", "/auth/login/nosuch", want=(404,)),
        Http("GET", "/auth/callback/github?code=x&state=y", want=(404,)),
        Http("GET", "/api/profiles", (("cookie", "hermes_session=garbage;;;=="),), want=(200,)),
        Http("GET", "/" + "a" * 10_000, want=(401, 404, 414)),
    ]
    return cases


DASHBOARD_CASES = dashboard_cases()


@pytest.fixture(scope="module")
def dashboard(home: Home) -> Iterator[tuple[int, dict[str, str]]]:
    """The real `hermes dashboard` on loopback (token mode, a known token)."""
    port = free_port()
    env = {**home.env, "HERMES_DASHBOARD_SESSION_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hermes_container", "dashboard", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_http(port, "/api/status", proc)
        # A page hands out the CSRF token (in the page and the signed session cookie).
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT_S)
        conn.request("GET", "/")
        response = conn.getresponse()
        page = response.read().decode()
        cookie = response.getheader("set-cookie", "").split(";")[0]
        csrf = page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
        conn.close()
        auth = {"x-hermes-session-token": TOKEN, "cookie": cookie, "x-csrf-token": csrf}
        yield port, auth
    finally:
        err = _stop(proc)
        assert "Traceback" not in err, err


@pytest.mark.parametrize("req", DASHBOARD_CASES, ids=[r.id for r in DASHBOARD_CASES])
def test_dashboard_bad_request(
    home: Home, dashboard: tuple[int, dict[str, str]], req: Http
) -> None:
    port, auth = dashboard
    before = snapshot(*home.roots(), skip=("sessions.db", "sessions.db-wal", "sessions.db-shm"))
    status, body = raw_http(port, req, auth)
    assert status in req.want, f"{req.id}: HTTP {status} {body[:300]!r}"
    if req.target.startswith("/api/") and status in (400, 401, 403, 404):
        payload = json.loads(body)
        assert payload.get("error") or payload.get("detail"), body
    assert b"Traceback" not in body
    healthy, _ = raw_http(port, Http("GET", "/api/status"), {})
    assert healthy == 200, f"dashboard unhealthy after {req.id}"
    after = snapshot(*home.roots(), skip=("sessions.db", "sessions.db-wal", "sessions.db-shm"))
    assert not diff(before, after)


def test_login_next_never_leaves_the_site(dashboard: tuple[int, dict[str, str]]) -> None:
    port, auth = dashboard
    for target in ("//evil.example/x", "https://evil.example", "/\\evil.example", "javascript:x"):
        status, _ = raw_http(port, Http("GET", f"/login?next={quote(target, safe='')}"), auth)
        assert status in (303, 307), target
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT_S)
        conn.request("GET", f"/login?next={quote(target, safe='')}", headers=auth)
        location = conn.getresponse().getheader("location", "")
        conn.close()
        assert location.startswith("/") and not location.startswith(("//", "/\\")), location
