"""`hermes profile create NAME --base-url --model --api-key-stdin --persona-file --clone`:
values checked before anything exists, written with the template's comments."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml

from hermes_container.envfile import read_env
from hermes_container.gateway.profile_settings import load_settings
from hermes_container.home import HermesHome
from tests.conftest import run_hermes


def _config(directory: Path) -> dict[str, object]:
    data = yaml.safe_load((directory / "config.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_flags_fill_config_env_and_persona(hermes_home: HermesHome, tmp_path: Path) -> None:
    persona = tmp_path / "persona.md"
    persona.write_text("You review pull requests, tersely.")
    proc = run_hermes(
        "profile",
        "create",
        "reviewer",
        "--base-url",
        "http://127.0.0.1:11434/v1",
        "--model",
        "qwen2.5-coder:7b",
        "--api-key-stdin",
        "--persona-file",
        str(persona),
        input="sk-reviewer-1\n",
    )
    assert proc.returncode == 0, proc.stderr
    assert "sk-reviewer-1" not in proc.stdout + proc.stderr
    directory = hermes_home.profile_dir("reviewer")
    text = (directory / "config.yaml").read_text()
    assert "# Any OpenAI-compatible endpoint." in text  # the template's comments stay
    settings = load_settings("reviewer", directory, {})
    assert settings.model_base_url == "http://127.0.0.1:11434/v1"
    assert settings.model_name == "qwen2.5-coder:7b"
    assert settings.model_api_key == "sk-reviewer-1"
    assert settings.soul == "You review pull requests, tersely."
    assert stat.S_IMODE((directory / ".env").stat().st_mode) == 0o600


def test_a_model_name_yaml_would_misread_stays_a_string(hermes_home: HermesHome) -> None:
    proc = run_hermes("profile", "create", "odd", "--model", "yes")
    assert proc.returncode == 0, proc.stderr
    assert _config(hermes_home.profile_dir("odd"))["model"] == {
        "base_url": "https://api.openai.com/v1",
        "name": "yes",
    }


def test_clone_with_overrides(hermes_home: HermesHome, tmp_path: Path) -> None:
    assert run_hermes("profile", "create", "base", "--model", "m-base").returncode == 0
    proc = run_hermes(
        "profile", "create", "copy", "--clone", "base", "--base-url", "http://127.0.0.1:9/v1"
    )
    assert proc.returncode == 0, proc.stderr
    model = _config(hermes_home.profile_dir("copy"))["model"]
    assert model == {"base_url": "http://127.0.0.1:9/v1", "name": "m-base"}
    base_env = read_env(hermes_home.profile_dir("base") / ".env")
    copy_env = read_env(hermes_home.profile_dir("copy") / ".env")
    assert copy_env["API_SERVER_KEY"] != base_env["API_SERVER_KEY"]


BAD = [
    (("--base-url", "ftp://x"), "", "model.base_url must be an http(s) URL"),
    (("--base-url", "not a url"), "", "model.base_url must be an http(s) URL"),
    (("--model", " "), "", "model.name must be a non-empty string"),
    (("--api-key-stdin",), "", "refusing an empty value"),
    (("--api-key-stdin",), "sk with space\n", "contains characters not allowed in a key"),
    (("--api-key-stdin",), "a\nb\n", "expected one line"),
    (("--persona-file", "/nonexistent/persona.md"), "", "persona.md: cannot read it"),
    (("--persona-file", "EMPTY"), "", "is empty"),
    (("--persona-file", "BINARY"), "", "not UTF-8"),
]


@pytest.mark.parametrize(("flags", "stdin", "fragment"), BAD, ids=lambda v: str(v))
def test_bad_values_create_nothing(
    hermes_home: HermesHome, tmp_path: Path, flags: tuple[str, ...], stdin: str, fragment: str
) -> None:
    assert run_hermes("profile", "create", "first").returncode == 0
    (tmp_path / "EMPTY").write_text("  \n")
    (tmp_path / "BINARY").write_bytes(b"\xff\xfe\x00bad")
    flags = tuple(str(tmp_path / f) if f in ("EMPTY", "BINARY") else f for f in flags)
    listing = sorted(os.listdir(hermes_home.profiles_dir))
    proc = run_hermes("profile", "create", "second", *flags, input=stdin)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], proc.stderr
    assert sorted(os.listdir(hermes_home.profiles_dir)) == listing  # no temp dir left either


def test_bad_values_on_a_fresh_home_create_no_home(hermes_home: HermesHome) -> None:
    proc = run_hermes("profile", "create", "first", "--base-url", "ftp://x")
    assert proc.returncode == 2
    assert not hermes_home.root.exists()
