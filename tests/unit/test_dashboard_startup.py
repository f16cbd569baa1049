"""`hermes dashboard` start-up: fail closed, the insecure opt-out, settings and helpers."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hermes_container.dashboard.auth.allowlist import Allowlist, Identity
from hermes_container.dashboard.auth.providers import LoginError, github_identity
from hermes_container.dashboard.auth.redirects import safe_next
from hermes_container.dashboard.auth.session import SessionCodec
from hermes_container.dashboard.logtail import tail_lines
from hermes_container.dashboard.settings import is_loopback, load_settings
from hermes_container.errors import ConfigError
from hermes_container.home import HermesHome
from tests.conftest import free_port
from tests.unit.dashboard_support import clean_env, dashboard_process, raw_request


def run_dashboard(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hermes_container", "dashboard", *args],
        env=clean_env(HERMES_HOME=str(home), **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_non_loopback_without_provider_fails_closed(tmp_path: Path) -> None:
    proc = run_dashboard(tmp_path, "--host", "0.0.0.0", "--port", str(free_port()))
    assert proc.returncode == 78
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for name in (
        "HERMES_DASHBOARD_OIDC_ISSUER",
        "HERMES_DASHBOARD_OIDC_CLIENT_ID",
        "HERMES_DASHBOARD_GITHUB_CLIENT_ID",
        "HERMES_DASHBOARD_INSECURE",
    ):
        assert name in lines[0]


@pytest.mark.parametrize("value", ["0", "no", "false", "", "maybe"])
def test_only_truthy_insecure_opts_out(tmp_path: Path, value: str) -> None:
    proc = run_dashboard(
        tmp_path,
        "--port",
        str(free_port()),
        HERMES_DASHBOARD_HOST="0.0.0.0",
        HERMES_DASHBOARD_INSECURE=value,
    )
    assert proc.returncode == 78


def test_provider_without_allowlist_fails_closed(tmp_path: Path) -> None:
    proc = run_dashboard(
        tmp_path,
        "--host",
        "0.0.0.0",
        HERMES_DASHBOARD_GITHUB_CLIENT_ID="id",
        HERMES_DASHBOARD_GITHUB_CLIENT_SECRET="sec",
    )
    assert proc.returncode == 78
    assert "HERMES_DASHBOARD_ALLOWED_EMAILS" in proc.stderr


@pytest.mark.parametrize("value", ["1", "true", "YES"])
def test_insecure_opt_out_warns_in_log_and_on_every_page(tmp_path: Path, value: str) -> None:
    env = clean_env(HERMES_HOME=str(tmp_path), HERMES_DASHBOARD_INSECURE=value)
    with dashboard_process(env, host="0.0.0.0") as (port, proc):
        status, body = raw_request(port, b"/")
        assert status == 200 and b"banner-insecure" in body
        status, body = raw_request(port, b"/logs/audit")
        assert b"no authentication" in body
        status, body = raw_request(port, b"/api/status")
        assert b'"auth_required":false' in body
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert "NO authentication" in stderr


def test_loopback_token_subprocess(tmp_path: Path) -> None:
    env = clean_env(HERMES_HOME=str(tmp_path), HERMES_DASHBOARD_SESSION_TOKEN="t0ken")
    with dashboard_process(env) as (port, proc):
        assert raw_request(port, b"/api/profiles")[0] == 401
        status, body = raw_request(port, b"/api/profiles", {"X-Hermes-Session-Token": "t0ken"})
        assert status == 200 and b'"default"' in body
        assert b"t0ken" in raw_request(port, b"/")[1]
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert "t0ken" not in stderr  # the token is never logged


def test_settings_modes(tmp_path: Path) -> None:
    home = HermesHome(tmp_path)
    assert load_settings(home, host="127.0.0.1", env={}).mode == "token"
    assert load_settings(home, host="::1", env={}).mode == "token"
    with pytest.raises(ConfigError) as err:
        load_settings(home, host="192.0.2.1", env={})
    assert err.value.exit_code == 78
    oidc = {
        "HERMES_DASHBOARD_OIDC_ISSUER": "http://127.0.0.1:1",
        "HERMES_DASHBOARD_OIDC_CLIENT_ID": "c",
        "HERMES_DASHBOARD_OIDC_CLIENT_SECRET": "s",
        "HERMES_DASHBOARD_ALLOWED_DOMAINS": "example.com, @corp.example",
        "HERMES_DASHBOARD_PUBLIC_URL": "https://hermes.example.com",
    }
    settings = load_settings(home, host="127.0.0.1", env=oidc)
    assert settings.mode == "oauth"  # a provider always wins, even on loopback
    assert settings.allowlist.domains == {"example.com", "corp.example"}
    with pytest.raises(ConfigError, match="incomplete OIDC"):
        load_settings(home, host="0.0.0.0", env={"HERMES_DASHBOARD_OIDC_ISSUER": "http://x"})
    assert load_settings(home, env={"HERMES_DASHBOARD_PORT": "1234"}).port == 1234
    with pytest.raises(ConfigError):
        load_settings(home, env={"HERMES_DASHBOARD_PORT": "http"})
    # The cookie key persists across starts, private to the owner.
    key = load_settings(home, env={}).secret_key
    assert key == load_settings(home, env={}).secret_key
    assert (tmp_path / ".dashboard_secret").stat().st_mode & 0o077 == 0


def test_config_yaml_dashboard_section_is_ignored_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The hermes user writes config.yaml: it must not widen who may log in."""
    (tmp_path / "config.yaml").write_text(
        "dashboard:\n"
        "  github_client_id: from-yaml\n"
        "  github_client_secret: never-read-yaml-secret\n"
        "  allowed_github_orgs: [acme, Widgets]\n"
        "  allow_any_user: true\n"
        "  trusted_proxies: 0.0.0.0/0\n"
        "  public_url: https://evil.example\n"
        "  session_ttl: 99999999\n"
        "  some_unknown_key: value-of-unknown-key\n"
    )
    home = HermesHome(tmp_path)
    env = {
        "HERMES_DASHBOARD_GITHUB_CLIENT_ID": "from-env",
        "HERMES_DASHBOARD_GITHUB_CLIENT_SECRET": "from-env-secret",
        "HERMES_DASHBOARD_ALLOWED_GITHUB_USERS": "octocat",
        "HERMES_DASHBOARD_PUBLIC_URL": "https://hermes.example.com",
    }
    with caplog.at_level(logging.WARNING, logger="hermes.dashboard"):
        settings = load_settings(home, host="0.0.0.0", env=env)
    assert settings.github is not None and settings.github.client_id == "from-env"
    assert settings.allowlist.github_orgs == frozenset()
    assert not settings.allowlist.allow_any
    assert settings.proxies.networks == ()
    assert settings.public_url == "https://hermes.example.com"
    assert settings.session_idle_ttl == 8 * 3600
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    for key in ("github_client_id", "allowed_github_orgs", "allow_any_user", "public_url"):
        assert key in warnings[0]
    assert "HERMES_DASHBOARD_" in warnings[0] and "1 other key" in warnings[0]
    for value in ("from-yaml", "never-read", "acme", "evil.example", "some_unknown", "value-of"):
        assert value not in warnings[0]
    # Without the env, nothing configures a provider: the YAML client id is not used.
    with pytest.raises(ConfigError, match="HERMES_DASHBOARD_INSECURE"):
        load_settings(home, host="0.0.0.0", env={})


