"""Which profiles exist, and for each where its gateway listens and which key opens it.

Looked up on every request, so a profile created or deleted is routable or gone at
once, without restarting the ingress. What is read is cached behind file stamps
(stamp.py): the set of names behind the profiles directory's, each profile behind its
config.yaml's and .env's. A request then costs three stat() calls; a file is read
again only after it changed.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from pathlib import Path

from hermes_container.config import is_port, load_config
from hermes_container.envfile import read_env
from hermes_container.errors import ConfigError, HermesError
from hermes_container.gateway.readiness import probe_host
from hermes_container.home import CONFIG_FILE, DEFAULT_PROFILE, ENV_FILE, HermesHome
from hermes_container.ingress.stamp import Stamp, settled, stamp
from hermes_container.names import is_valid_profile_name
from hermes_container.secret_env import secret_from_env

API_KEY = "API_SERVER_KEY"


class Profile:
    """One profile as the ingress sees it; `problem` says why it cannot be reached."""

    __slots__ = ("api_key", "created", "dir", "host", "name", "port", "problem", "stamps")

    def __init__(self, name: str, directory: str) -> None:
        self.name, self.dir = name, directory
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.api_key = b""
        self.created = 0
        self.problem: str | None = None
        self.stamps: tuple[Stamp | None, Stamp | None] = (None, None)

    def opened_by(self, token: bytes) -> bool:
        return bool(self.api_key) and hmac.compare_digest(token, self.api_key)


def _load(name: str, directory: str, env: Mapping[str, str], fallback_key: str) -> Profile:
    profile = Profile(name, directory)
    config = os.path.join(directory, CONFIG_FILE)
    profile.stamps = (stamp(config), stamp(os.path.join(directory, ENV_FILE)))
    # The gateway's own rules (profile_settings): .env first (its _FILE form too), then
    # the environment's, read once when the ingress starts.
    try:
        key = secret_from_env(API_KEY, read_env(Path(directory, ENV_FILE)), base=Path(directory))
    except ConfigError as exc:
        profile.problem = f"{os.path.join(directory, ENV_FILE)}: {exc.message}"
        return profile
    profile.api_key = (key or fallback_key).encode()
    try:
        raw = load_config(Path(directory)).raw
    except HermesError as exc:
        profile.problem = exc.message
        return profile
    gateway = raw.get("gateway")
    gateway = gateway if isinstance(gateway, dict) else {}
    port = gateway.get("port")
    if not is_port(port):
        profile.problem = f"{config}: gateway.port is missing or invalid"
    else:
        profile.port = port
    host = gateway.get("host")
    if not isinstance(host, str) or not host.strip():
        host = env.get("HERMES_GATEWAY_HOST", "")
    profile.host = probe_host(host.strip())
    if profile.stamps[0] is not None:
        profile.created = profile.stamps[0][2] // 1_000_000_000
    return profile


class Directory:
    """The profiles of one HERMES_HOME, looked up per request."""

    def __init__(self, home: HermesHome, environ: Mapping[str, str] | None = None) -> None:
        self.root = str(home.root)
        self.profiles_dir = str(home.profiles_dir)
        self.env = dict(os.environ if environ is None else environ)
        # ConfigError (the ingress exits 78) when API_SERVER_KEY and its _FILE form clash.
        self.fallback_key = secret_from_env(API_KEY, self.env) or ""
        self._names_stamp: Stamp | None = None
        self._names: tuple[str, ...] = ()
        self._profiles: dict[str, Profile] = {}

    def directory_of(self, name: str) -> str:
        return self.root if name == DEFAULT_PROFILE else os.path.join(self.profiles_dir, name)

    def names(self) -> tuple[str, ...]:
        """`default` first, then every profile directory, sorted (as `profile list`)."""
        now = stamp(self.profiles_dir)
        if now != self._names_stamp or not settled(now) or not self._names:
            found = []
            try:
                with os.scandir(self.profiles_dir) as entries:
                    for entry in entries:
                        if (
                            entry.name != DEFAULT_PROFILE
                            and is_valid_profile_name(entry.name)
                            and entry.is_dir(follow_symlinks=False)
                        ):
                            found.append(entry.name)
            except (FileNotFoundError, NotADirectoryError):
                pass
            self._names = (DEFAULT_PROFILE, *sorted(found))
            self._names_stamp = now
            for gone in set(self._profiles) - set(self._names):
                del self._profiles[gone]
        return self._names

    def get(self, name: str) -> Profile | None:
        """The profile called `name`, or None when there is none."""
        if name not in self.names():
            return None
        return self._fresh(name)

    def all(self) -> list[Profile]:
        return [self._fresh(name) for name in self.names()]

    def _fresh(self, name: str) -> Profile:
        cached = self._profiles.get(name)
        directory = self.directory_of(name)
        if cached is not None:
            stamps = (
                stamp(os.path.join(directory, CONFIG_FILE)),
                stamp(os.path.join(directory, ENV_FILE)),
            )
            if stamps == cached.stamps and all(settled(s) for s in stamps):
                return cached
        profile = _load(name, directory, self.env, self.fallback_key)
        self._profiles[name] = profile
        return profile
