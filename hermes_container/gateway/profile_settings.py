"""Load and validate what a gateway needs from a profile's config.yaml and .env.

Every problem is a one-line ConfigError (exit 78), so a supervised slot is parked
instead of restart-looping on a configuration that can never work.

The keys (`model.*`, `gateway.*`), their defaults and the check of each value are the
catalogue's (config_schema.py); this module adds what spans keys and files: the proxy
(model.proxy, else the environment's unless NO_PROXY covers the provider; never with
model.client fast), the keys from .env (API_SERVER_KEY, HERMES_MODEL_API_KEY, else the
environment; each also as a NAME_FILE path, secret_env.py), gateway.host's fallback to
$HERMES_GATEWAY_HOST, and SOUL.md.
`settings_from_raw` is the whole validation of one candidate configuration: the
gateway runs it on the files at start and reload, `hermes config set|edit` on the
mapping it is about to write.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from hermes_container.config import load_config
from hermes_container.config_schema import (
    KEYS,
    check_key_chars,
    check_value,
    is_http_url,
    redact_url,
)
from hermes_container.envfile import read_env
from hermes_container.errors import ConfigError
from hermes_container.home import CONFIG_FILE, ENV_FILE, SOUL_FILE
from hermes_container.secret_env import secret_from_env

# The catalogue's defaults, named for the Settings fields below.
DEFAULT_HOST: str = KEYS["gateway.host"].default
DEFAULT_CONNECT_TIMEOUT_S: float = KEYS["model.connect_timeout_s"].default
DEFAULT_READ_TIMEOUT_S: float = KEYS["model.read_timeout_s"].default
DEFAULT_MAX_BODY_BYTES: int = KEYS["gateway.max_body_bytes"].default
DEFAULT_MAX_RESPONSE_BYTES: int = KEYS["gateway.max_response_bytes"].default
DEFAULT_SHUTDOWN_GRACE_S: float = KEYS["gateway.shutdown_grace_s"].default

ClientChoice = Literal["auto", "fast", "httpx"]
_CLIENTS: dict[str, ClientChoice] = {"auto": "auto", "fast": "fast", "httpx": "httpx"}
# always: SOUL.md first, then every message of the client (its own system messages
# too); unless-client-system: a client's system message replaces SOUL.md.
Persona = Literal["always", "unless-client-system"]
_PERSONAS: dict[str, Persona] = {
    "always": "always",
    "unless-client-system": "unless-client-system",
}


@dataclass(frozen=True)
class Settings:
    profile: str
    profile_dir: Path
    host: str
    port: int
    model_base_url: str
    model_name: str
    soul: str | None
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    persona: Persona = "always"
    shutdown_grace_s: float = DEFAULT_SHUTDOWN_GRACE_S
    model_client: ClientChoice = "auto"
    # Where the proxy came from ("model.proxy", "HTTPS_PROXY", ...); also set when
    # model.client is fast and the environment's proxy is therefore ignored.
    proxy_from: str = ""
    # Secrets stay out of repr() so a logged Settings never leaks them (a proxy URL
    # may carry user:password).
    api_key: str = field(default="", repr=False)
    model_api_key: str = field(default="", repr=False)
    proxy: str | None = field(default=None, repr=False)

    @property
    def completions_url(self) -> str:
        return self.model_base_url.rstrip("/") + "/chat/completions"


def _section(raw: Mapping[str, Any], name: str, where: Path) -> Mapping[str, Any]:
    value = raw.get(name, {})
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: '{name}' must be a mapping")
    return value


def _setting(section: Mapping[str, Any], name: str, where: Path) -> Any:
    """Key `name` of its section, checked by the catalogue (config_schema.check_value,
    the check `hermes config set` runs too); unset or null gives the key's default."""
    key = KEYS[name]
    value = section.get(key.leaf)
    if value is None:
        if key.required:
            raise ConfigError(f"{where}: {name} is missing ({key.help})")
        return key.default
    return check_value(key, value, where)


