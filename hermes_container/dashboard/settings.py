"""Dashboard settings from the environment and the `dashboard:` section of config.yaml.

Environment variables (they win over config.yaml; secrets are read from the
environment only):

  HERMES_DASHBOARD_HOST / _PORT          bind address (default 127.0.0.1) and port (9119)
  HERMES_DASHBOARD_SESSION_TOKEN         loopback mode: fixed token instead of a random one
  HERMES_DASHBOARD_INSECURE=1|true|yes   serve a non-loopback bind WITHOUT authentication
  HERMES_DASHBOARD_OIDC_ISSUER           OIDC issuer URL (discovery: <issuer>/.well-known/...)
  HERMES_DASHBOARD_OIDC_CLIENT_ID / _OIDC_CLIENT_SECRET
  HERMES_DASHBOARD_OIDC_SCOPES           default "openid email profile"
  HERMES_DASHBOARD_GITHUB_CLIENT_ID / _GITHUB_CLIENT_SECRET
  HERMES_DASHBOARD_ALLOWED_EMAILS        comma-separated verified emails
  HERMES_DASHBOARD_ALLOWED_DOMAINS       comma-separated email domains
  HERMES_DASHBOARD_ALLOWED_GITHUB_USERS  comma-separated GitHub logins
  HERMES_DASHBOARD_ALLOWED_GITHUB_ORGS   comma-separated GitHub orgs (asks for read:org)
  HERMES_DASHBOARD_ALLOW_ANY_USER=1      every user the provider accepts may log in
  HERMES_DASHBOARD_PUBLIC_URL            external base URL (OAuth redirect URI base)
  HERMES_DASHBOARD_TRUSTED_PROXIES       proxy IPs/CIDRs whose X-Forwarded-* are believed
  HERMES_DASHBOARD_SECRET_KEY            cookie signing key (else $HERMES_HOME/.dashboard_secret)
  HERMES_DASHBOARD_SESSION_TTL           idle timeout in seconds (default 28800)
  HERMES_DASHBOARD_SESSION_MAX_AGE       absolute session lifetime in seconds (default 604800)

Auth mode: a configured provider always means the OAuth gate (also on loopback, e.g.
behind a reverse proxy); otherwise a loopback bind uses the ephemeral token; any other
bind refuses to start (exit 78) unless HERMES_DASHBOARD_INSECURE is set.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from hermes_container.config import DASHBOARD_DEFAULT_PORT, load_yaml, parse_port
from hermes_container.dashboard.auth.allowlist import Allowlist
from hermes_container.dashboard.auth.proxy import TrustedProxies, parse_networks
from hermes_container.errors import ConfigError
from hermes_container.home import CONFIG_FILE, HermesHome

log = logging.getLogger("hermes.dashboard")

AuthMode = Literal["token", "oauth", "insecure"]
PREFIX = "HERMES_DASHBOARD_"
SECRET_FILE = ".dashboard_secret"  # noqa: S105 (a file name)
_TRUE = ("1", "true", "yes")
_SECRET_KEYS = ("OIDC_CLIENT_SECRET", "GITHUB_CLIENT_SECRET", "SECRET_KEY", "SESSION_TOKEN")

NO_PROVIDER_MESSAGE = (
    "refusing to serve the dashboard on {host} without authentication: configure a login "
    "provider (HERMES_DASHBOARD_OIDC_ISSUER + HERMES_DASHBOARD_OIDC_CLIENT_ID + "
    "HERMES_DASHBOARD_OIDC_CLIENT_SECRET, or HERMES_DASHBOARD_GITHUB_CLIENT_ID + "
    "HERMES_DASHBOARD_GITHUB_CLIENT_SECRET) with an allowlist (HERMES_DASHBOARD_ALLOWED_EMAILS, "
    "_ALLOWED_DOMAINS, _ALLOWED_GITHUB_USERS or _ALLOWED_GITHUB_ORGS), or bind to 127.0.0.1 "
    "(HERMES_DASHBOARD_HOST), or set HERMES_DASHBOARD_INSECURE=1 to run without "
    "authentication (dangerous)"
)


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    client_id: str
    client_secret: str
    scopes: str = "openid email profile"

    @property
    def metadata_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"


@dataclass(frozen=True)
class GithubConfig:
    client_id: str
    client_secret: str


@dataclass(frozen=True)
class DashboardSettings:
    host: str = "127.0.0.1"
    port: int = DASHBOARD_DEFAULT_PORT
    mode: AuthMode = "token"
    session_token: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    oidc: OidcConfig | None = field(default=None, repr=False)
    github: GithubConfig | None = field(default=None, repr=False)
    allowlist: Allowlist = field(default_factory=Allowlist)
    proxies: TrustedProxies = field(default_factory=TrustedProxies)
    public_url: str | None = None
    secret_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    session_idle_ttl: int = 8 * 3600
    session_max_age: int = 7 * 24 * 3600

    @property
    def providers(self) -> list[str]:
        return [name for name, cfg in (("oidc", self.oidc), ("github", self.github)) if cfg]

    @property
    def auth_required(self) -> bool:
        return self.mode != "insecure"


def is_truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in _TRUE


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Source:
    """Env first, then config.yaml's `dashboard:` mapping (never for secrets)."""

    def __init__(self, env: Mapping[str, str], yaml_section: Mapping[str, Any]) -> None:
        self.env = env
        self.yaml = yaml_section

    def get(self, key: str) -> str:
        value = self.env.get(PREFIX + key, "").strip()
        if value or key in _SECRET_KEYS:
            return value
        raw = self.yaml.get(key.lower())
        if isinstance(raw, list):
            return ",".join(str(v) for v in raw)
        return "" if raw is None else str(raw).strip()

    def items(self, key: str) -> list[str]:
        return [v for v in re.split(r"[,\s]+", self.get(key)) if v]

    def seconds(self, key: str, default: int) -> int:
        raw = self.get(key)
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{PREFIX}{key}={raw!r} is not a number of seconds") from None
        if value < 1:
            raise ConfigError(f"{PREFIX}{key} must be at least 1 second")
        return value


