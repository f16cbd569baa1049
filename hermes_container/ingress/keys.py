"""The ingress key: the one Bearer token that opens every profile.

Where it comes from: HERMES_INGRESS_KEY, or the file named by HERMES_INGRESS_KEY_FILE
(setting both is an error, as for every secret: secret_env.py); with neither,
$HERMES_HOME/ingress/key, generated on first use (directory 0700, file 0600) and replaced
by `hermes ingress key --rotate`. The running ingress re-reads its file when it changes
(a rotated generated key, a Kubernetes secret updated in place) without a restart.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from hermes_container.errors import ConfigError, HermesError
from hermes_container.fsutil import atomic_write_text, fsync_dir
from hermes_container.home import HermesHome
from hermes_container.ingress.stamp import Stamp, settled, stamp
from hermes_container.secret_env import file_variable, read_secret_file, secret_file_path

KEY_VARIABLE = "HERMES_INGRESS_KEY"
KEY_FILE_VARIABLE = file_variable(KEY_VARIABLE)
PREFIX = "hik-"


def default_key_file(home: HermesHome) -> Path:
    return home.root / "ingress" / "key"


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def _checked(value: str, where: str) -> str:
    key = value.strip()
    if not key:
        raise ConfigError(f"{where} is empty")
    # Compared with an Authorization header: printable ASCII without blanks only.
    if any(not 0x21 <= ord(ch) <= 0x7E for ch in key):
        raise ConfigError(f"{where} contains characters not allowed in a key")
    return key


def _read(path: Path, where: str) -> str:
    return _checked(read_secret_file(where, path), where)


def _generate(path: Path) -> None:
    """Write a new key only if none exists (two first starts never get different keys)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(new_key() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # fails if another process won the race: keep theirs
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(path.parent)


class KeySource:
    """The ingress key as configured; `current()` is cheap enough to call per request."""

    def __init__(self, home: HermesHome, environ: dict[str, str] | None = None) -> None:
        env = dict(os.environ if environ is None else environ)
        self.fixed: str | None = None
        self.path = default_key_file(home)
        self.origin = "generated"
        # Not secret_from_env: current() reads the file again whenever it changes.
        path = secret_file_path(KEY_VARIABLE, env)
        if path is not None:
            self.path = Path(path)
            self.origin = KEY_FILE_VARIABLE
        elif env.get(KEY_VARIABLE, "").strip():
            self.fixed = _checked(env[KEY_VARIABLE], KEY_VARIABLE)
            self.origin = KEY_VARIABLE
        self._stamp: Stamp | None = None
        self._key = b""

    def ensure(self) -> None:
        """Generate the key file if it is ours and missing; raise if it cannot be read."""
        if self.fixed is None and self.origin == "generated" and not self.path.exists():
            _generate(self.path)
        self.current()

    def current(self) -> bytes:
        if self.fixed is not None:
            return self.fixed.encode()
        now = stamp(str(self.path))
        if now is None or now != self._stamp or not settled(now):
            self._key = _read(self.path, self.origin).encode()
            self._stamp = now
        return self._key

    def rotate(self) -> str:
        if self.origin != "generated":
            raise HermesError(
                f"the ingress key comes from {self.origin}; change it there "
                "(only a generated key can be rotated)"
            )
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = new_key()
        atomic_write_text(self.path, key + "\n", 0o600)
        return key
