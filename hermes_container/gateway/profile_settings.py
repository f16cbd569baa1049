"""Load and validate what a gateway needs from a profile's config.yaml and .env.

Every problem is a one-line ConfigError (exit 78), so a supervised slot is parked
instead of restart-looping on a configuration that can never work.

config.yaml keys (all under `model:` / `gateway:`):
  model.base_url (required), model.name (required), model.api_key (optional; else
  HERMES_MODEL_API_KEY from .env, else from the environment; may be empty for
  local providers), model.connect_timeout_s (5), model.read_timeout_s (120),
  model.proxy (optional http(s) URL; else HTTPS_PROXY / HTTP_PROXY / ALL_PROXY from
  the environment unless NO_PROXY covers the provider), model.client (auto | fast |
  httpx; auto: the fast client, or httpx when a proxy applies), gateway.port
  (required), gateway.host (else $HERMES_GATEWAY_HOST, else 127.0.0.1),
  gateway.max_body_bytes (1 MiB), gateway.max_response_bytes (16 MiB),
  gateway.shutdown_grace_s (10), gateway.persona (always | unless-client-system).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from hermes_container.config import is_port, load_config
from hermes_container.envfile import read_env
from hermes_container.errors import ConfigError
from hermes_container.home import CONFIG_FILE, ENV_FILE, SOUL_FILE

DEFAULT_HOST = "127.0.0.1"
DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_READ_TIMEOUT_S = 120.0
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
DEFAULT_SHUTDOWN_GRACE_S = 10.0

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


def _string(section: Mapping[str, Any], key: str, label: str, where: Path) -> str | None:
    value = section.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {label} must be a non-empty string")
    return value.strip()


def _number(section: Mapping[str, Any], key: str, label: str, where: Path, default: float) -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{where}: {label} must be a positive number, not {value!r}")
    return float(value)


def _port(gateway: Mapping[str, Any], where: Path) -> int:
    port = gateway.get("port")
    if port is None:
        raise ConfigError(f"{where}: gateway.port is missing")
    if not is_port(port):
        raise ConfigError(f"{where}: gateway.port {port!r} is not a port number (1-65535)")
    return port


def _base_url(model: Mapping[str, Any], where: Path) -> str:
    url = _string(model, "base_url", "model.base_url", where)
    if url is None:
        raise ConfigError(f"{where}: model.base_url is missing (the provider's OpenAI-style URL)")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: model.base_url must be an http(s) URL, not {url!r}")
    return url


def redact_url(url: str) -> str:
    """scheme://host[:port] of a URL, for logs and errors: never userinfo or a path."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    if not parts.hostname:
        return "<unparseable URL>" if "@" in url else url
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def _client(model: Mapping[str, Any], where: Path) -> ClientChoice:
    value = model.get("client", "auto")
    choice = _CLIENTS.get(value) if isinstance(value, str) else None
    if choice is None:
        raise ConfigError(f"{where}: model.client must be auto, fast or httpx, not {value!r}")
    return choice


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


