"""Where everything lives: HERMES_HOME resolution and the on-disk layout.

`$HERMES_HOME` is the `default` profile itself; named profiles live in
`$HERMES_HOME/profiles/<name>/`; logs in `$HERMES_HOME/logs/`.
"""

from __future__ import annotations

import os
from pathlib import Path

from hermes_container.record import Record

DEFAULT_PROFILE = "default"

CONFIG_FILE = "config.yaml"
ENV_FILE = ".env"
SOUL_FILE = "SOUL.md"
SOUL_MAX_BYTES = 256 * 1024  # a persona is a prompt: anything larger is a mistake
STATE_FILE = "gateway_state.json"
SESSIONS_DB = "sessions.db"
GATEWAY_LOCK = "gateway.lock"
GATEWAY_PID = "gateway.pid"


def resolve_home(env: dict[str, str] | None = None) -> Path:
    """HERMES_HOME from the environment, else `~/.hermes` (the image sets `/opt/data`)."""
    environ = os.environ if env is None else env
    value = environ.get("HERMES_HOME", "").strip()
    if value:
        return Path(value).expanduser().absolute()
    return Path.home() / ".hermes"


class HermesHome(Record):
    """One HERMES_HOME: the default profile's directory, and where everything else is."""

    __slots__ = ("root",)

    def __init__(self, root: Path) -> None:
        self.root = root

    def __hash__(self) -> int:
        return hash(self.root)

    @classmethod
    def from_env(cls) -> HermesHome:
        return cls(resolve_home())

    @property
    def profiles_dir(self) -> Path:
        return self.root / "profiles"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def run_dir(self) -> Path:
        """Runtime files of a host-mode supervisor (`hermes supervise`)."""
        return self.root / "run"

    @property
    def boot_log(self) -> Path:
        return self.logs_dir / "container-boot.log"

    @property
    def auth_log(self) -> Path:
        return self.logs_dir / "dashboard-auth.log"

    @property
    def profiles_lock(self) -> Path:
        return self.root / ".profiles.lock"

    def profile_dir(self, name: str) -> Path:
        """Directory of profile `name`; the name must already be validated."""
        if name == DEFAULT_PROFILE:
            return self.root
        return self.profiles_dir / name

    def gateway_log_dir(self, name: str) -> Path:
        return self.logs_dir / "gateways" / name

    def ensure_layout(self) -> None:
        """Create the top-level directories (idempotent)."""
        for directory in (self.root, self.profiles_dir, self.logs_dir, self.logs_dir / "gateways"):
            directory.mkdir(parents=True, exist_ok=True)
