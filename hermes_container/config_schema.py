"""The catalogue of config.yaml keys: what each one is, and the one check of its value.

Every key something in this project reads from a profile's config.yaml is listed here
with its type, default, range or choices and a one-line help. Two sorts:

- `model.*`, `gateway.*`: read by each profile's gateway (gateway/profile_settings.py
  builds its Settings through `check_value`, so the gateway's validation and
  `hermes config set`'s are the same code);
- `kanban.*`, `jobs.*`: read by the dispatcher from the default profile's config.yaml
  only (kanban/settings.py, kanban/jobs/settings.py); the ranges here are the values
  those parsers accept without a warning (tests/unit/test_config_schema.py holds the
  two to each other).

Standard library only (plus our own leaf modules): the gateway imports this at start.
"""

from __future__ import annotations

import math
from urllib.parse import urlsplit

from hermes_container.errors import ConfigError, UsageError
from hermes_container.names import validate_profile_name
from hermes_container.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from pathlib import Path
    from typing import Any

# Kinds of value. Each has one parser for command-line text and one check.
STRING = "string"  # a non-empty string (surrounding blanks dropped)
URL = "url"  # an http(s) URL with a host
PROXY = "proxy"  # an http(s) proxy URL; may carry user:password, so shown redacted
PORT = "port"  # a TCP port, 1-65535
INT = "int"
FLOAT = "float"  # an int or a float, finite
CHOICE = "choice"
PROFILE = "profile"  # a profile name (names.py's rule)

# Which profiles read a key: every profile's gateway, or the default profile only.
EVERY_PROFILE = "profile"
DEFAULT_ONLY = "default"

MiB = 1024 * 1024
CONFIG_SOURCE = "config.yaml"  # where a value in force came from (see Effective)


class Key(Record):
    """One config.yaml key. `default` None: no default (required, or off when unset)."""

    __slots__ = (
        "choices",
        "default",
        "env",
        "exclusive_minimum",
        "help",
        "kind",
        "maximum",
        "minimum",
        "name",
        "required",
        "restart",
        "scope",
        "secret",
    )

    def __init__(
        self,
        name: str,
        kind: str,
        help: str,
        *,
        default: Any = None,
        minimum: float | None = None,
        maximum: float | None = None,
        exclusive_minimum: bool = False,
        choices: tuple[str, ...] = (),
        required: bool = False,
        secret: bool = False,
        env: str | None = None,
        restart: bool = False,
        scope: str = EVERY_PROFILE,
    ) -> None:
        self.name = name
        self.kind = kind
        self.help = help
        self.default = default
        self.minimum = minimum
        self.maximum = maximum
        self.exclusive_minimum = exclusive_minimum
        self.choices = choices
        self.required = required
        self.secret = secret  # never printed; set it in .env (`env`) instead
        self.env = env  # the .env / environment variable read when the key is unset
        self.restart = restart  # a running gateway applies it only when restarted
        self.scope = scope

    @property
    def section(self) -> str:
        return self.name.partition(".")[0]

    @property
    def leaf(self) -> str:
        return self.name.partition(".")[2]

    def expects(self) -> str:
        """What a valid value is, as the tail of "<key> must be ..."."""
        if self.kind == CHOICE:
            return " or ".join([", ".join(self.choices[:-1]), self.choices[-1]])
        if self.kind == INT:
            if self.maximum is not None:
                return f"an integer from {self.minimum:g} to {self.maximum:g}"
            return "a positive integer"
        if self.kind == FLOAT:
            if self.exclusive_minimum:
                return "a positive number"
            return f"a number of seconds >= {self.minimum:g}"
        if self.kind == PORT:
            return "a port number (1-65535)"
        if self.kind == URL:
            return "an http(s) URL"
        if self.kind == PROXY:
            return "an http(s) proxy URL like http://proxy.example:3128"
        if self.kind == PROFILE:
            return "a profile name"
        return "a non-empty string"

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.name,
            "type": self.kind,
            "default": self.default,
            "expects": self.expects(),
            "choices": list(self.choices) or None,
            "required": self.required,
            "secret": self.secret,
            "env": self.env,
            "restart": self.restart,
            "profiles": "default only" if self.scope == DEFAULT_ONLY else "every profile",
            "help": self.help,
        }