def _proxy_url(url: str, label: str, hint: str) -> str:
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number, or out of range
        valid = False
    if not valid:
        raise ConfigError(
            f"{label} must be an http(s) proxy URL like http://proxy.example:3128, "
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
    explicit = _string(model, "proxy", "model.proxy", where)
    if explicit is not None:
        if client == "fast":
            raise ConfigError(
                f"{where}: model.proxy needs model.client auto or httpx "
                "(the fast client does not go through proxies)"
            )
        return _proxy_url(explicit, f"{where}: model.proxy", ""), "model.proxy"
    found = env_proxy(base_url, env)
    if found is None:
        return None, ""
    url, name = found
    if client == "fast":
        return None, name  # the operator chose to go direct; select_client says so
    hint = f" (set model.proxy in {where}, or model.client: fast to ignore {name})"
    return _proxy_url(url, f"the environment's {name}", hint), name


def _byte_limit(gateway: Mapping[str, Any], key: str, where: Path, default: int) -> int:
    value = gateway.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{where}: gateway.{key} must be a positive integer")
    return value


def _persona(gateway: Mapping[str, Any], where: Path) -> Persona:
    value = gateway.get("persona", "always")
    choice = _PERSONAS.get(value) if isinstance(value, str) else None
    if choice is None:
        raise ConfigError(
            f"{where}: gateway.persona must be always or unless-client-system, not {value!r}"
        )
    return choice


def _read_soul(profile_dir: Path) -> str | None:
    try:
        text = (profile_dir / SOUL_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{profile_dir / SOUL_FILE}: cannot be read ({exc})") from None
    return text.strip() or None


def read_api_key(profile_dir: Path, environ: Mapping[str, str] | None = None) -> str:
    """The Bearer token clients must send: API_SERVER_KEY from .env, else the environment."""
    env = os.environ if environ is None else environ
    key = read_env(profile_dir / ENV_FILE).get("API_SERVER_KEY") or env.get("API_SERVER_KEY", "")
    if not key.strip():
        raise ConfigError(
            f"{profile_dir / ENV_FILE}: API_SERVER_KEY is missing or empty "
            "(clients authenticate with it; `hermes profile create` generates one)"
        )
    return key.strip()


def _header_safe(value: str, label: str, where: Path) -> str:
    # It goes into an HTTP header verbatim: no spaces, controls or non-ASCII.
    if any(not 0x21 <= ord(ch) <= 0x7E for ch in value):
        raise ConfigError(f"{where}: {label} contains characters not allowed in a key")
    return value


def load_settings(
    profile: str, profile_dir: Path, environ: Mapping[str, str] | None = None
) -> Settings:
    """Everything the gateway needs, validated; raises ConfigError naming the bad setting."""
    env = os.environ if environ is None else environ
    where = profile_dir / CONFIG_FILE
    if not where.is_file():
        raise ConfigError(f"{where} is missing")
    raw = load_config(profile_dir).raw
    model = _section(raw, "model", where)
    gateway = _section(raw, "gateway", where)
    dotenv = read_env(profile_dir / ENV_FILE)
    name = _string(model, "name", "model.name", where)
    if name is None:
        raise ConfigError(f"{where}: model.name is missing")
    host = _string(gateway, "host", "gateway.host", where)
    model_key = _string(model, "api_key", "model.api_key", where)
    base_url = _base_url(model, where)
    client = _client(model, where)
    proxy, proxy_from = _proxy(model, base_url, client, env, where)
    return Settings(
        profile=profile,
        profile_dir=profile_dir,
        host=host or env.get("HERMES_GATEWAY_HOST", "").strip() or DEFAULT_HOST,
        port=_port(gateway, where),
        model_base_url=base_url,
        model_name=name,
        soul=_read_soul(profile_dir),
        connect_timeout_s=_number(
            model, "connect_timeout_s", "model.connect_timeout_s", where, DEFAULT_CONNECT_TIMEOUT_S
        ),
        read_timeout_s=_number(
            model, "read_timeout_s", "model.read_timeout_s", where, DEFAULT_READ_TIMEOUT_S
        ),
        max_body_bytes=_byte_limit(gateway, "max_body_bytes", where, DEFAULT_MAX_BODY_BYTES),
        max_response_bytes=_byte_limit(
            gateway, "max_response_bytes", where, DEFAULT_MAX_RESPONSE_BYTES
        ),
        persona=_persona(gateway, where),
        shutdown_grace_s=_number(
            gateway, "shutdown_grace_s", "gateway.shutdown_grace_s", where, DEFAULT_SHUTDOWN_GRACE_S
        ),
        model_client=client,
        proxy_from=proxy_from,
        proxy=proxy,
        api_key=read_api_key(profile_dir, env),
        model_api_key=_header_safe(
            model_key
            or dotenv.get("HERMES_MODEL_API_KEY", "").strip()
            or env.get("HERMES_MODEL_API_KEY", "").strip(),
            "the model API key (model.api_key / HERMES_MODEL_API_KEY)",
            where,
        ),
    )
