"""OAuth mode answers only to its own Host names (public URL, allowed hosts, loopback).

Without the check the Host header chose the OAuth redirect URI and the CSRF "own
origin", and a DNS-rebinding page was same-origin with the dashboard.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.testclient import TestClient

from hermes_container.dashboard.app import create_app
from hermes_container.dashboard.auth.allowlist import Allowlist
from hermes_container.dashboard.auth.hosts import AllowedHosts, parse_host
from hermes_container.dashboard.settings import DashboardSettings, GithubConfig, load_settings
from hermes_container.errors import ConfigError
from hermes_container.healthcheck import check
from hermes_container.home import HermesHome
from tests.conftest import free_port
from tests.unit.dashboard_support import clean_env, dashboard_process

PUBLIC = "https://hermes.example.com"
OAUTH_ENV = {
    "HERMES_DASHBOARD_GITHUB_CLIENT_ID": "gh-client",
    "HERMES_DASHBOARD_GITHUB_CLIENT_SECRET": "gh-secret",
    "HERMES_DASHBOARD_ALLOWED_GITHUB_USERS": "octocat",
}


def oauth_settings(**overrides: Any) -> DashboardSettings:
    values: dict[str, Any] = {
        "host": "0.0.0.0",
        "mode": "oauth",
        "github": GithubConfig("gh-client", "gh-secret"),
        "allowlist": Allowlist.build(github_users=["octocat"]),
        "public_url": PUBLIC,
        **overrides,
    }
    return DashboardSettings(**values)


@pytest.fixture
def client(home: HermesHome) -> Iterator[TestClient]:
    app = create_app(oauth_settings(), home=home, manager=None)
    with TestClient(app, base_url=PUBLIC, follow_redirects=False) as tc:
        yield tc


def redirect_uri(response: httpx.Response) -> str:
    assert response.status_code == 302, response.text
    return parse_qs(urlsplit(response.headers["location"]).query)["redirect_uri"][0]


def test_oauth_without_public_url_or_allowed_hosts_is_a_config_error(tmp_path: Path) -> None:
    home = HermesHome(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_settings(home, host="0.0.0.0", env=OAUTH_ENV)
    assert err.value.exit_code == 78
    assert "HERMES_DASHBOARD_PUBLIC_URL" in err.value.message
    assert "HERMES_DASHBOARD_ALLOWED_HOSTS" in err.value.message
    with pytest.raises(ConfigError):  # also on loopback: a provider means OAuth mode
        load_settings(home, host="127.0.0.1", env=OAUTH_ENV)
    with pytest.raises(ConfigError, match="PUBLIC_URL"):  # however the settings are built
        oauth_settings(public_url=None)
    assert (
        load_settings(
            home, host="0.0.0.0", env={**OAUTH_ENV, "HERMES_DASHBOARD_PUBLIC_URL": PUBLIC}
        ).public_url
        == PUBLIC
    )
    hosts_only = {**OAUTH_ENV, "HERMES_DASHBOARD_ALLOWED_HOSTS": "Hermes.LAN:9119, [::1]"}
    assert load_settings(home, host="0.0.0.0", env=hosts_only).allowed_hosts == {
        "hermes.lan",
        "::1",
    }
    with pytest.raises(ConfigError, match="ALLOWED_HOSTS"):
        load_settings(
            home, env={**OAUTH_ENV, "HERMES_DASHBOARD_ALLOWED_HOSTS": "user@evil.example"}
        )
    with pytest.raises(ConfigError, match="PUBLIC_URL"):
        load_settings(
            home, env={**OAUTH_ENV, "HERMES_DASHBOARD_PUBLIC_URL": "https://u@evil.example"}
        )


def test_oauth_without_public_url_exits_78_naming_the_variables(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hermes_container", "dashboard", "--host", "0.0.0.0",
         "--port", str(free_port())],
        env=clean_env(HERMES_HOME=str(tmp_path), **OAUTH_ENV),
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip
    assert proc.returncode == 78
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "HERMES_DASHBOARD_PUBLIC_URL" in lines[0]
    assert "HERMES_DASHBOARD_ALLOWED_HOSTS" in lines[0]


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:443", "hermes.example.com.evil.example", "127.0.0.1.nip.io",
     "hermes.example.com@evil.example", "hermes.example.com/x", "", "[::ffff:1.2.3.4]"],
)  # fmt: skip
@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/status"), ("GET", "/login"), ("GET", "/auth/login/github"),
     ("GET", "/api/profiles"), ("GET", "/static/dashboard.css"), ("POST", "/auth/logout")],
)  # fmt: skip
def test_foreign_host_gets_400_before_any_auth_logic(
    client: TestClient, home: HermesHome, host: str, method: str, path: str
) -> None:
    response = client.request(method, path, headers={"Host": host})
    assert response.status_code == 400, (host, path, response.status_code)
    assert response.json()["error"] == "bad_host"
    assert "set-cookie" not in response.headers  # the session layer never ran
    assert response.headers["x-frame-options"] == "DENY"
    assert not home.auth_log.exists()  # nor the login route (it audits login_start)


@pytest.mark.parametrize(
    "host",
    ["hermes.example.com", "HERMES.example.com:443", "hermes.example.com:8443",
     "127.0.0.1:9119", "127.0.0.1", "localhost:9119", "[::1]:9119"],
)  # fmt: skip
def test_own_and_loopback_hosts_are_served(client: TestClient, host: str) -> None:
    status = client.get("/api/status", headers={"Host": host})
    assert status.status_code == 200 and status.json()["auth_required"] is True
    assert client.get("/login", headers={"Host": host}).status_code == 200
    # The redirect URI comes from the public URL whatever (allowed) Host was used.
    login = client.get("/auth/login/github", headers={"Host": host})
    assert redirect_uri(login) == f"{PUBLIC}/auth/callback/github"


def test_allowed_hosts_without_public_url(home: HermesHome) -> None:
    settings = oauth_settings(public_url=None, allowed_hosts=frozenset({"hermes.lan"}))
    app = create_app(settings, home=home, manager=None)
    with TestClient(app, base_url="http://hermes.lan:9119", follow_redirects=False) as tc:
        # No public URL: the redirect URI is built from the Host, which was validated.
        uri = redirect_uri(tc.get("/auth/login/github"))
        assert uri == "http://hermes.lan:9119/auth/callback/github"
        assert tc.get("/auth/login/github", headers={"Host": "evil.example"}).status_code == 400
        assert tc.get("/api/status", headers={"Host": "evil.example"}).status_code == 400


def test_rebound_origin_cannot_pass_csrf_as_own_origin(client: TestClient) -> None:
    """A rebinding page at http://evil.example has Origin == scheme://Host: refused first."""
    response = client.post(
        "/auth/logout", headers={"Host": "evil.example", "Origin": "http://evil.example"}
    )
    assert response.status_code == 400