def test_settings_from_files(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret value\n\n")  # only ONE trailing newline is dropped
    emails = tmp_path / "emails"
    emails.write_text("alice@example.com,\nbob@example.com\n")
    env = {
        "HERMES_DASHBOARD_OIDC_ISSUER_FILE": str(_file(tmp_path, "issuer", "http://id.example\n")),
        "HERMES_DASHBOARD_OIDC_CLIENT_ID": "cid",
        "HERMES_DASHBOARD_OIDC_CLIENT_SECRET_FILE": str(secret),
        "HERMES_DASHBOARD_ALLOWED_EMAILS_FILE": str(emails),
        "HERMES_DASHBOARD_PUBLIC_URL_FILE": str(_file(tmp_path, "url", "https://h.example\r\n")),
        "HERMES_DASHBOARD_SECRET_KEY_FILE": str(_file(tmp_path, "key", "k" * 40 + "\n")),
    }
    settings = load_settings(HermesHome(tmp_path / "home"), host="0.0.0.0", env=env)
    assert settings.oidc is not None
    assert settings.oidc.issuer == "http://id.example"
    assert settings.oidc.client_secret == "s3cret value\n"
    assert settings.allowlist.emails == {"alice@example.com", "bob@example.com"}
    assert settings.public_url == "https://h.example"
    assert settings.secret_key == b"k" * 40
    assert not (tmp_path / "home" / ".dashboard_secret").exists()

    both = {**env, "HERMES_DASHBOARD_OIDC_CLIENT_SECRET": "inline"}
    with pytest.raises(ConfigError, match="not both"):
        load_settings(HermesHome(tmp_path), host="0.0.0.0", env=both)


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_value_file_is_a_one_line_config_error(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "nope" if kind == "missing" else tmp_path
    proc = run_dashboard(
        tmp_path / "home",
        "--host",
        "0.0.0.0",
        "--port",
        str(free_port()),
        HERMES_DASHBOARD_GITHUB_CLIENT_ID="id",
        HERMES_DASHBOARD_GITHUB_CLIENT_SECRET_FILE=str(path),
        HERMES_DASHBOARD_ALLOW_ANY_USER="1",
        HERMES_DASHBOARD_PUBLIC_URL="https://h.example",
    )
    assert proc.returncode == 78
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "HERMES_DASHBOARD_GITHUB_CLIENT_SECRET_FILE" in lines[0] and str(path) in lines[0]


def test_oidc_missing_email_verified_opt_out_setting(tmp_path: Path) -> None:
    env = {
        "HERMES_DASHBOARD_OIDC_ISSUER": "http://127.0.0.1:1",
        "HERMES_DASHBOARD_OIDC_CLIENT_ID": "c",
        "HERMES_DASHBOARD_OIDC_CLIENT_SECRET": "s",
        "HERMES_DASHBOARD_ALLOWED_DOMAINS": "example.com",
        "HERMES_DASHBOARD_PUBLIC_URL": "https://hermes.example.com",
    }
    home = HermesHome(tmp_path)
    default = load_settings(home, env=env).oidc
    assert default is not None and not default.allow_missing_email_verified
    opted = load_settings(
        home, env={**env, "HERMES_DASHBOARD_OIDC_ALLOW_MISSING_EMAIL_VERIFIED": "1"}
    ).oidc
    assert opted is not None and opted.allow_missing_email_verified


def _file(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_bytes(text.encode())
    return path


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost", "LOCALHOST"]
)
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.2", "localhost.evil", "example.com"])
def test_not_loopback_hosts(host: str) -> None:
    assert not is_loopback(host)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/profiles/alpha", "/profiles/alpha"),
        ("/", "/"),
        ("/logs/boot", "/logs/boot"),
        (None, "/"),
        ("", "/"),
        ("//evil.example", "/"),
        ("https://evil.example", "/"),
        ("/\\evil.example", "/"),
        ("/%2f/evil.example", "/"),
        ("/profiles/../../x", "/"),
        ("/api/profiles", "/"),
        ("/auth/logout", "/"),
        ("/x?y=//evil", "/"),
        ("/x\r\nSet-Cookie: a=b", "/"),
    ],
)
def test_safe_next(value: str | None, expected: str) -> None:
    assert safe_next(value) == expected


