"""`hermes setup` against the fake provider (tests/fake_upstream.py): the questions on
stdin or a terminal, the model list, the one-token check, and nothing written when the
check fails."""

from __future__ import annotations

import difflib
import os
import pty
import sys
from pathlib import Path

import pytest

from hermes_container.envfile import read_env
from hermes_container.gateway.profile_settings import load_settings
from hermes_container.home import HermesHome
from hermes_container.state import read_state
from tests.conftest import run_hermes
from tests.fake_upstream import FakeUpstream

NO_TREE = {"NO_PROXY": "127.0.0.1", "HERMES_S6_SCANDIR": "/nonexistent/service"}


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under `root`: mode and bytes."""
    return {
        str(p): (p.stat().st_mode, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def _setup(*args: str, input: str = "") -> tuple[int, str, str]:
    proc = run_hermes(*args, env=NO_TREE, input=input)
    return proc.returncode, proc.stdout, proc.stderr


def _chats(upstream: FakeUpstream) -> list[dict[str, object]]:
    return [r.body for r in upstream.requests if r.path.endswith("/chat/completions")]


def test_interactive_setup_creates_the_profile(
    hermes_home: HermesHome, fake_upstream: FakeUpstream
) -> None:
    answers = f"{fake_upstream.base_url}\n1\nsk-setup-1\n"
    code, out, err = _setup("-p", "helper", "setup", input=answers)
    assert code == 0, out + err
    assert "Profile 'helper' does not exist yet: setup creates it" in out
    assert "  1  fake-model" in out  # the provider's list, numbered
    assert "sk-setup-1" not in out + err
    directory = hermes_home.profile_dir("helper")
    settings = load_settings("helper", directory, {})
    assert settings.model_base_url == fake_upstream.base_url
    assert settings.model_name == "fake-model"
    assert settings.model_api_key == "sk-setup-1"
    # /models once, then exactly one chat completion of one token, with the key.
    paths = [(r.method, r.path) for r in fake_upstream.requests]
    assert paths == [("GET", "/v1/models"), ("POST", "/v1/chat/completions")]
    assert _chats(fake_upstream)[0]["max_tokens"] == 1
    assert fake_upstream.requests[-1].headers["authorization"] == "Bearer sk-setup-1"
    # No supervised tree: the start is recorded for the next one.
    assert read_state(directory, warn=False).desired_state == "running"
    assert "No supervised tree is running" in out


def test_setup_on_a_terminal_hides_the_key(
    hermes_home: HermesHome, fake_upstream: FakeUpstream
) -> None:
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update(NO_TREE)
        os.execv(sys.executable, [sys.executable, "-m", "hermes_container", "setup"])
    output = b""

    def until(marker: bytes) -> None:
        nonlocal output
        while marker not in output:
            output += os.read(fd, 4096)

    until(b"Provider URL")
    os.write(fd, fake_upstream.base_url.encode() + b"\n")
    until(b"Model (number or name)")
    os.write(fd, b"fake-model\n")  # by name
    until(b"input hidden")
    os.write(fd, b"sk-typed-on-a-tty\n")
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, output.decode(errors="replace")
    assert b"sk-typed-on-a-tty" not in output  # getpass: never echoed
    assert read_env(hermes_home.root / ".env")["HERMES_MODEL_API_KEY"] == "sk-typed-on-a-tty"
    assert fake_upstream.requests[-1].headers["authorization"] == "Bearer sk-typed-on-a-tty"


def test_a_refused_key_writes_nothing(hermes_home: HermesHome, fake_upstream: FakeUpstream) -> None:
    assert run_hermes("profile", "create", "existing").returncode == 0
    fake_upstream.set(status=401, error="Incorrect API key provided: sk-wrong-key")
    before = snapshot(hermes_home.root)
    for profile in ("existing", "brand-new"):
        code, out, err = _setup(
            "-p",
            profile,
            "setup",
            "--non-interactive",
            "--base-url",
            fake_upstream.base_url,
            "--model",
            "fake-model",
            "--api-key-stdin",
            input="sk-wrong-key\n",
        )
        assert code == 2, out + err
        assert err.count("\n") == 1 and "the provider refused the key (HTTP 401" in err
        assert "sk-wrong-key" not in out + err  # the provider's echo of it is masked
        assert fake_upstream.requests[-1].headers["authorization"] == "Bearer sk-wrong-key"
    assert snapshot(hermes_home.root) == before
    assert not hermes_home.profile_dir("brand-new").exists()


def test_interactive_refusal_writes_nothing(
    hermes_home: HermesHome, fake_upstream: FakeUpstream
) -> None:
    assert run_hermes("profile", "create", "existing").returncode == 0
    fake_upstream.set(status=403, error="not allowed")
    before = snapshot(hermes_home.root)
    code, _, err = _setup(
        "-p", "existing", "setup", input=f"{fake_upstream.base_url}\n1\nsk-nope\n"
    )
    assert code == 2 and "refused the key (HTTP 403" in err
    assert snapshot(hermes_home.root) == before


def test_setup_of_an_existing_profile_keeps_its_file(
    hermes_home: HermesHome, fake_upstream: FakeUpstream
) -> None:
    assert run_hermes("profile", "create", "coder").returncode == 0
    config = hermes_home.profile_dir("coder") / "config.yaml"
    before = config.read_text()
    code, out, err = _setup(
        "-p",
        "coder",
        "setup",
        "--non-interactive",
        "--base-url",
        fake_upstream.base_url,
        "--model",
        "fake-model",
    )
    assert code == 0, out + err
    assert "changed model.base_url, model.name" in out
    changed = difflib.ndiff(before.splitlines(), config.read_text().splitlines())
    assert [ln for ln in changed if ln.startswith(("- ", "+ "))] == [
        "-   base_url: https://api.openai.com/v1",
        "-   name: gpt-4o-mini",
        f"+   base_url: {fake_upstream.base_url}",
        "+   name: fake-model",
    ]
    # No key typed, none stored: the check went without one.
    assert "authorization" not in fake_upstream.requests[-1].headers
    assert read_env(config.parent / ".env")["HERMES_MODEL_API_KEY"] == ""


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--non-interactive",), "--non-interactive needs --base-url and --model"),
        (("--api-key-stdin",), "--api-key-stdin needs --non-interactive"),
        (
            ("--non-interactive", "--base-url", "ftp://x", "--model", "m"),
            "model.base_url must be an http(s) URL",
        ),
        (("--non-interactive", "--base-url", "http://h/v1", "--model", " "), "non-empty string"),
        ((), "no answer for: Provider URL"),
    ],
)
def test_bad_input_asks_nothing_of_the_provider(
    hermes_home: HermesHome, fake_upstream: FakeUpstream, args: tuple[str, ...], fragment: str
) -> None:
    code, out, err = _setup("setup", *args)
    assert code == 2 and err.count("\n") == 1 and fragment in err, out + err
    assert fake_upstream.requests == []
    assert not hermes_home.root.exists()


def test_an_unreachable_provider_writes_nothing(hermes_home: HermesHome) -> None:
    from tests.conftest import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    code, _, err = _setup(
        "-p", "x", "setup", "--non-interactive", "--base-url", url, "--model", "m"
    )
    assert code == 1 and "cannot reach the provider at http://127.0.0.1:" in err
    assert not hermes_home.root.exists()


def test_a_wrong_model_number_is_refused(
    hermes_home: HermesHome, fake_upstream: FakeUpstream
) -> None:
    code, _, err = _setup("setup", input=f"{fake_upstream.base_url}\n7\n")
    assert code == 2 and "no model number 7 (1-1)" in err
    assert _chats(fake_upstream) == []
