"""Secrets from files: every secret setting NAME also reads as NAME_FILE=/path
(hermes_container/secret_env.py), through the code that really uses it: the dashboard's
OIDC and GitHub client secrets, the ingress key, the metrics token, the board's
database URL, a profile's model API key (environment and .env) and API_SERVER_KEY from
the environment. For each: the file's value is used, both forms set is one error naming
both, a missing or empty file names the variable and the path, and the value never
shows up in an error, a log or the ledger."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from hermes_container.dashboard.metrics_endpoint import metrics_token
from hermes_container.dashboard.settings import load_settings as dashboard_settings
from hermes_container.envfile import read_env, write_env
from hermes_container.errors import ConfigError
from hermes_container.gateway.profile_settings import load_settings, read_api_key
from hermes_container.home import HermesHome
from hermes_container.ingress.directory import Directory
from hermes_container.ingress.keys import KeySource
from hermes_container.kanban.store import database_url
from hermes_container.profiles import create_profile, ensure_default_profile
from hermes_container.secret_env import read_secret_file, secret_from_env
from tests.conftest import free_port, run_hermes
from tests.unit.conftest import GatewayProfile

SECRET = "s3cret-from-a-file-0123456789abcdef"
INLINE = "inline-value-0123456789abcdef"
DB_URL = "postgresql://board:pw-in-url@127.0.0.1:1/board"


def put(tmp_path: Path, content: str, name: str = "secret") -> Path:
    path = tmp_path / name
    path.write_text(content)
    return path


# -- the helper ------------------------------------------------------------------------


def test_file_content_minus_one_trailing_newline(tmp_path: Path) -> None:
    assert secret_from_env("X", {"X_FILE": str(put(tmp_path, "v\n"))}) == "v"
    assert secret_from_env("X", {"X_FILE": str(put(tmp_path, "v\r\n"))}) == "v"
    assert secret_from_env("X", {"X_FILE": str(put(tmp_path, "v\n\n"))}) == "v\n"
    assert secret_from_env("X", {"X_FILE": str(put(tmp_path, "v"))}) == "v"
    assert secret_from_env("X", {"X": "  inline  "}) == "inline"
    assert secret_from_env("X", {"X": "", "X_FILE": " "}) is None
    assert secret_from_env("X", {}) is None


def test_relative_file_path_is_taken_from_base(tmp_path: Path) -> None:
    put(tmp_path, SECRET + "\n", "rel.key")
    assert secret_from_env("X", {"X_FILE": "rel.key"}, base=tmp_path) == SECRET
    absolute = put(tmp_path, "abs\n", "abs.key")
    assert secret_from_env("X", {"X_FILE": str(absolute)}, base=Path("/nowhere")) == "abs"


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "cannot read it"),
        ("", "is empty"),
        ("\n", "is empty"),
        (b"\xff\xfe" + SECRET.encode(), "not UTF-8 text"),
        ("x" * (64 * 1024 + 1), "larger than 65536 bytes"),
    ],
)
def test_a_bad_file_names_variable_and_path_never_content(
    tmp_path: Path, content: str | bytes | None, fragment: str
) -> None:
    path = tmp_path / "secret"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        secret_from_env("SOME_SECRET", {"SOME_SECRET_FILE": str(path)})
    message = caught.value.message
    assert caught.value.exit_code == 78
    assert message.startswith(f"SOME_SECRET_FILE: '{path}'")
    assert fragment in message and "\n" not in message
    assert SECRET not in message and "xxxx" not in message


def test_a_directory_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"X_FILE: '{tmp_path}': cannot read it"):
        read_secret_file("X_FILE", tmp_path)


# -- every *_FILE variable, through its reader -------------------------------------------


def _dashboard_secret(kind: str) -> Callable[[HermesHome, dict[str, str]], str]:
    def read(home: HermesHome, env: dict[str, str]) -> str:
        base = {
            "HERMES_DASHBOARD_ALLOW_ANY_USER": "1",
            "HERMES_DASHBOARD_PUBLIC_URL": "https://h.example",
        }
        if kind == "OIDC":
            base["HERMES_DASHBOARD_OIDC_ISSUER"] = "https://id.example"
        base[f"HERMES_DASHBOARD_{kind}_CLIENT_ID"] = "client"
        settings = dashboard_settings(home, host="0.0.0.0", env={**base, **env})
        config = settings.oidc if kind == "OIDC" else settings.github
        assert config is not None
        return config.client_secret

    return read


def _ingress_key(home: HermesHome, env: dict[str, str]) -> str:
    return KeySource(home, env).current().decode()


def _metrics_token(home: HermesHome, env: dict[str, str]) -> str:
    token = metrics_token(env)
    assert token is not None
    return token.decode()


def _database_url(home: HermesHome, env: dict[str, str]) -> str:
    url = database_url(env)
    assert url is not None
    return url


def _profile_dir(home: HermesHome, *, keep_api_key: bool = True) -> Path:
    ensure_default_profile(home)
    directory = home.profile_dir("keyed")
    if not directory.exists():
        create_profile(home, "keyed")
    if not keep_api_key:
        env = read_env(directory / ".env")
        env.pop("API_SERVER_KEY", None)
        write_env(directory / ".env", env)
    return directory


def _model_key(home: HermesHome, env: dict[str, str]) -> str:
    return load_settings("keyed", _profile_dir(home), env).model_api_key


def _gateway_key(home: HermesHome, env: dict[str, str]) -> str:
    return read_api_key(_profile_dir(home, keep_api_key=False), env)


def _ingress_profile_key(home: HermesHome, env: dict[str, str]) -> str:
    _profile_dir(home, keep_api_key=False)
    profile = Directory(home, env).get("keyed")
    assert profile is not None
    return profile.api_key.decode()


READERS: dict[str, tuple[str, Callable[[HermesHome, dict[str, str]], str]]] = {
    "oidc-client-secret": ("HERMES_DASHBOARD_OIDC_CLIENT_SECRET", _dashboard_secret("OIDC")),
    "github-client-secret": ("HERMES_DASHBOARD_GITHUB_CLIENT_SECRET", _dashboard_secret("GITHUB")),
    "ingress-key": ("HERMES_INGRESS_KEY", _ingress_key),
    "metrics-token": ("HERMES_METRICS_TOKEN", _metrics_token),
    "board-database-url": ("HERMES_KANBAN_DATABASE_URL", _database_url),
    "model-api-key": ("HERMES_MODEL_API_KEY", _model_key),
    "api-server-key": ("API_SERVER_KEY", _gateway_key),
    "api-server-key-at-ingress": ("API_SERVER_KEY", _ingress_profile_key),
}


@pytest.mark.parametrize("reader", READERS)
def test_the_file_form_is_read(tmp_path: Path, reader: str) -> None:
    name, read = READERS[reader]
    value = DB_URL if name.endswith("DATABASE_URL") else SECRET
    path = put(tmp_path, value + "\n")
    assert read(HermesHome(tmp_path / "home"), {f"{name}_FILE": str(path)}) == value


@pytest.mark.parametrize("reader", READERS)
def test_both_forms_set_is_an_error_naming_both(tmp_path: Path, reader: str) -> None:
    name, read = READERS[reader]
    path = put(tmp_path, SECRET + "\n")
    with pytest.raises(ConfigError) as caught:
        read(HermesHome(tmp_path / "home"), {name: INLINE, f"{name}_FILE": str(path)})
    message = caught.value.message
    assert f"set {name} or {name}_FILE, not both" in message and "\n" not in message
    assert SECRET not in message and INLINE not in message


@pytest.mark.parametrize("reader", READERS)
def test_a_missing_file_is_an_error_naming_variable_and_path(tmp_path: Path, reader: str) -> None:
    name, read = READERS[reader]
    missing = tmp_path / "no-such-secret"
    with pytest.raises(ConfigError) as caught:
        read(HermesHome(tmp_path / "home"), {f"{name}_FILE": str(missing)})
    message = caught.value.message
    assert f"{name}_FILE" in message and str(missing) in message and "\n" not in message


@pytest.mark.parametrize("reader", READERS)
def test_an_empty_file_is_an_error(tmp_path: Path, reader: str) -> None:
    name, read = READERS[reader]
    empty = put(tmp_path, "\n")
    with pytest.raises(ConfigError, match=f"{name}_FILE: '{empty}' is empty"):
        read(HermesHome(tmp_path / "home"), {f"{name}_FILE": str(empty)})


def test_model_key_file_in_dotenv_relative_to_the_profile(tmp_path: Path) -> None:
    home = HermesHome(tmp_path / "home")
    directory = _profile_dir(home)
    put(directory, SECRET + "\n", "model.key")
    env = read_env(directory / ".env")
    env["HERMES_MODEL_API_KEY"] = ""
    env["HERMES_MODEL_API_KEY_FILE"] = "model.key"
    write_env(directory / ".env", env)
    # .env wins over the environment, as the inline value does
    assert load_settings("keyed", directory, {"HERMES_MODEL_API_KEY": INLINE}).model_api_key == (
        SECRET
    )
    env["HERMES_MODEL_API_KEY"] = INLINE
    write_env(directory / ".env", env)
    with pytest.raises(ConfigError) as caught:
        load_settings("keyed", directory, {})
    assert caught.value.message == (
        f"{directory / '.env'}: set HERMES_MODEL_API_KEY or HERMES_MODEL_API_KEY_FILE, not both"
    )


# -- real processes: services exit 78 with one line; the secret reaches only its use -----


def _one_line(proc: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == code, proc.stderr
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert SECRET not in proc.stdout + proc.stderr and INLINE not in proc.stderr
    return lines[0]


def test_gateway_uses_the_model_key_file_and_never_logs_it(
    make_profile: Callable[[str], GatewayProfile], tmp_path: Path
) -> None:
    profile = make_profile("default")
    path = put(tmp_path, SECRET + "\n")
    gateway = profile.start(env={"HERMES_MODEL_API_KEY_FILE": str(path)})
    with profile.client() as client:
        answer = client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}]},
            headers=profile.auth,
        )
    assert answer.status_code == 200, answer.text
    assert profile.upstream.requests[-1].headers["authorization"] == f"Bearer {SECRET}"
    assert gateway.terminate() == 0
    assert SECRET not in gateway.stderr()
    for dirpath, _dirs, names in os.walk(profile.home.root):
        for name in names:
            data = Path(dirpath, name).read_bytes()
            assert SECRET.encode() not in data, os.path.join(dirpath, name)


def test_gateway_reads_api_server_key_file_from_the_environment(
    make_profile: Callable[[str], GatewayProfile], tmp_path: Path
) -> None:
    profile = make_profile("default")
    env = read_env(profile.dir / ".env")
    del env["API_SERVER_KEY"]
    write_env(profile.dir / ".env", env)
    path = put(tmp_path, SECRET + "\n")
    gateway = profile.start(env={"API_SERVER_KEY_FILE": str(path)})
    with profile.client() as client:
        ok = client.get("/v1/models", headers={"authorization": f"Bearer {SECRET}"})
        refused = client.get("/v1/models", headers={"authorization": f"Bearer {INLINE}"})
    assert ok.status_code == 200 and refused.status_code == 401
    assert gateway.terminate() == 0
    assert SECRET not in gateway.stderr()


def test_gateway_with_both_forms_is_parked_with_one_line(
    make_profile: Callable[[str], GatewayProfile], tmp_path: Path
) -> None:
    profile = make_profile("default")
    path = put(tmp_path, SECRET + "\n")
    proc = profile.spawn(
        env={"HERMES_MODEL_API_KEY": INLINE, "HERMES_MODEL_API_KEY_FILE": str(path)}
    )
    assert proc.popen.wait(30) == 78
    lines = [line for line in proc.stderr().splitlines() if line.strip()]
    assert lines == [
        "hermes: error: the environment: set HERMES_MODEL_API_KEY or "
        "HERMES_MODEL_API_KEY_FILE, not both"
    ]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HERMES_", "API_SERVER"))}
    return {**env, **extra}


def test_services_refuse_both_forms_with_exit_78(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    path = str(put(tmp_path, SECRET + "\n"))

    def hermes(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hermes_container", *args],
            # Never the fixed ports: a service that did not refuse would bind them.
            env=_clean_env(
                HERMES_HOME=home,
                HERMES_INGRESS_PORT=str(free_port()),
                HERMES_DASHBOARD_PORT=str(free_port()),
                **env,
            ),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    both = "not both"
    _one_line(
        hermes("ingress", "run", HERMES_INGRESS_KEY=INLINE, HERMES_INGRESS_KEY_FILE=path),
        78,
        "HERMES_INGRESS_KEY_FILE",
        both,
    )
    _one_line(
        hermes("ingress", "run", API_SERVER_KEY=INLINE, API_SERVER_KEY_FILE=path),
        78,
        "API_SERVER_KEY_FILE",
        both,
    )
    _one_line(
        hermes(
            "kanban",
            "daemon",
            HERMES_KANBAN_DATABASE_URL=DB_URL,
            HERMES_KANBAN_DATABASE_URL_FILE=path,
        ),
        78,
        "HERMES_KANBAN_DATABASE_URL_FILE",
        both,
    )
    _one_line(
        hermes(
            "dashboard",
            "--host",
            "0.0.0.0",
            HERMES_DASHBOARD_GITHUB_CLIENT_ID="id",
            HERMES_DASHBOARD_GITHUB_CLIENT_SECRET=INLINE,
            HERMES_DASHBOARD_GITHUB_CLIENT_SECRET_FILE=path,
            HERMES_DASHBOARD_ALLOW_ANY_USER="1",
            HERMES_DASHBOARD_PUBLIC_URL="https://h.example",
        ),
        78,
        "HERMES_DASHBOARD_GITHUB_CLIENT_SECRET_FILE",
        both,
    )
    _one_line(
        hermes("dashboard", HERMES_METRICS_TOKEN=INLINE, HERMES_METRICS_TOKEN_FILE=path),
        78,
        "HERMES_METRICS_TOKEN_FILE",
        both,
    )
    # A fresh home: the refusal comes before a key is generated there.
    home = str(tmp_path / "fresh")
    missing = str(tmp_path / "missing")
    _one_line(
        hermes("ingress", "key", HERMES_INGRESS_KEY_FILE=missing),
        78,
        "HERMES_INGRESS_KEY_FILE",
        missing,
    )
    assert not (tmp_path / "fresh").exists()


def test_board_url_from_a_file_reaches_postgresql(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    server = request.getfixturevalue("postgres_server")
    import psycopg

    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS secret_file_board")
        conn.execute("CREATE DATABASE secret_file_board")
    url_file = put(tmp_path, server.url("secret_file_board") + "\n")
    env = _clean_env(
        HERMES_HOME=str(tmp_path / "home"), HERMES_KANBAN_DATABASE_URL_FILE=str(url_file)
    )
    made = subprocess.run(
        [sys.executable, "-m", "hermes_container", "kanban", "create", "from a file"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    with psycopg.connect(server.url("secret_file_board")) as conn:
        titles = [row[0] for row in conn.execute("SELECT title FROM kanban_tasks")]
    assert titles == ["from a file"]
    assert not (tmp_path / "home" / "kanban" / "kanban.db").exists()  # not the SQLite board


def test_ingress_key_cli_reads_the_file_each_time(tmp_path: Path) -> None:
    path = put(tmp_path, SECRET + "\n")
    shown = run_hermes(
        "ingress",
        "key",
        env={"HERMES_HOME": str(tmp_path / "h"), "HERMES_INGRESS_KEY_FILE": str(path)},
    )
    assert shown.returncode == 0 and shown.stdout == SECRET + "\n"