def _yaml_section(home: HermesHome) -> Mapping[str, Any]:
    try:
        section = load_yaml(home.root / CONFIG_FILE).get("dashboard")
    except ConfigError as exc:
        log.warning("ignoring config.yaml for the dashboard: %s", exc.message)
        return {}
    return section if isinstance(section, dict) else {}


def load_secret_key(env: Mapping[str, str], home: HermesHome) -> bytes:
    """The cookie key: env, else a 0600 file in HERMES_HOME (so sessions survive restarts)."""
    value = env.get(PREFIX + "SECRET_KEY", "").strip()
    if value:
        return value.encode("utf-8")
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
    src = _Source(environ, _yaml_section(home))
    host = host or environ.get(PREFIX + "HOST", "").strip() or "127.0.0.1"
    port = (
        port
        if port is not None
        else parse_port(PREFIX + "PORT", environ.get(PREFIX + "PORT", "").strip() or "9119")
    )

    oidc = _oidc(src)
    github = _github(src)
    allowlist = Allowlist.build(
        emails=src.items("ALLOWED_EMAILS"),
        domains=src.items("ALLOWED_DOMAINS"),
        github_users=src.items("ALLOWED_GITHUB_USERS"),
        github_orgs=src.items("ALLOWED_GITHUB_ORGS"),
        allow_any=is_truthy(src.get("ALLOW_ANY_USER")),
    )
    mode: AuthMode
    if oidc or github:
        if not allowlist.configured:
            raise ConfigError(
                "a dashboard login provider is configured but no allowlist: set "
                "HERMES_DASHBOARD_ALLOWED_EMAILS, HERMES_DASHBOARD_ALLOWED_DOMAINS, "
                "HERMES_DASHBOARD_ALLOWED_GITHUB_USERS or HERMES_DASHBOARD_ALLOWED_GITHUB_ORGS "
                "(or HERMES_DASHBOARD_ALLOW_ANY_USER=1 to admit every provider user)"
            )
        mode = "oauth"
    elif is_loopback(host):
        mode = "token"
    elif is_truthy(environ.get(PREFIX + "INSECURE")):
        mode = "insecure"
    else:
        raise ConfigError(NO_PROVIDER_MESSAGE.format(host=host))

    try:
        proxies = TrustedProxies(parse_networks(src.items("TRUSTED_PROXIES")))
    except ValueError as exc:
        raise ConfigError(f"HERMES_DASHBOARD_TRUSTED_PROXIES: {exc}") from None
    public_url = src.get("PUBLIC_URL").rstrip("/") or None
    if public_url and not re.fullmatch(r"https?://[^/\s?#]+(?:/[^\s?#]*)?", public_url):
        raise ConfigError(f"HERMES_DASHBOARD_PUBLIC_URL={public_url!r} is not an http(s) URL")
    token = environ.get(PREFIX + "SESSION_TOKEN", "").strip() or secrets.token_urlsafe(32)
    # Validate everything before load_secret_key may create the home and its secret file.
    idle_ttl = src.seconds("SESSION_TTL", 8 * 3600)
    max_age = src.seconds("SESSION_MAX_AGE", 7 * 24 * 3600)
    return DashboardSettings(
        host=host,
        port=port,
        mode=mode,
        session_token=token,
        oidc=oidc,
        github=github,
        allowlist=allowlist,
        proxies=proxies,
        public_url=public_url,
        secret_key=load_secret_key(environ, home),
        session_idle_ttl=idle_ttl,
        session_max_age=max_age,
    )


def _oidc(src: _Source) -> OidcConfig | None:
    issuer, cid, secret = (
        src.get("OIDC_ISSUER"),
        src.get("OIDC_CLIENT_ID"),
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
    return OidcConfig(issuer, cid, secret, src.get("OIDC_SCOPES") or "openid email profile")


def _github(src: _Source) -> GithubConfig | None:
    cid, secret = src.get("GITHUB_CLIENT_ID"), src.get("GITHUB_CLIENT_SECRET")
    if not (cid or secret):
        return None
    if not (cid and secret):
        raise ConfigError(
            "incomplete GitHub settings: HERMES_DASHBOARD_GITHUB_CLIENT_ID and "
            "HERMES_DASHBOARD_GITHUB_CLIENT_SECRET are both needed"
        )
    return GithubConfig(cid, secret)