def _seconds(name: str, help: str, default: float, minimum: float) -> Key:
    return Key(name, FLOAT, help, default=default, minimum=minimum, scope=DEFAULT_ONLY)


_CATALOGUE = (
    # -- the gateway of every profile (gateway/profile_settings.py) --------------------
    Key("model.base_url", URL, "the provider's OpenAI-compatible URL", required=True),
    Key("model.name", STRING, "the model the provider is asked for", required=True),
    Key(
        "model.api_key",
        STRING,
        "the provider's key; kept in .env as HERMES_MODEL_API_KEY instead",
        secret=True,
        env="HERMES_MODEL_API_KEY",
    ),
    Key(
        "model.connect_timeout_s",
        FLOAT,
        "seconds to connect to the provider",
        default=5.0,
        minimum=0,
        exclusive_minimum=True,
    ),
    Key(
        "model.read_timeout_s",
        FLOAT,
        "seconds to wait for the provider's next bytes",
        default=120.0,
        minimum=0,
        exclusive_minimum=True,
    ),
    Key(
        "model.proxy",
        PROXY,
        "proxy to the provider; unset: HTTPS_PROXY/HTTP_PROXY/ALL_PROXY unless NO_PROXY",
    ),
    Key(
        "model.client",
        CHOICE,
        "HTTP client to the provider; auto: the fast one, httpx when a proxy applies",
        default="auto",
        choices=("auto", "fast", "httpx"),
    ),
    Key(
        "gateway.port", PORT, "the gateway's port, unique per profile", required=True, restart=True
    ),
    Key(
        "gateway.host",
        STRING,
        "address the gateway listens on; unset: $HERMES_GATEWAY_HOST, else 127.0.0.1",
        default="127.0.0.1",
        env="HERMES_GATEWAY_HOST",
        restart=True,
    ),
    Key(
        "gateway.max_body_bytes",
        INT,
        "largest request body accepted",
        default=MiB,
        minimum=1,
    ),
    Key(
        "gateway.max_response_bytes",
        INT,
        "largest provider response relayed",
        default=16 * MiB,
        minimum=1,
    ),
    Key(
        "gateway.shutdown_grace_s",
        FLOAT,
        "seconds in-flight requests get to finish on stop",
        default=10.0,
        minimum=0,
        exclusive_minimum=True,
    ),
    Key(
        "gateway.persona",
        CHOICE,
        "always: SOUL.md first; unless-client-system: a client's system message replaces it",
        default="always",
        choices=("always", "unless-client-system"),
    ),
    # -- the dispatcher, from the default profile only (kanban/settings.py) ------------
    Key(
        "kanban.default_assignee",
        PROFILE,
        "profile that gets tasks created without an assignee",
        scope=DEFAULT_ONLY,
    ),
    Key(
        "kanban.max_in_progress",
        INT,
        "running tasks on the board at once",
        default=8,
        minimum=1,
        scope=DEFAULT_ONLY,
    ),
    Key(
        "kanban.max_in_progress_per_profile",
        INT,
        "running tasks per profile at once; unset: no cap",
        minimum=1,
        scope=DEFAULT_ONLY,
    ),
    Key(
        "kanban.failure_limit",
        INT,
        "counted failures before a task is blocked",
        default=2,
        minimum=1,
        scope=DEFAULT_ONLY,
    ),
    _seconds("kanban.dispatch_interval_seconds", "longest sleep between ticks", 60.0, 0.1),
    _seconds("kanban.claim_ttl_seconds", "a claim not renewed this long is reclaimed", 900.0, 5.0),
    _seconds("kanban.retry_backoff_seconds", "first retry delay; doubles per failure", 30.0, 0.0),
    _seconds("kanban.retry_backoff_max_seconds", "longest retry delay", 3600.0, 0.0),
    _seconds("kanban.rate_limit_cooldown_seconds", "wait after a 429 without Retry-After", 60.0, 0),
    _seconds("kanban.request_timeout_seconds", "one task's request", 1800.0, 0.1),
    # -- the jobs, from the default profile only (kanban/jobs/settings.py) -------------
    Key(
        "jobs.max_concurrent",
        INT,
        "job runs active on the board at once; unset: no cap",
        minimum=1,
        scope=DEFAULT_ONLY,
    ),
    _seconds(
        "jobs.gateway_grace_seconds", "a step whose gateway stays down this long fails", 300.0, 1.0
    ),
    Key(
        "jobs.delivery_max_attempts",
        INT,
        "POSTs of one result before it is dead-lettered",
        default=8,
        minimum=1,
        maximum=100,
        scope=DEFAULT_ONLY,
    ),
    _seconds("jobs.delivery_timeout_seconds", "one delivery POST", 10.0, 0.5),
    _seconds("jobs.delivery_retry_delay_seconds", "first wait after a failed POST", 10.0, 0.1),
    _seconds("jobs.delivery_retry_max_delay_seconds", "longest wait between POSTs", 600.0, 0.1),
)

