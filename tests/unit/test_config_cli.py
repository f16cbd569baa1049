"""`hermes config get|set|unset|list|edit|set-secret` through the real CLI."""

from __future__ import annotations

import json
import os
import pty
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml

from hermes_container.envfile import read_env
from hermes_container.home import HermesHome
from tests.conftest import run_hermes, wait_for
from tests.fake_upstream import FakeUpstream
from tests.unit.conftest import GatewayProfile, line_diff

HAND_WRITTEN = """\
# coder: the profile that writes code.
model:
  # a local provider
  base_url: http://127.0.0.1:9/v1   # llama.cpp
  name: qwen-coder  # the model
  # seconds
  read_timeout_s: 30

# the listener
gateway:
  port: {port}
  persona: always
# the end
"""


def _profile(hermes_home: HermesHome, name: str = "coder", text: str | None = None) -> Path:
    proc = run_hermes("profile", "create", name)
    assert proc.returncode == 0, proc.stderr
    directory = hermes_home.profile_dir(name)
    if text is not None:
        port = yaml.safe_load((directory / "config.yaml").read_text())["gateway"]["port"]
        (directory / "config.yaml").write_text(text.format(port=port))
    return directory


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hermes: error: "), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    return lines[0]


def _state(directory: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file of the profile: mode, mtime and bytes."""
    found = {}
    for path in sorted(directory.iterdir()):
        st = path.lstat()
        data = path.read_bytes() if path.is_file() else b""
        found[path.name] = (st.st_mode, st.st_mtime_ns, data)
    return found


# -- set / unset keep the file -----------------------------------------------------------


def test_set_changes_only_the_line_of_the_key(hermes_home: HermesHome) -> None:
    directory = _profile(hermes_home, text=HAND_WRITTEN)
    before = (directory / "config.yaml").read_text()
    proc = run_hermes("-p", "coder", "config", "set", "model.name", "qwen-2")
    assert proc.returncode == 0, proc.stderr
    after = (directory / "config.yaml").read_text()
    assert line_diff(before, after) == (
        ["  name: qwen-coder  # the model"],
        ["  name: qwen-2      # the model"],
    )
    assert "Set model.name" in proc.stdout


def test_set_of_a_new_key_adds_one_line_and_unset_takes_it_back(hermes_home: HermesHome) -> None:
    directory = _profile(hermes_home, text=HAND_WRITTEN)
    config = directory / "config.yaml"
    original = config.read_bytes()
    assert (
        run_hermes("-p", "coder", "config", "set", "gateway.shutdown_grace_s", "4").returncode == 0
    )
    assert line_diff(original.decode(), config.read_text()) == ([], ["  shutdown_grace_s: 4"])
    assert run_hermes("-p", "coder", "config", "unset", "gateway.shutdown_grace_s").returncode == 0
    assert config.read_bytes() == original  # byte for byte


def test_unset_removes_the_line_and_keeps_the_comments_around_it(hermes_home: HermesHome) -> None:
    directory = _profile(hermes_home, text=HAND_WRITTEN)
    before = (directory / "config.yaml").read_text()
    proc = run_hermes("-p", "coder", "config", "unset", "model.read_timeout_s")
    assert proc.returncode == 0, proc.stderr
    assert line_diff(before, (directory / "config.yaml").read_text()) == (
        ["  read_timeout_s: 30"],
        [],
    )
    proc = run_hermes("-p", "coder", "config", "unset", "model.read_timeout_s")
    assert proc.returncode == 0 and "nothing changed" in proc.stdout


def test_the_file_keeps_its_mode(hermes_home: HermesHome) -> None:
    config = _profile(hermes_home) / "config.yaml"
    config.chmod(0o640)
    assert run_hermes("-p", "coder", "config", "set", "model.name", "m2").returncode == 0
    assert stat.S_IMODE(config.stat().st_mode) == 0o640


def test_values_are_typed_by_the_key_not_by_yaml(hermes_home: HermesHome) -> None:
    directory = _profile(hermes_home)
    for key, text in (("model.name", "yes"), ("model.read_timeout_s", "2.5")):
        assert run_hermes("-p", "coder", "config", "set", key, text).returncode == 0
    model = yaml.safe_load((directory / "config.yaml").read_text())["model"]
    assert model["name"] == "yes" and model["read_timeout_s"] == 2.5
    proc = run_hermes("-p", "coder", "config", "get", "model.name")
    assert proc.stdout == "yes\n"


# -- refusals: one line, exit 2, the file untouched ------------------------------------

BAD_SETS = [
    (("set", "model.nmae", "x"), "unknown key 'model.nmae' (did you mean 'model.name'?)"),
    (("get", "gateway.prot"), "did you mean 'gateway.port'?"),
    (("unset", "model.bogus"), "unknown key 'model.bogus'"),
    (("set", "model.read_timeout_s", "abc"), "must be a positive number, not 'abc'"),
    (("set", "model.read_timeout_s", "0"), "must be a positive number, not 0"),
    (("set", "model.read_timeout_s", "nan"), "must be a positive number"),
    (("set", "gateway.max_body_bytes", "1.5"), "must be a positive integer"),
    (("set", "gateway.port", "70000"), "gateway.port 70000 is not a port number"),
    (("set", "gateway.port", "http"), "is not a port number"),
    (("set", "model.base_url", "ftp://x"), "must be an http(s) URL, not 'ftp://x'"),
    (("set", "model.base_url", "http://"), "must be an http(s) URL"),
    (("set", "model.base_url", "http://h:99999/v1"), "must be an http(s) URL"),
    (("set", "model.proxy", "socks5://p:1"), "must be an http(s) proxy URL"),
    (("set", "model.client", "turbo"), "must be auto, fast or httpx, not 'turbo'"),
    (("set", "gateway.persona", "sometimes"), "must be always or unless-client-system"),
    (("set", "model.name", " "), "must be a non-empty string"),
    (("set", "model.api_key", "sk-x"), "config set-secret HERMES_MODEL_API_KEY"),
    (("set", "kanban.max_in_progress", "3"), "default profile's config.yaml only"),
    (("unset", "model.name"), "model.name is missing"),
    (("unset", "gateway.port"), "gateway.port is missing"),
    (("set", "model.proxy", "http://p:3128"), None),  # valid alone: fast client below
]


@pytest.mark.parametrize(("args", "fragment"), BAD_SETS, ids=lambda v: str(v))
def test_bad_input_exits_2_with_one_line_and_changes_nothing(
    hermes_home: HermesHome, args: tuple[str, ...], fragment: str | None
) -> None:
    directory = _profile(hermes_home, text=HAND_WRITTEN)
    if fragment is None:  # model.proxy with model.client fast: the gateway refuses it
        assert run_hermes("-p", "coder", "config", "set", "model.client", "fast").returncode == 0
        fragment = "model.proxy needs model.client auto or httpx"
    before = _state(directory)
    proc = run_hermes("-p", "coder", "config", *args)
    assert proc.returncode == 2, proc.stderr
    assert fragment in _one_error_line(proc)
    assert _state(directory) == before


def test_a_broken_file_is_refused_until_the_change_fixes_it(hermes_home: HermesHome) -> None:
    directory = _profile(hermes_home)
    config = directory / "config.yaml"
    config.write_text(config.read_text().replace("  port:", "  port: oops\n  old_port:"))
    before = _state(directory)
    proc = run_hermes("-p", "coder", "config", "set", "model.name", "m2")
    assert proc.returncode == 2 and "gateway.port 'oops'" in _one_error_line(proc)
    assert _state(directory) == before
    assert run_hermes("-p", "coder", "config", "set", "gateway.port", "8799").returncode == 0
    assert yaml.safe_load(config.read_text())["gateway"]["port"] == 8799


def test_another_profiles_port_is_refused(hermes_home: HermesHome) -> None:
    directory = _profile(hermes_home)
    before = _state(directory)
    proc = run_hermes("-p", "coder", "config", "set", "gateway.port", "8642")
    assert proc.returncode == 2
    assert "already the port of profile 'default'" in _one_error_line(proc)
    assert _state(directory) == before


def test_a_port_change_says_it_needs_a_restart(hermes_home: HermesHome) -> None:
    _profile(hermes_home)
    proc = run_hermes("-p", "coder", "config", "set", "gateway.port", "8799")
    assert proc.returncode == 0, proc.stderr
    assert "gateway.port takes effect after `hermes -p coder gateway restart`" in proc.stdout
    assert "reload" not in proc.stdout  # nothing else changed: no reload asked


def test_a_config_symlink_is_not_written_through(hermes_home: HermesHome, tmp_path: Path) -> None:
    directory = _profile(hermes_home)
    elsewhere = tmp_path / "elsewhere.yaml"
    elsewhere.write_bytes((directory / "config.yaml").read_bytes())
    (directory / "config.yaml").unlink()
    (directory / "config.yaml").symlink_to(elsewhere)
    proc = run_hermes("-p", "coder", "config", "set", "model.name", "m2")
    assert proc.returncode == 2 and "symlink" in _one_error_line(proc)
    assert "m2" not in elsewhere.read_text()


def test_dispatcher_settings_on_the_default_profile(hermes_home: HermesHome) -> None:
    _profile(hermes_home)
    proc = run_hermes("config", "set", "kanban.max_in_progress", "3")
    assert proc.returncode == 0, proc.stderr
    assert "dispatcher reads" in proc.stdout
    assert yaml.safe_load((hermes_home.root / "config.yaml").read_text())["kanban"] == {
        "max_in_progress": 3
    }
    before = (hermes_home.root / "config.yaml").read_bytes()
    # Its own parser's cross-key rule: the longest backoff below the first one.
    proc = run_hermes("config", "set", "kanban.retry_backoff_max_seconds", "5")
    assert proc.returncode == 2 and "below retry_backoff_seconds" in _one_error_line(proc)
    assert (hermes_home.root / "config.yaml").read_bytes() == before


def test_concurrent_sets_all_land(hermes_home: HermesHome) -> None:
    directory = _profile(hermes_home)
    values = {
        "model.connect_timeout_s": "3",
        "model.read_timeout_s": "40",
        "gateway.shutdown_grace_s": "6",
        "gateway.max_body_bytes": "2048",
        "gateway.persona": "unless-client-system",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "hermes_container", "-p", "coder", "config", "set", k, v],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for k, v in values.items()
    ]
    for proc in procs:
        assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
    data = yaml.safe_load((directory / "config.yaml").read_text())
    for key, text in values.items():
        section, _, leaf = key.partition(".")
        assert str(data[section][leaf]) == text, key


# -- get / list ----------------------------------------------------------------------------


def test_get_prints_the_value_in_force(hermes_home: HermesHome) -> None:
    _profile(hermes_home)
    assert run_hermes("-p", "coder", "config", "get", "gateway.persona").stdout == "always\n"
    proc = run_hermes("-p", "coder", "config", "get", "model.proxy")
    assert proc.returncode == 1 and proc.stdout == "" and proc.stderr == ""


def test_list_marks_defaults_and_never_shows_a_secret(hermes_home: HermesHome) -> None:
    directory = _profile(hermes_home)
    config = directory / "config.yaml"
    # A key written into config.yaml by hand (the gateway reads it), and one in .env.
    config.write_text(config.read_text().replace("  name:", "  api_key: sk-in-config-123\n  name:"))
    proc = run_hermes("-p", "coder", "config", "set", "model.proxy", "http://u:pw-456@p:3128")
    assert proc.returncode == 0, proc.stderr
    listing = run_hermes("-p", "coder", "config", "list")
    as_json = run_hermes("-p", "coder", "config", "list", "--json")
    got = run_hermes("-p", "coder", "config", "get", "model.api_key")
    proxy = run_hermes("-p", "coder", "config", "get", "model.proxy")
    for proc in (listing, as_json, got, proxy):
        assert proc.returncode == 0, proc.stderr
        assert "sk-in-config-123" not in proc.stdout and "pw-456" not in proc.stdout
    assert got.stdout == "(set)\n"
    assert proxy.stdout == "http://u:***@p:3128\n"
    lines = {line.split()[0]: line for line in listing.stdout.splitlines()}
    assert "(default)" in lines["model.read_timeout_s"]
    assert "(default)" not in lines["model.name"]
    rows = {row["key"]: row for row in json.loads(as_json.stdout)}
    assert rows["model.api_key"]["value"] is None and rows["model.api_key"]["set"] is True
    assert rows["model.connect_timeout_s"] == {
        "key": "model.connect_timeout_s",
        "value": 5.0,
        "source": "default",
        "default": True,
    }


# -- set-secret ----------------------------------------------------------------------------


def test_set_secret_from_stdin_is_stored_600_and_never_echoed(hermes_home: HermesHome) -> None:
    directory = _profile(hermes_home)
    proc = run_hermes(
        "-p", "coder", "config", "set-secret", "HERMES_MODEL_API_KEY", input="sk-secret-789\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert "sk-secret-789" not in proc.stdout + proc.stderr
    env_file = directory / ".env"
    assert read_env(env_file)["HERMES_MODEL_API_KEY"] == "sk-secret-789"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert "sk-secret-789" not in (directory / "config.yaml").read_text()


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("HERMES_MODEL_API_KEY", "", "refusing an empty value"),
        ("HERMES_MODEL_API_KEY", "\n", "refusing an empty value"),
        ("API_SERVER_KEY", "a b", "contains characters not allowed in a key"),
        ("API_SERVER_KEY", "one\ntwo\n", "expected one line"),
        ("HOME", "x", "not a secret this project reads"),
        ("hermes_model_api_key", "x", "not a secret this project reads"),
    ],
)
def test_set_secret_refusals(hermes_home: HermesHome, name: str, value: str, fragment: str) -> None:
    directory = _profile(hermes_home)
    before = _state(directory)
    proc = run_hermes("-p", "coder", "config", "set-secret", name, input=value)
    assert proc.returncode == 2
    line = _one_error_line(proc)
    assert fragment in line and (not value.strip() or value.strip() not in line)
    assert _state(directory) == before


def test_set_secret_on_a_terminal_does_not_echo(hermes_home: HermesHome) -> None:
    directory = _profile(hermes_home)
    pid, fd = pty.fork()
    if pid == 0:  # child: its terminal is the pty, as a person at a shell would have
        os.execv(
            sys.executable,
            [
                sys.executable,
                "-m",
                "hermes_container",
                "-p",
                "coder",
                "config",
                "set-secret",
                "API_SERVER_KEY",
            ],
        )
    output = b""
    while b"input hidden" not in output:
        output += os.read(fd, 1024)
    os.write(fd, b"hk-typed-secret-42\n")
    while True:
        try:
            chunk = os.read(fd, 1024)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, output
    assert b"hk-typed-secret-42" not in output
    assert read_env(directory / ".env")["API_SERVER_KEY"] == "hk-typed-secret-42"


# -- edit ----------------------------------------------------------------------------------


def _editor(tmp_path: Path, body: str) -> dict[str, str]:
    """An $EDITOR: a shell script run on the copy ($1); plus a private TMPDIR."""
    script = tmp_path / "editor.sh"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(0o755)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir(exist_ok=True)
    return {"EDITOR": str(script), "VISUAL": "", "TMPDIR": str(tmpdir)}


def test_edit_saves_a_valid_change(hermes_home: HermesHome, tmp_path: Path) -> None:
    directory = _profile(hermes_home, text=HAND_WRITTEN)
    before = (directory / "config.yaml").read_text()
    env = _editor(tmp_path, "sed -i 's/qwen-coder/qwen-edited/' \"$1\"")
    proc = run_hermes("-p", "coder", "config", "edit", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "changed model.name" in proc.stdout
    assert (directory / "config.yaml").read_text() == before.replace("qwen-coder", "qwen-edited")
    assert list((tmp_path / "tmp").iterdir()) == []  # the copy is gone


def test_edit_refuses_an_invalid_file_and_keeps_the_edit(
    hermes_home: HermesHome, tmp_path: Path
) -> None:
    directory = _profile(hermes_home, text=HAND_WRITTEN)
    before = _state(directory)
    env = _editor(tmp_path, "sed -i 's/persona: always/persona: sometimes/' \"$1\"")
    proc = run_hermes("-p", "coder", "config", "edit", env=env)
    assert proc.returncode == 2
    line = _one_error_line(proc)
    assert "gateway.persona must be always or unless-client-system" in line
    kept = line.rsplit("your edit is kept in ", 1)[1]
    assert "persona: sometimes" in Path(kept).read_text()
    assert _state(directory) == before


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("echo 'model: [unclosed' > \"$1\"", "malformed YAML"),
        ("echo 'gateway: {prot: 1}' >> \"$1\"", "did you mean 'gateway.port'?"),
        ("sed -i 's/^model:/modle:/' \"$1\"", "unknown key 'modle"),
        ("printf 'model:\\n  api_key: sk-1\\n' >> \"$1\"", "does not belong in config.yaml"),
    ],
)
def test_edit_refusals(hermes_home: HermesHome, tmp_path: Path, body: str, fragment: str) -> None:
    directory = _profile(hermes_home, text=HAND_WRITTEN)
    before = _state(directory)
    proc = run_hermes("-p", "coder", "config", "edit", env=_editor(tmp_path, body))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert fragment in _one_error_line(proc)
    assert _state(directory) == before


def test_edit_without_a_change_or_with_a_failing_editor(
    hermes_home: HermesHome, tmp_path: Path
) -> None:
    directory = _profile(hermes_home)
    before = _state(directory)
    proc = run_hermes("-p", "coder", "config", "edit", env=_editor(tmp_path, "true"))
    assert proc.returncode == 0 and "No changes" in proc.stdout
    proc = run_hermes("-p", "coder", "config", "edit", env=_editor(tmp_path, "exit 3"))
    assert proc.returncode == 1 and "exited with status 3" in _one_error_line(proc)
    proc = run_hermes("-p", "coder", "config", "edit", env={"EDITOR": "", "VISUAL": ""})
    assert proc.returncode == 2 and "$VISUAL or $EDITOR" in _one_error_line(proc)
    assert _state(directory) == before


# -- a running gateway picks the change up -------------------------------------------------


def test_set_reloads_a_running_gateway(
    make_profile: Callable[[str], GatewayProfile], fake_upstream: FakeUpstream
) -> None:
    profile = make_profile("default")
    gateway = profile.start()
    proc = run_hermes("config", "set", "model.name", "reloaded-model")
    assert proc.returncode == 0, proc.stderr
    assert "Gateway 'default' reloaded" in proc.stdout

    def model_sent() -> str | None:
        with profile.client() as client:
            response = client.post(
                "/v1/chat/completions",
                headers=profile.auth,
                json={"model": "x", "messages": [{"role": "user", "content": "hi"}]},
            )
        assert response.status_code == 200, response.text
        return str(fake_upstream.requests[-1].body["model"])

    wait_for(
        lambda: model_sent() == "reloaded-model",
        20,
        "the reloaded model",
        tolerate=(httpx.HTTPError,),
    )
    assert gateway.popen.poll() is None and profile.state().pid == gateway.pid  # no restart
