"""Profiles on disk: create (optionally cloned), delete, list, describe.

All mutations of the set of profiles hold `$HERMES_HOME/.profiles.lock`, so two
concurrent `profile create` calls cannot both succeed or pick the same port.
A new profile is assembled in a dot-prefixed temp directory and renamed into
place, so a crash never leaves a half-made profile under its real name.
"""

from __future__ import annotations

import contextlib
import os

from hermes_container.config import (
    DASHBOARD_DEFAULT_PORT,
    INGRESS_DEFAULT_PORT,
    load_config,
    load_yaml,
    port_base,
    read_port,
    render_config,
)
from hermes_container.envfile import read_env, update_env, write_env
from hermes_container.errors import HermesError, UsageError
from hermes_container.fsutil import atomic_write_text, fsync_dir, locked
from hermes_container.home import (
    CONFIG_FILE,
    DEFAULT_PROFILE,
    ENV_FILE,
    SOUL_FILE,
    HermesHome,
)
from hermes_container.names import is_valid_profile_name, validate_profile_name
from hermes_container.record import Record
from hermes_container.state import read_state

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from hermes_container.config import ProfileConfig

DEFAULT_SOUL = """\
# Persona

You are Hermes, a helpful, precise and friendly assistant.
Answer clearly, say when you are unsure, and keep answers as short as the question allows.
"""

ENV_HEADER = (
    "Secrets of this profile. Keep this file private (mode 600).\n"
    "API_SERVER_KEY: the Bearer token clients must send to this profile's gateway.\n"
    "HERMES_MODEL_API_KEY: the key for the model provider in config.yaml."
)
TEMP_PREFIX = ".tmp-"


def new_api_key() -> str:
    import secrets  # lazy: pulls in hashlib, which read-only commands never need

    return "hk-" + secrets.token_urlsafe(32)


class ProfileInfo(Record):
    __slots__ = (
        "api_key_set",
        "desired_state",
        "gateway_state",
        "model_base_url",
        "model_name",
        "name",
        "path",
        "port",
    )

    def __init__(
        self,
        name: str,
        path: Path,
        port: int | None,
        model_base_url: str | None,
        model_name: str | None,
        api_key_set: bool,
        desired_state: str | None,
        gateway_state: str | None,
    ) -> None:
        self.name = name
        self.path = path
        self.port = port
        self.model_base_url = model_base_url
        self.model_name = model_name
        self.api_key_set = api_key_set
        self.desired_state = desired_state
        self.gateway_state = gateway_state

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "port": self.port,
            "model": {"base_url": self.model_base_url, "name": self.model_name},
            "api_key_set": self.api_key_set,
            "desired_state": self.desired_state,
            "gateway_state": self.gateway_state,
        }


def profile_exists(home: HermesHome, name: str) -> bool:
    if name == DEFAULT_PROFILE:
        return True
    path = home.profile_dir(name)
    return path.is_dir() and not path.is_symlink()


def require_profile(home: HermesHome, name: str) -> Path:
    """Validate `name` and return its directory, or raise if there is no such profile."""
    validate_profile_name(name)
    if not profile_exists(home, name):
        raise HermesError(f"profile {name!r} does not exist (see: hermes profile list)")
    return home.profile_dir(name)


def list_profiles(home: HermesHome) -> list[str]:
    """`default` first, then every valid named profile directory, sorted."""
    names = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(home.profiles_dir):
            if is_valid_profile_name(entry.name) and entry.is_dir(follow_symlinks=False):
                names.append(entry.name)
    return [DEFAULT_PROFILE, *sorted(n for n in names if n != DEFAULT_PROFILE)]


def _used_ports(home: HermesHome) -> set[int]:
    used = set()
    for name in list_profiles(home):
        try:
            port = read_port(home.profile_dir(name))  # load_config(...).port, without PyYAML
        except HermesError:
            port = None
        if port is not None:
            used.add(port)
    return used


def allocate_port(home: HermesHome) -> int:
    """The lowest port above the base that no profile uses (and not the dashboard's)."""
    base = port_base()
    used = _used_ports(home) | {base, DASHBOARD_DEFAULT_PORT, INGRESS_DEFAULT_PORT}
    for port in range(base + 1, 65536):
        if port not in used:
            return port
    raise HermesError("no free gateway port left above HERMES_GATEWAY_PORT_BASE")


def _write_profile_files(target: Path, *, config_text: str, env: dict[str, str], soul: str) -> None:
    atomic_write_text(target / CONFIG_FILE, config_text)
    write_env(target / ENV_FILE, env, header=ENV_HEADER)
    atomic_write_text(target / SOUL_FILE, soul)


def ensure_default_profile(home: HermesHome) -> None:
    """Give the default profile (the home itself) its files if it lacks them."""
    home.ensure_layout()
    root = home.root
    if not (root / CONFIG_FILE).exists():
        atomic_write_text(root / CONFIG_FILE, render_config(port_base()))
    env_path = root / ENV_FILE
    env = read_env(env_path)
    if not env.get("API_SERVER_KEY"):
        # A key added to what is there (an empty one replaced); the rest stays as written.
        updates = {"API_SERVER_KEY": new_api_key()}
        if "HERMES_MODEL_API_KEY" not in env:
            updates["HERMES_MODEL_API_KEY"] = ""
        update_env(env_path, updates, header=ENV_HEADER)
    if not (root / SOUL_FILE).exists():
        atomic_write_text(root / SOUL_FILE, DEFAULT_SOUL)