KEYS: dict[str, Key] = {key.name: key for key in _CATALOGUE}
SECTIONS = tuple(dict.fromkeys(key.section for key in _CATALOGUE))


def keys_for(profile_is_default: bool) -> list[Key]:
    """The keys a profile's config.yaml may hold, in catalogue order."""
    return [k for k in _CATALOGUE if profile_is_default or k.scope == EVERY_PROFILE]


def lookup(name: str, *, profile_is_default: bool = True) -> Key:
    """The catalogue entry of dotted key `name`; ConfigError naming the closest key when
    there is none, or when the key is not read from this profile's file."""
    key = KEYS.get(name)
    if key is None:
        import difflib  # only for the error: a typo is rare

        close = difflib.get_close_matches(name, KEYS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else " (see: hermes config list)"
        raise ConfigError(f"unknown key {_shown(name)!r}{hint}")
    if key.scope == DEFAULT_ONLY and not profile_is_default:
        raise ConfigError(
            f"{name} is read from the default profile's config.yaml only "
            f"(use: hermes -p default config ...)"
        )
    return key


def _shown(text: str) -> str:
    return text if len(text) <= 60 else text[:60] + "..."


def _prefix(where: Path | str | None) -> str:
    return f"{where}: " if where else ""


def mask_userinfo(url: str) -> str:
    """`url` with any password replaced by ***: what may be printed of a configured URL."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable URL>" if "@" in url else url
    if password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


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


def is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number or out of range, a broken [IPv6]
        return False


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def check_value(key: Key, value: object, where: Path | str | None = None) -> Any:
    """`value` (as YAML gives it) checked against `key`: the normalised value, or a
    one-line ConfigError "<where>: <key> must be ..., not <value>"."""
    label = _prefix(where) + key.name
    if key.kind in (STRING, URL, PROXY, PROFILE):
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{label} must be a non-empty string")
        text = value.strip()
        if key.kind == URL and not is_http_url(text):
            raise ConfigError(f"{label} must be {key.expects()}, not {mask_userinfo(text)!r}")
        if key.kind == PROXY and not is_http_url(text):
            raise ConfigError(f"{label} must be {key.expects()}, not {redact_url(text)!r}")
        if key.kind == PROFILE:
            try:
                validate_profile_name(text)
            except UsageError as exc:
                raise ConfigError(f"{label}: {exc.message}") from None
        return text
    if key.kind == PORT:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise ConfigError(f"{label} {value!r} is not {key.expects()}")
        return value
    if key.kind == CHOICE:
        if not isinstance(value, str) or value not in key.choices:
            raise ConfigError(f"{label} must be {key.expects()}, not {value!r}")
        return value
    number = _number(value)
    if key.kind == INT and (number is None or not isinstance(value, int)):
        number = None
    if number is not None and key.minimum is not None:
        low = number <= key.minimum if key.exclusive_minimum else number < key.minimum
        if low or (key.maximum is not None and number > key.maximum):
            number = None
    if number is None:
        raise ConfigError(f"{label} must be {key.expects()}, not {value!r}")
    return value if key.kind == INT else number


def check_key_chars(value: str, label: str) -> str:
    """`value` unchanged if it can go into an HTTP header verbatim (printable ASCII, no
    blanks), as every key we send or compare must; else a ConfigError naming `label`."""
    if any(not 0x21 <= ord(ch) <= 0x7E for ch in value):
        raise ConfigError(f"{label} contains characters not allowed in a key")
    return value


def parse_text(key: Key, text: str) -> Any:
    """A value typed on the command line, as `key`'s kind says (not as free YAML:
    `yes` stays a string, `08` is not octal); checked like a value from the file.
    Numbers keep the form they were typed in (5, not 5.0)."""
    if key.kind in (PORT, INT, FLOAT):
        stripped = text.strip()
        value: object = text
        try:
            value = int(stripped, 10)
        except ValueError:
            if key.kind == FLOAT:
                try:
                    value = float(stripped)
                except ValueError:
                    value = text
        check_value(key, value)
        return value
    return check_value(key, text)


def display(key: Key, value: object) -> str:
    """How `value` of `key` may be shown: never a secret, never a proxy's password."""
    if key.secret:
        return "(set)" if value else "(not set)"
    if value is None:
        return "-"
    if key.kind in (URL, PROXY) and isinstance(value, str):
        return mask_userinfo(value)
    if isinstance(value, float) and value.is_integer():
        return f"{value:g}"
    return str(value)