def test_allowlist_rules() -> None:
    rules = Allowlist.build(
        emails=["Alice@Example.com"],
        domains=["@corp.example"],
        github_users=["@octocat"],
        github_orgs=["Acme"],
    )
    assert rules.allows(Identity("oidc", "1", email="alice@example.com"))
    assert rules.allows(Identity("oidc", "2", email="x@corp.example"))
    assert not rules.allows(Identity("oidc", "3", email="x@corp.example.evil"))
    assert not rules.allows(Identity("oidc", "4", email="x@sub.corp.example"))
    assert rules.allows(Identity("github", "5", github_login="OctoCat"))
    assert rules.allows(Identity("github", "6", github_login="z", github_orgs=frozenset({"acme"})))
    assert not rules.allows(Identity("github", "7", github_login="z"))
    assert not Allowlist().allows(Identity("oidc", "8", email="a@b.c"))
    assert Allowlist(allow_any=True).allows(Identity("oidc", "9"))


def test_github_identity_uses_only_verified_primary_email() -> None:
    user = {"id": 42, "login": "octocat", "name": "Octo"}
    emails = [
        {"email": "spoof@corp.example", "primary": False, "verified": True},
        {"email": "Octo@Example.com", "primary": True, "verified": True},
    ]
    identity = github_identity(user, emails, [{"login": "acme"}])
    assert identity.email == "octo@example.com" and identity.github_orgs == {"acme"}
    unverified = github_identity(user, [{"email": "a@b.c", "primary": True, "verified": False}], [])
    assert unverified.email is None
    with pytest.raises(LoginError):
        github_identity({"login": "x"}, [], [])