def _env_proxies(env: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """scheme -> (proxy, variable), by urllib.request.getproxies_environment's rules:
    names ending in _proxy in any case, then lower-case ones win (an empty one clears).
    Reimplemented only to read `env` instead of os.environ."""
    found: dict[str, tuple[str, str]] = {}
    for name, value in env.items():
        if value and name[-6:].lower() == "_proxy":
            found[name[:-6].lower()] = (value, name)
    for name, value in env.items():
        if name[-6:] == "_proxy":
            if value:
                found[name[:-6].lower()] = (value, name)
            else:
                found.pop(name[:-6].lower(), None)
    return found


def env_proxy(url: str, env: Mapping[str, str]) -> tuple[str, str] | None:
    """The environment's proxy for `url` and the variable that named it; None when no
    proxy is set for its scheme or NO_PROXY covers its host."""
    parts = urlsplit(url)
    proxies = _env_proxies(env)
    found = proxies.get(parts.scheme) or proxies.get("all")
    if found is None:
        return None
    # Imported only here: a gateway without proxy variables never loads urllib.request.
    # proxy_bypass_environment: undocumented, but in every Python 3; not in typeshed.
    from urllib.request import proxy_bypass_environment  # type: ignore[attr-defined]

    no_proxy = {"no": proxies["no"][0]} if "no" in proxies else {}
    hostport = parts.netloc.rpartition("@")[2]
    # The bare host too: urllib splits "[::1]:80" into "[::1]", which never matches ::1.
    if proxy_bypass_environment(hostport, no_proxy) or proxy_bypass_environment(
        parts.hostname or "", no_proxy
    ):
        return None
    value, name = found
    return (value if "://" in value else f"http://{value}"), name


def _env_proxy_url(url: str, name: str, hint: str) -> str:
    if not is_http_url(url):
        raise ConfigError(
            f"the environment's {name} must be {KEYS['model.proxy'].expects()}, "
            f"not {redact_url(url)!r}{hint}"
        )
    return url


def _proxy(
    model: Mapping[str, Any],
    base_url: str,
    client: ClientChoice,
    env: Mapping[str, str],
    where: Path,
) -> tuple[str | None, str]:
    """(proxy URL or None, where it came from): model.proxy, else the environment's."""
    explicit: str | None = _setting(model, "model.proxy", where)
    if explicit is not None:
        if client == "fast":
            raise ConfigError(
                f"{where}: model.proxy needs model.client auto or httpx "
                "(the fast client does not go through proxies)"
            )
        return explicit, "model.proxy"
    found = env_proxy(base_url, env)
    if found is None:
        return None, ""
    url, name = found
    if client == "fast":
        return None, name  # the operator chose to go direct; select_client says so
    hint = f" (set model.proxy in {where}, or model.client: fast to ignore {name})"
    return _env_proxy_url(url, name, hint), name


def _read_soul(profile_dir: Path) -> str | None:
    try:
        text = (profile_dir / SOUL_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{profile_dir / SOUL_FILE}: cannot be read ({exc})") from None
    return text.strip() or None


def _secret(name: str, dotenv: Mapping[str, str], env: Mapping[str, str], profile_dir: Path) -> str:
    """Secret `name` from the profile's .env, else from the environment; in either, the
    NAME_FILE form is read instead (a relative path in .env from the profile's
    directory). "" when neither has it; ConfigError naming where it went wrong."""
    try:
        found = secret_from_env(name, dotenv, base=profile_dir)
    except ConfigError as exc:
        raise ConfigError(f"{profile_dir / ENV_FILE}: {exc.message}") from None
    if found is None:
        try:
            found = secret_from_env(name, env)
        except ConfigError as exc:
            raise ConfigError(f"the environment: {exc.message}") from None
    return found or ""


def _api_key(dotenv: Mapping[str, str], env: Mapping[str, str], env_file: Path) -> str:
    key = _secret("API_SERVER_KEY", dotenv, env, env_file.parent)
    if not key.strip():
        raise ConfigError(
            f"{env_file}: API_SERVER_KEY is missing or empty "
            "(clients authenticate with it; `hermes profile create` generates one)"
        )
    return key.strip()


def read_api_key(profile_dir: Path, environ: Mapping[str, str] | None = None) -> str:
    """The Bearer token clients must send: API_SERVER_KEY from .env, else the environment."""
    env = os.environ if environ is None else environ
    return _api_key(read_env(profile_dir / ENV_FILE), env, profile_dir / ENV_FILE)


def load_settings(
    profile: str, profile_dir: Path, environ: Mapping[str, str] | None = None
) -> Settings:
    """Everything the gateway needs, validated; raises ConfigError naming the bad setting."""
    where = profile_dir / CONFIG_FILE
    if not where.is_file():
        raise ConfigError(f"{where} is missing")
    raw = load_config(profile_dir).raw
    dotenv = read_env(profile_dir / ENV_FILE)
    return settings_from_raw(profile, profile_dir, raw, dotenv, environ)


def settings_from_raw(
    profile: str,
    profile_dir: Path,
    raw: Mapping[str, Any],
    dotenv: Mapping[str, str],
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """The Settings of config.yaml's mapping `raw` and .env's `dotenv` (SOUL.md is read
    from `profile_dir`); raises ConfigError naming the first bad setting."""
    env = os.environ if environ is None else environ
    where = profile_dir / CONFIG_FILE
    model = _section(raw, "model", where)
    gateway = _section(raw, "gateway", where)
    name: str = _setting(model, "model.name", where)
    # Unset, gateway.host falls back to the environment, not straight to its default.
    host: str | None = None
    if gateway.get("host") is not None:
        host = _setting(gateway, "gateway.host", where)
    model_key: str | None = _setting(model, "model.api_key", where)
    base_url: str = _setting(model, "model.base_url", where)
    client = _CLIENTS[_setting(model, "model.client", where)]
    proxy, proxy_from = _proxy(model, base_url, client, env, where)
    return Settings(
        profile=profile,
        profile_dir=profile_dir,
        host=host or env.get("HERMES_GATEWAY_HOST", "").strip() or DEFAULT_HOST,
        port=_setting(gateway, "gateway.port", where),
        model_base_url=base_url,
        model_name=name,
        soul=_read_soul(profile_dir),
        connect_timeout_s=_setting(model, "model.connect_timeout_s", where),
        read_timeout_s=_setting(model, "model.read_timeout_s", where),
        max_body_bytes=_setting(gateway, "gateway.max_body_bytes", where),
        max_response_bytes=_setting(gateway, "gateway.max_response_bytes", where),
        persona=_PERSONAS[_setting(gateway, "gateway.persona", where)],
        shutdown_grace_s=_setting(gateway, "gateway.shutdown_grace_s", where),
        model_client=client,
        proxy_from=proxy_from,
        proxy=proxy,
        api_key=_api_key(dotenv, env, profile_dir / ENV_FILE),
        model_api_key=check_key_chars(
            model_key or _secret("HERMES_MODEL_API_KEY", dotenv, env, profile_dir).strip(),
            f"{where}: the model API key (model.api_key / HERMES_MODEL_API_KEY)",
        ),
    )


__all__ = [
    "ClientChoice",
    "Persona",
    "Settings",
    "env_proxy",
    "load_settings",
    "read_api_key",
    "redact_url",  # config_schema's, here for the gateway's modules
    "settings_from_raw",
]