class Effective(Record):
    """A key's value in force for a profile and where it comes from: "config.yaml",
    ".env", "environment", "default", or "unset"; `problem` when the file's value would
    be refused."""

    __slots__ = ("key", "problem", "source", "value")

    def __init__(self, key: Key, value: object, source: str, problem: str | None = None) -> None:
        self.key = key
        self.value = value
        self.source = source
        self.problem = problem

    @property
    def shown(self) -> str:
        return display(self.key, self.value)


def effective_values(
    raw: Mapping[str, Any],
    dotenv: Mapping[str, str],
    env: Mapping[str, str],
    *,
    profile_is_default: bool,
) -> list[Effective]:
    """Every key this profile reads, with the value in force (secrets included: show
    them only through `display`)."""
    found = []
    for key in keys_for(profile_is_default):
        present, value = dig(raw, key.name)
        if present and value is not None:
            try:
                check_value(key, value)
                problem = None
            except ConfigError as exc:
                problem = exc.message
            found.append(Effective(key, value, CONFIG_SOURCE, problem))
            continue
        # A secret may sit in .env; every `env` name may come from the environment.
        # Either may name a file instead (NAME_FILE): not read here, only said.
        from_dotenv = dotenv.get(key.env, "").strip() if key.env and key.secret else ""
        from_env = env.get(key.env, "").strip() if key.env else ""
        file_name = f"{key.env}_FILE" if key.env else ""
        dotenv_file = dotenv.get(file_name, "").strip() if key.env and key.secret else ""
        env_file = env.get(file_name, "").strip() if key.env else ""
        if from_dotenv:
            found.append(Effective(key, from_dotenv, ".env"))
        elif dotenv_file:
            found.append(Effective(key, dotenv_file, f".env {file_name}"))
        elif from_env:
            found.append(Effective(key, from_env, "environment"))
        elif env_file:
            found.append(Effective(key, env_file, f"environment {file_name}"))
        elif key.default is not None:
            found.append(Effective(key, key.default, "default"))
        else:
            found.append(Effective(key, None, "missing" if key.required else "unset"))
    return found


def dig(raw: Mapping[str, Any], name: str) -> tuple[bool, Any]:
    """(present, value) of dotted key `name` in a parsed config mapping."""
    node: Any = raw
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def leaves(raw: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every (dotted key, value) of a parsed mapping; a non-empty mapping is descended."""
    for name, value in raw.items():
        dotted = f"{prefix}{name}"
        if isinstance(value, dict) and value:
            yield from leaves(value, dotted + ".")
        else:
            yield dotted, value


__all__ = [
    "KEYS",
    "Key",
    "check_key_chars",
    "check_value",
    "dig",
    "display",
    "effective_values",
    "is_http_url",
    "keys_for",
    "leaves",
    "lookup",
    "parse_text",
    "redact_url",
]
