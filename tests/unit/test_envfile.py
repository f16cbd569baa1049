"""A profile's .env: read as the gateway reads it; updated without losing what the
operator wrote in it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hermes_container.envfile import parse_env, read_env, update_env
from hermes_container.home import HermesHome
from hermes_container.profiles import ensure_default_profile
from tests.conftest import run_hermes

HAND_WRITTEN = """# my provider, rotated monthly
HERMES_MODEL_API_KEY=sk-old

# the gateway's key
export API_SERVER_KEY="abc"
OTHER=kept  # not a comment: part of the value
API_SERVER_KEY=later-wins
"""


def test_parse_env_rules() -> None:
    values = parse_env(HAND_WRITTEN + "bad line\n1X=no\n")
    assert values == {
        "HERMES_MODEL_API_KEY": "sk-old",
        "API_SERVER_KEY": "later-wins",
        "OTHER": "kept  # not a comment: part of the value",
    }


def test_update_keeps_comments_order_and_other_entries(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text(HAND_WRITTEN)
    update_env(path, {"API_SERVER_KEY": "new-key", "ADDED": "1"})
    assert path.read_text() == (
        "# my provider, rotated monthly\n"
        "HERMES_MODEL_API_KEY=sk-old\n"
        "\n"
        "# the gateway's key\n"
        "API_SERVER_KEY=new-key\n"
        "OTHER=kept  # not a comment: part of the value\n"
        "ADDED=1\n"
    )
    assert read_env(path)["API_SERVER_KEY"] == "new-key"  # the later duplicate is gone
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_update_of_a_missing_file_writes_the_header_and_values(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    update_env(path, {"A": "1"}, header="header line")
    assert path.read_text() == "# header line\nA=1\n"


@pytest.mark.parametrize("value", ["a\nB=evil", "a\rb"])
def test_update_refuses_a_line_break_and_changes_nothing(tmp_path: Path, value: str) -> None:
    path = tmp_path / ".env"
    path.write_text(HAND_WRITTEN)
    with pytest.raises(ValueError, match="line break"):
        update_env(path, {"X": value})
    assert path.read_text() == HAND_WRITTEN


def test_an_empty_default_key_is_replaced_and_the_rest_kept(hermes_home: HermesHome) -> None:
    env = hermes_home.root / ".env"
    hermes_home.root.mkdir(parents=True, exist_ok=True)
    env.write_text("# mine\nAPI_SERVER_KEY=\nHERMES_MODEL_API_KEY=sk-1\n")
    ensure_default_profile(hermes_home)
    values = read_env(env)
    assert len(values["API_SERVER_KEY"]) >= 32
    assert values["HERMES_MODEL_API_KEY"] == "sk-1"
    assert env.read_text().startswith("# mine\nAPI_SERVER_KEY=")


def test_set_secret_keeps_what_the_operator_wrote(hermes_home: HermesHome) -> None:
    assert run_hermes("profile", "create", "coder").returncode == 0
    env = hermes_home.profile_dir("coder") / ".env"
    env.write_text(env.read_text() + "# a note of mine\nMY_SETTING=1\n")
    before = env.read_text()
    proc = run_hermes(
        "-p", "coder", "config", "set-secret", "HERMES_MODEL_API_KEY", input="sk-new\n"
    )
    assert proc.returncode == 0, proc.stderr
    after = env.read_text()
    assert "# a note of mine\nMY_SETTING=1\n" in after
    assert read_env(env)["HERMES_MODEL_API_KEY"] == "sk-new"
    # only the one line changed
    changed = [b for b, a in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]
    assert len(changed) == 1 and changed[0].startswith("HERMES_MODEL_API_KEY=")