def test_bind_address_is_accepted_and_modes_without_check(home: HermesHome) -> None:
    specific = oauth_settings(host="192.0.2.10").host_check
    assert specific is not None and specific.allows("192.0.2.10:9119")
    assert not specific.allows("192.0.2.11:9119")
    assert DashboardSettings(session_token="t", public_url=PUBLIC).host_check is None  # token
    assert DashboardSettings(host="0.0.0.0", mode="insecure").host_check is None
    insecure = DashboardSettings(host="0.0.0.0", mode="insecure", public_url=PUBLIC).host_check
    assert insecure is not None and not insecure.allows("evil.example")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("Example.COM:8080", "example.com"), ("[::1]:9119", "::1"), ("[0:0::1]", "::1"),
     ("127.0.0.1", "127.0.0.1"), ("a", "a"), (None, None), ("", None), ("a b", None),
     ("a@b", None), ("a:b", None), ("[zz]", None), ("a:123456", None), ("a/b", None),
     ("-a", None), ("a.", None), ("x" * 300, None)],
)  # fmt: skip
def test_parse_host(value: str | None, expected: str | None) -> None:
    assert parse_host(value) == expected


def test_allowed_hosts_match() -> None:
    hosts = AllowedHosts({"hermes.example.com"})
    for ok in ("hermes.example.com", "hermes.example.com:1", "LOCALHOST", "127.1.2.3:80"):
        assert hosts.allows(ok), ok
    for bad in (None, "", "example.com", "sub.hermes.example.com", "0.0.0.0", "[::]"):
        assert not hosts.allows(bad), bad


def test_healthcheck_passes_against_a_live_oauth_dashboard(home: HermesHome) -> None:
    """The image's HEALTHCHECK probes 127.0.0.1 with its own Host: that must stay healthy."""
    env = clean_env(HERMES_HOME=str(home.root), **OAUTH_ENV, HERMES_DASHBOARD_PUBLIC_URL=PUBLIC)
    with dashboard_process(env, host="0.0.0.0") as (port, _proc):
        probe_env = {
            "HERMES_DASHBOARD": "1",
            "HERMES_DASHBOARD_HOST": "0.0.0.0",
            "HERMES_DASHBOARD_PORT": str(port),
        }
        results = [r for r in check(home, probe_env, timeout=5) if r.name == "dashboard"]
        assert [r.ok for r in results] == [True], results
        url = f"http://127.0.0.1:{port}/api/status"
        foreign = httpx.get(url, headers={"Host": "evil.example"}, trust_env=False, timeout=5)
        assert foreign.status_code == 400