def test_session_codec_expiry_and_revocation() -> None:
    codec = SessionCodec(b"k" * 32, idle_ttl=100, max_age=1000)
    gen = codec.revocations.generation
    raw = codec.dumps({"user": {"sub": "a"}, "iat": int(time.time()), "sid": "s1", "gen": gen})
    assert codec.loads(raw)[1] == "ok"
    assert codec.loads(raw + "x")[1] == "invalid"
    assert SessionCodec(b"other" * 8).loads(raw)[1] == "invalid"
    old = codec.dumps({"user": {"sub": "a"}, "iat": int(time.time()) - 5000, "sid": "s2"})
    assert codec.loads(old)[1] == "expired"
    stale = codec.dumps({"user": {"sub": "a"}, "iat": int(time.time()), "sid": "s3", "gen": "x"})
    assert codec.loads(stale)[1] == "expired"  # an older generation of the revocation list
    codec.revoke("s1")
    assert codec.loads(raw)[1] == "invalid"
    assert codec.loads(None)[1] == "none"


def test_tail_lines(tmp_path: Path) -> None:
    path = tmp_path / "current"
    assert tail_lines(path) == []
    path.write_text("".join(f"line {i}\n" for i in range(500)))
    assert tail_lines(path, 3) == ["line 497", "line 498", "line 499"]


def test_cli_import_stays_light() -> None:
    probe = (
        "import sys\n"
        "from hermes_container.cli import build_parser\n"
        "build_parser().parse_args(['dashboard', '--port', '1'])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'fastapi','uvicorn','authlib','jinja2','starlette'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_audit_log_rotates_by_size_and_scrubs(tmp_path: Path) -> None:
    from hermes_container.dashboard.auth.audit import AuditLog

    audit = AuditLog(tmp_path / "logs" / "dashboard-auth.log", max_bytes=2000, backups=2)
    for i in range(100):
        audit.write("refresh", user=f"user{i}@example.com", access_token="SECRET", code="C0DE")
    audit.close()
    files = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert files == ["dashboard-auth.log", "dashboard-auth.log.1", "dashboard-auth.log.2"]
    for path in (tmp_path / "logs").iterdir():
        assert path.stat().st_size <= 2000
        text = path.read_text()
        assert "SECRET" not in text and "C0DE" not in text
    newest = audit.tail(1)[0]
    assert newest["user"] == "user99@example.com" and newest["event"] == "refresh"


def test_github_login_start_uses_state_and_pkce(tmp_path: Path) -> None:
    from urllib.parse import parse_qs, urlsplit

    from starlette.testclient import TestClient

    from hermes_container.dashboard.app import create_app
    from hermes_container.dashboard.settings import DashboardSettings, GithubConfig

    settings = DashboardSettings(
        host="0.0.0.0",
        mode="oauth",
        github=GithubConfig("gh-client", "gh-secret"),
        allowlist=Allowlist.build(github_orgs=["acme"]),
        public_url="http://testserver",
    )
    app = create_app(settings, home=HermesHome(tmp_path), manager=None)
    with TestClient(app, follow_redirects=False) as client:
        response = client.get("/auth/login/github")
        assert response.status_code == 302
        url = urlsplit(response.headers["location"])
        assert (
            f"{url.scheme}://{url.netloc}{url.path}" == "https://github.com/login/oauth/authorize"
        )
        query = parse_qs(url.query)
        assert query["client_id"] == ["gh-client"] and query["state"][0]
        assert query["code_challenge_method"] == ["S256"]
        assert "read:org" in query["scope"][0]
        assert client.get("/api/status").json()["auth_providers"] == ["github"]
        assert client.get("/auth/login/oidc").status_code == 404
