"""Dashboard settings, from HERMES_DASHBOARD_* environment variables only.

Who may log in, and how, is the operator's decision, so none of it is read from
config.yaml (the `hermes` user writes that file; a `dashboard:` section there is
ignored with one warning naming its keys). Every variable below except HOST and PORT
may instead be given as HERMES_DASHBOARD_<NAME>_FILE=/path (e.g. a Docker secret), read
as every secret's file form is (secret_env.py): the file's content minus one trailing
newline; setting both, or an unreadable or empty file, is an error.

  HERMES_DASHBOARD_HOST / _PORT          bind address (default 127.0.0.1) and port (9119)
  HERMES_DASHBOARD_SESSION_TOKEN         loopback mode: fixed token instead of a random one
  HERMES_DASHBOARD_INSECURE=1|true|yes   serve a non-loopback bind WITHOUT authentication
  HERMES_DASHBOARD_AUTH=token            sign in with a login token kept in the volume
                                         (auth/login_token.py); no identity provider needed
  HERMES_DASHBOARD_BASIC_USER / _BASIC_PASSWORD_HASH
                                         one user and an argon2 hash (`hermes dashboard
                                         hash-password`); auth/basic_login.py
  HERMES_DASHBOARD_OIDC_ISSUER           OIDC issuer URL (discovery: <issuer>/.well-known/...)
  HERMES_DASHBOARD_OIDC_CLIENT_ID / _OIDC_CLIENT_SECRET
  HERMES_DASHBOARD_OIDC_SCOPES           default "openid email profile"
  HERMES_DASHBOARD_OIDC_ALLOW_MISSING_EMAIL_VERIFIED=1
                                         an ID token WITHOUT email_verified counts as verified
  HERMES_DASHBOARD_GITHUB_CLIENT_ID / _GITHUB_CLIENT_SECRET
  HERMES_DASHBOARD_ALLOWED_EMAILS        comma-separated verified emails
  HERMES_DASHBOARD_ALLOWED_DOMAINS       comma-separated email domains
  HERMES_DASHBOARD_ALLOWED_GITHUB_USERS  comma-separated GitHub logins
  HERMES_DASHBOARD_ALLOWED_GITHUB_ORGS   comma-separated GitHub orgs (asks for read:org)
  HERMES_DASHBOARD_ALLOW_ANY_USER=1      every user the provider accepts may log in
  HERMES_DASHBOARD_PUBLIC_URL            external base URL (OAuth redirect URI base)
  HERMES_DASHBOARD_ALLOWED_HOSTS         other Host names the dashboard answers to
  HERMES_DASHBOARD_TRUSTED_PROXIES       proxy IPs/CIDRs whose X-Forwarded-* are believed
  HERMES_DASHBOARD_SECRET_KEY            cookie signing key (else $HERMES_HOME/.dashboard_secret)
  HERMES_DASHBOARD_SESSION_TTL           idle timeout in seconds (default 28800)
  HERMES_DASHBOARD_SESSION_MAX_AGE       absolute session lifetime in seconds (default 604800)

Auth mode: a configured provider (OIDC, GitHub, the login token or basic) always means
the login-session gate, mode "oauth" (also on loopback, e.g. behind a reverse proxy); OIDC
and GitHub also need PUBLIC_URL or ALLOWED_HOSTS (see auth/hosts.py), token and basic do
not (no redirect URI, and a session cookie is never sent to a rebound host name);
otherwise a loopback bind uses the ephemeral token; any other bind refuses to start
(exit 78) unless HERMES_DASHBOARD_INSECURE is set.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from hermes_container.config import DASHBOARD_DEFAULT_PORT, env_port, load_yaml
from hermes_container.dashboard.auth.allowlist import Allowlist
from hermes_container.dashboard.auth.hosts import (
    AllowedHosts,
    bind_host_names,
    is_loopback,
    parse_host,
)
from hermes_container.dashboard.auth.proxy import TrustedProxies, parse_networks
from hermes_container.envflags import is_truthy
from hermes_container.errors import ConfigError
from hermes_container.home import CONFIG_FILE, HermesHome
from hermes_container.secret_env import secret_from_env

log = logging.getLogger("hermes.dashboard")

__all__ = ["DashboardSettings", "GithubConfig", "OidcConfig", "is_loopback", "load_settings"]

AuthMode = Literal["token", "oauth", "insecure"]
PREFIX = "HERMES_DASHBOARD_"
SECRET_FILE = ".dashboard_secret"  # noqa: S105 (a file name)
# Every setting load_settings reads (besides HOST/PORT): what a config.yaml `dashboard:`
# section may try to set, and is told is ignored.
SETTING_KEYS = (
    "OIDC_ISSUER",
    "OIDC_CLIENT_ID",
    "OIDC_CLIENT_SECRET",
    "OIDC_SCOPES",
    "OIDC_ALLOW_MISSING_EMAIL_VERIFIED",
    "GITHUB_CLIENT_ID",
    "GITHUB_CLIENT_SECRET",
    "ALLOWED_EMAILS",
    "ALLOWED_DOMAINS",
    "ALLOWED_GITHUB_USERS",
    "ALLOWED_GITHUB_ORGS",
    "ALLOW_ANY_USER",
    "PUBLIC_URL",
    "ALLOWED_HOSTS",
    "TRUSTED_PROXIES",
    "SECRET_KEY",
    "SESSION_TTL",
    "SESSION_MAX_AGE",
    "SESSION_TOKEN",
    "INSECURE",
    "AUTH",
    "BASIC_USER",
    "BASIC_PASSWORD_HASH",
)
AUTH_TOKEN = "token"  # noqa: S105 (a mode name)

NO_PROVIDER_MESSAGE = (
    "refusing to serve the dashboard on {host} without authentication: configure a login "
    "provider (HERMES_DASHBOARD_AUTH=token for a sign-in link printed at start, "
    "HERMES_DASHBOARD_BASIC_USER + HERMES_DASHBOARD_BASIC_PASSWORD_HASH, or "
    "HERMES_DASHBOARD_OIDC_ISSUER + HERMES_DASHBOARD_OIDC_CLIENT_ID + "
    "HERMES_DASHBOARD_OIDC_CLIENT_SECRET, or HERMES_DASHBOARD_GITHUB_CLIENT_ID + "
    "HERMES_DASHBOARD_GITHUB_CLIENT_SECRET) with an allowlist (HERMES_DASHBOARD_ALLOWED_EMAILS, "
    "_ALLOWED_DOMAINS, _ALLOWED_GITHUB_USERS or _ALLOWED_GITHUB_ORGS), or bind to 127.0.0.1 "
    "(HERMES_DASHBOARD_HOST), or set HERMES_DASHBOARD_INSECURE=1 to run without "
    "authentication (dangerous)"
)
NO_PUBLIC_URL_MESSAGE = (
    "the dashboard's OAuth login needs HERMES_DASHBOARD_PUBLIC_URL (the URL users open, "
    "e.g. https://hermes.example.com; the redirect URI is derived from it) or "
    "HERMES_DASHBOARD_ALLOWED_HOSTS (the host names it is reached by)"
)


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    client_id: str
    client_secret: str
    scopes: str = "openid email profile"
    # For IdPs that release only verified addresses but never send `email_verified`.
    allow_missing_email_verified: bool = False

    @property
    def metadata_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"


@dataclass(frozen=True)
class GithubConfig:
    client_id: str
    client_secret: str


@dataclass(frozen=True)
class BasicConfig:
    user: str
    password_hash: str = field(repr=False)


@dataclass(frozen=True)
class DashboardSettings:
    host: str = "127.0.0.1"
    port: int = DASHBOARD_DEFAULT_PORT
    mode: AuthMode = "token"
    session_token: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    oidc: OidcConfig | None = field(default=None, repr=False)
    github: GithubConfig | None = field(default=None, repr=False)
    token_login: bool = False  # HERMES_DASHBOARD_AUTH=token
    basic: BasicConfig | None = field(default=None, repr=False)
    allowlist: Allowlist = field(default_factory=Allowlist)
    proxies: TrustedProxies = field(default_factory=TrustedProxies)
    public_url: str | None = None
    allowed_hosts: frozenset[str] = frozenset()  # HERMES_DASHBOARD_ALLOWED_HOSTS, parsed
    secret_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    session_idle_ttl: int = 8 * 3600
    session_max_age: int = 7 * 24 * 3600

    def __post_init__(self) -> None:
        # Fail closed however the settings were built: OAuth never trusts the Host header.
        if self.oauth_providers and not (self.public_url or self.allowed_hosts):
            raise ConfigError(NO_PUBLIC_URL_MESSAGE)

    @property
    def oauth_providers(self) -> list[str]:
        """The providers that log in through a redirect (authlib): oidc, github."""
        return [name for name, cfg in (("oidc", self.oidc), ("github", self.github)) if cfg]

    @property
    def providers(self) -> list[str]:
        """Every login provider a session may come from (sessions record it)."""
        own = [name for name, on in (("token", self.token_login), ("basic", self.basic)) if on]
        return self.oauth_providers + own

    @property
    def sign_in_base(self) -> str:
        """The URL a browser opens to reach the dashboard (the sign-in link's base)."""
        from hermes_container.dashboard.auth.login_token import base_url

        return base_url(self.host, self.port, self.public_url)

    @property
    def auth_required(self) -> bool:
        return self.mode != "insecure"

    @property
    def host_check(self) -> AllowedHosts | None:
        """The Host names to enforce; None in loopback mode (its gate checks loopback)."""
        if self.mode == "token" or not (self.public_url or self.allowed_hosts):
            return None
        names = set(self.allowed_hosts) | bind_host_names(self.host)
        public = parse_host(urlsplit(self.public_url).netloc) if self.public_url else None
        if public:
            names.add(public)
        return AllowedHosts(names)


class _Env:
    """HERMES_DASHBOARD_<KEY>, or the content of the file HERMES_DASHBOARD_<KEY>_FILE."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def get(self, key: str) -> str:
        return secret_from_env(PREFIX + key, self.env) or ""

    def items(self, key: str) -> list[str]:
        return [v for v in re.split(r"[,\s]+", self.get(key)) if v]

    def seconds(self, key: str, default: int) -> int:
        raw = self.get(key).strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{PREFIX}{key}={raw!r} is not a number of seconds") from None
        if value < 1:
            raise ConfigError(f"{PREFIX}{key} must be at least 1 second")
        return value


def warn_ignored_yaml(home: HermesHome) -> None:
    """One warning when config.yaml still carries a `dashboard:` section (keys, no values)."""
    try:
        section = load_yaml(home.root / CONFIG_FILE).get("dashboard")
    except ConfigError:
        return  # nothing is read from it anyway; the gateway reports a broken file
    if not isinstance(section, dict) or not section:
        return
    known = {key.lower() for key in SETTING_KEYS}
    named = sorted(str(k) for k in section if str(k).lower() in known)
    others = len(section) - len(named)
    listed = ", ".join(named) + (f" and {others} other key(s)" if named and others else "")
    log.warning(
        "config.yaml: the dashboard: section is ignored (%s); dashboard settings come from "
        "HERMES_DASHBOARD_* environment variables only",
        listed or f"{others} key(s)",
    )


def load_secret_key(configured: str, home: HermesHome) -> bytes:
    """The cookie key: configured, else a 0600 file in HERMES_HOME (sessions survive restarts)."""
    if configured:
        return configured.encode("utf-8")
    path = home.root / SECRET_FILE
    with contextlib.suppress(FileNotFoundError):
        data = path.read_bytes().strip()
        if len(data) >= 32:
            return data
    try:
        home.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    except OSError as exc:
        log.warning("cannot persist %s (%s); sessions end on restart", path, exc.strerror)
        return secrets.token_bytes(32)
    data = secrets.token_urlsafe(48).encode("ascii")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return data


def load_settings(
    home: HermesHome,
    *,
    host: str | None = None,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
) -> DashboardSettings:
    environ = os.environ if env is None else env
    src = _Env(environ)
    warn_ignored_yaml(home)
    host = host or environ.get(PREFIX + "HOST", "").strip() or "127.0.0.1"
    port = port if port is not None else env_port(PREFIX + "PORT", DASHBOARD_DEFAULT_PORT, environ)

    oidc = _oidc(src)
    github = _github(src)
    allowlist = Allowlist.build(
        emails=src.items("ALLOWED_EMAILS"),
        domains=src.items("ALLOWED_DOMAINS"),
        github_users=src.items("ALLOWED_GITHUB_USERS"),
        github_orgs=src.items("ALLOWED_GITHUB_ORGS"),
        allow_any=is_truthy(src.get("ALLOW_ANY_USER")),
    )
    token_login = _token_login(src)
    basic = _basic(src)
    mode: AuthMode
    if oidc or github or token_login or basic:
        if (oidc or github) and not allowlist.configured:
            raise ConfigError(
                "a dashboard login provider is configured but no allowlist: set "
                "HERMES_DASHBOARD_ALLOWED_EMAILS, HERMES_DASHBOARD_ALLOWED_DOMAINS, "
                "HERMES_DASHBOARD_ALLOWED_GITHUB_USERS or HERMES_DASHBOARD_ALLOWED_GITHUB_ORGS "
                "(or HERMES_DASHBOARD_ALLOW_ANY_USER=1 to admit every provider user)"
            )
        mode = "oauth"
    elif is_loopback(host):
        mode = "token"
    elif is_truthy(src.get("INSECURE")):
        mode = "insecure"
    else:
        raise ConfigError(NO_PROVIDER_MESSAGE.format(host=host))

    try:
        proxies = TrustedProxies(parse_networks(src.items("TRUSTED_PROXIES")))
    except ValueError as exc:
        raise ConfigError(f"HERMES_DASHBOARD_TRUSTED_PROXIES: {exc}") from None
    public_url = _public_url(src.get("PUBLIC_URL").strip())
    allowed_hosts = _allowed_hosts(src.items("ALLOWED_HOSTS"))
    if (oidc or github) and not (public_url or allowed_hosts):
        raise ConfigError(NO_PUBLIC_URL_MESSAGE)
    token = src.get("SESSION_TOKEN") or secrets.token_urlsafe(32)
    # Validate everything before load_secret_key may create the home and its secret file.
    idle_ttl = src.seconds("SESSION_TTL", 8 * 3600)
    max_age = src.seconds("SESSION_MAX_AGE", 7 * 24 * 3600)
    secret_key = src.get("SECRET_KEY")
    return DashboardSettings(
        host=host,
        port=port,
        mode=mode,
        session_token=token,
        oidc=oidc,
        github=github,
        token_login=token_login,
        basic=basic,
        allowlist=allowlist,
        proxies=proxies,
        public_url=public_url,
        allowed_hosts=allowed_hosts,
        secret_key=load_secret_key(secret_key, home),
        session_idle_ttl=idle_ttl,
        session_max_age=max_age,
    )


def _token_login(src: _Env) -> bool:
    value = src.get("AUTH").strip().lower()
    if value in ("", "none"):
        return False
    if value == AUTH_TOKEN:
        return True
    raise ConfigError(
        f"HERMES_DASHBOARD_AUTH={value!r} is not a login mode: use `token` (a sign-in link "
        "with a login token kept in the volume), or leave it unset"
    )


def _basic(src: _Env) -> BasicConfig | None:
    from hermes_container.dashboard.auth.basic_login import hash_problem, user_problem

    user, password_hash = src.get("BASIC_USER"), src.get("BASIC_PASSWORD_HASH").strip()
    if not (user or password_hash):
        return None
    if not (user and password_hash):
        raise ConfigError(
            "incomplete basic login settings: HERMES_DASHBOARD_BASIC_USER and "
            "HERMES_DASHBOARD_BASIC_PASSWORD_HASH are both needed"
        )
    problem = user_problem(user)
    if problem:
        raise ConfigError(f"HERMES_DASHBOARD_BASIC_USER {problem}")
    problem = hash_problem(password_hash)
    if problem:  # never echo the value: it is a secret's hash
        raise ConfigError(f"HERMES_DASHBOARD_BASIC_PASSWORD_HASH {problem}")
    return BasicConfig(user, password_hash)


def sign_in_base_from_env(env: Mapping[str, str]) -> str:
    """The dashboard's sign-in base URL from the environment alone (the CLI's view)."""
    from hermes_container.dashboard.auth.login_token import base_url

    src = _Env(env)
    host = env.get(PREFIX + "HOST", "").strip() or "127.0.0.1"
    port = env_port(PREFIX + "PORT", DASHBOARD_DEFAULT_PORT, env)
    return base_url(host, port, _public_url(src.get("PUBLIC_URL").strip()))


def token_login_enabled(env: Mapping[str, str]) -> bool:
    return _token_login(_Env(env))


def _public_url(raw: str) -> str | None:
    url = raw.rstrip("/")
    if not url:
        return None
    # scheme://host[:port][/path], no userinfo, query or fragment: it becomes the
    # redirect URI's base and the one Host name OAuth mode trusts.
    parts = urlsplit(url)
    if (
        parts.scheme not in ("http", "https")
        or parse_host(parts.netloc) is None
        or not re.fullmatch(r"https?://[^/\s?#@]+(?:/[^\s?#]*)?", url)
    ):
        raise ConfigError(f"HERMES_DASHBOARD_PUBLIC_URL={url!r} is not an http(s) URL")
    return url


def _allowed_hosts(values: list[str]) -> frozenset[str]:
    names: set[str] = set()
    for value in values:
        name = parse_host(value)
        if name is None:
            raise ConfigError(f"HERMES_DASHBOARD_ALLOWED_HOSTS: {value!r} is not a host name")
        names.add(name)
    return frozenset(names)


def _oidc(src: _Env) -> OidcConfig | None:
    issuer, cid, secret = (
        src.get("OIDC_ISSUER").strip(),
        src.get("OIDC_CLIENT_ID").strip(),
        src.get("OIDC_CLIENT_SECRET"),
    )
    if not (issuer or cid or secret):
        return None
    if not (issuer and cid and secret):
        raise ConfigError(
            "incomplete OIDC settings: HERMES_DASHBOARD_OIDC_ISSUER, "
            "HERMES_DASHBOARD_OIDC_CLIENT_ID and HERMES_DASHBOARD_OIDC_CLIENT_SECRET are all needed"
        )
    if not re.fullmatch(r"https?://\S+", issuer):
        raise ConfigError(f"HERMES_DASHBOARD_OIDC_ISSUER={issuer!r} is not a URL")
    return OidcConfig(
        issuer,
        cid,
        secret,
        src.get("OIDC_SCOPES").strip() or "openid email profile",
        allow_missing_email_verified=is_truthy(src.get("OIDC_ALLOW_MISSING_EMAIL_VERIFIED")),
    )


def _github(src: _Env) -> GithubConfig | None:
    cid, secret = src.get("GITHUB_CLIENT_ID").strip(), src.get("GITHUB_CLIENT_SECRET")
    if not (cid or secret):
        return None
    if not (cid and secret):
        raise ConfigError(
            "incomplete GitHub settings: HERMES_DASHBOARD_GITHUB_CLIENT_ID and "
            "HERMES_DASHBOARD_GITHUB_CLIENT_SECRET are both needed"
        )
    return GithubConfig(cid, secret)