def _clone_sources(home: HermesHome, source: str, port: int) -> tuple[str, dict[str, str], str]:
    src_dir = require_profile(home, source)
    data = load_yaml(src_dir / CONFIG_FILE)
    gateway = data.get("gateway")
    data["gateway"] = {**(gateway if isinstance(gateway, dict) else {}), "port": port}
    import yaml

    config_text = "# Hermes profile configuration.\n" + yaml.safe_dump(data, sort_keys=False)
    env = read_env(src_dir / ENV_FILE)
    env["API_SERVER_KEY"] = new_api_key()  # a clone never shares its gateway key
    try:
        soul = (src_dir / SOUL_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        soul = DEFAULT_SOUL
    return config_text, env, soul


def _checked_model(
    base_url: str | None, model: str | None, model_api_key: str | None
) -> dict[str, str]:
    """The model settings given for a new profile, checked as `config set` checks them
    (config_schema); UsageError (exit 2) before anything is created."""
    from hermes_container.config_schema import KEYS, check_key_chars, check_value
    from hermes_container.errors import ConfigError

    values: dict[str, str] = {}
    try:
        if base_url is not None:
            values["model.base_url"] = check_value(KEYS["model.base_url"], base_url)
        if model is not None:
            values["model.name"] = check_value(KEYS["model.name"], model)
        if model_api_key is not None:
            if not model_api_key:
                raise ConfigError("refusing an empty model API key")
            check_key_chars(model_api_key, "the model API key")
    except ConfigError as exc:
        raise UsageError(exc.message) from None
    return values


def _with_model(config_text: str, values: dict[str, str]) -> str:
    """`config_text` with the model keys set, its comments kept (quoted as needed)."""
    if not values:
        return config_text
    from hermes_container.config_edit import edited_text

    return edited_text(config_text, values, CONFIG_FILE)


def create_profile(
    home: HermesHome,
    name: str,
    *,
    clone_from: str | None = None,
    base_url: str | None = None,
    model: str | None = None,
    model_api_key: str | None = None,
    soul: str | None = None,
) -> Path:
    """Create profile `name`; raise without touching anything if it exists or is invalid.

    `base_url`, `model`, `model_api_key` (into .env) and `soul` (SOUL.md) override the
    defaults, or what a clone copies; they are checked before anything is written."""
    validate_profile_name(name)
    if clone_from is not None:
        validate_profile_name(clone_from)
    model_values = _checked_model(base_url, model, model_api_key)
    if name == DEFAULT_PROFILE:
        raise HermesError("profile 'default' already exists (it is the home directory itself)")
    ensure_default_profile(home)
    with locked(home.profiles_lock):
        final = home.profile_dir(name)
        if os.path.lexists(final):
            raise HermesError(f"profile {name!r} already exists at {final}")
        port = allocate_port(home)
        if clone_from is not None:
            config_text, env, cloned_soul = _clone_sources(home, clone_from, port)
        else:
            config_text = render_config(port)
            env = {"API_SERVER_KEY": new_api_key(), "HERMES_MODEL_API_KEY": ""}
            cloned_soul = DEFAULT_SOUL
        config_text = _with_model(config_text, model_values)
        if model_api_key is not None:
            env["HERMES_MODEL_API_KEY"] = model_api_key
        temp = home.profiles_dir / f"{TEMP_PREFIX}{name}-{os.urandom(4).hex()}"
        temp.mkdir(mode=0o755)
        try:
            _write_profile_files(
                temp, config_text=config_text, env=env, soul=cloned_soul if soul is None else soul
            )
            os.rename(temp, final)
        except BaseException:
            import shutil

            shutil.rmtree(temp, ignore_errors=True)
            raise
        fsync_dir(home.profiles_dir)
    from hermes_container.events.append import record  # lazy: read-only commands skip it

    record(home.root, "profile.created", profile=name, port=port, cloned_from=clone_from)
    return final


def delete_profile(home: HermesHome, name: str) -> Path:
    """Remove a named profile's directory without following symlinks out of the home."""
    validate_profile_name(name)
    if name == DEFAULT_PROFILE:
        raise UsageError("the 'default' profile cannot be deleted")
    with locked(home.profiles_lock):
        path = home.profile_dir(name)
        if path.is_symlink():
            raise HermesError(f"{path} is a symlink; refusing to delete through it")
        if not path.is_dir():
            raise HermesError(f"profile {name!r} does not exist")
        # Rename first so a crash mid-delete leaves a temp dir, not a half-profile.
        doomed = home.profiles_dir / f"{TEMP_PREFIX}deleted-{name}-{os.urandom(4).hex()}"
        os.rename(path, doomed)
        import shutil  # lazy: read-only commands never need it

        shutil.rmtree(doomed)  # rmtree never follows symlinks inside the tree
        fsync_dir(home.profiles_dir)
    from hermes_container.events.append import record

    record(home.root, "profile.deleted", profile=name)
    return path


def describe_profile(home: HermesHome, name: str) -> ProfileInfo:
    path = require_profile(home, name)
    try:
        config: ProfileConfig | None = load_config(path)
    except HermesError:
        config = None
    model = config.raw.get("model") if config else None
    model = model if isinstance(model, dict) else {}
    state = read_state(path, warn=False)
    return ProfileInfo(
        name=name,
        path=path,
        port=config.port if config else None,
        model_base_url=model.get("base_url"),
        model_name=model.get("name"),
        api_key_set=bool(read_env(path / ENV_FILE).get("API_SERVER_KEY")),
        desired_state=state.desired_state,
        gateway_state=state.gateway_state,
    )


__all__ = [
    "create_profile",
    "delete_profile",
    "describe_profile",
    "ensure_default_profile",
    "list_profiles",
    "require_profile",
]
