"""Secrets from the environment, or from a file the environment names.

Every secret setting NAME may instead be given as NAME_FILE=/path (a Docker or
Kubernetes secret mounted as a file), read when the service starts:

- the file's content is the value, minus one trailing newline (what `echo x > f` or a
  YAML block scalar adds); anything else in it is part of the value;
- an unreadable, empty, oversized or non-UTF-8 file is a one-line ConfigError naming
  the variable and the path, never the content;
- NAME and NAME_FILE both set is a ConfigError naming both: which one wins would be a
  guess, and a guess about a secret is how the wrong key ends up in production.

Nothing here logs. ConfigError exits 78 (EX_CONFIG), which parks a supervised service
instead of restart-looping over a setting that cannot work; a command that reads a
secret as part of its own input turns it into a UsageError (exit 2).

Standard library only, cheap to import: the gateway, the ingress and the dashboard use
it at start.
"""

from __future__ import annotations

import os

from hermes_container.errors import ConfigError
from hermes_container.fsutil import UnreadableText, read_small_text

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

FILE_SUFFIX = "_FILE"
MAX_SECRET_FILE = 64 * 1024  # a key, a URL, a password hash: never more


def file_variable(name: str) -> str:
    """The name of NAME's file form."""
    return name + FILE_SUFFIX


def read_secret_file(variable: str, path: str | os.PathLike[str]) -> str:
    """The value held in `path` (named by setting `variable`): its content minus one
    trailing newline. ConfigError on one line naming `variable` and `path` otherwise."""
    shown = os.fspath(path)
    try:
        text = read_small_text(path, MAX_SECRET_FILE)
    except UnreadableText as exc:
        raise ConfigError(f"{variable}: {shown!r}: {exc}") from None
    if text.endswith("\n"):
        text = text[:-1].removesuffix("\r")
    if not text.strip():
        raise ConfigError(f"{variable}: {shown!r} is empty")
    return text


def secret_from_env(
    name: str, env: Mapping[str, str] | None = None, *, base: Path | None = None
) -> str | None:
    """NAME's value (surrounding blanks dropped), or the content of the file NAME_FILE
    names; None when neither is set. A relative NAME_FILE path is taken from `base`
    (a profile's directory, for its .env), else from the working directory."""
    environ = os.environ if env is None else env
    path = secret_file_path(name, environ, base=base)
    if path is not None:
        return read_secret_file(file_variable(name), path)
    return environ.get(name, "").strip() or None


def secret_file_path(
    name: str, env: Mapping[str, str] | None = None, *, base: Path | None = None
) -> str | None:
    """The path NAME_FILE names (for a caller that re-reads the file as it changes), or
    None when it is unset; ConfigError when NAME is set as well. Nothing is read."""
    environ = os.environ if env is None else env
    variable = file_variable(name)
    path = environ.get(variable, "").strip()
    if not path:
        return None
    if environ.get(name, "").strip():
        raise ConfigError(f"set {name} or {variable}, not both")
    where = os.path.expanduser(path)
    # A relative path from `base`; os.path.join keeps an absolute one as it is.
    return where if base is None else os.path.join(base, where)


def secret_is_set(name: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether NAME or NAME_FILE is set at all (nothing is read)."""
    environ = os.environ if env is None else env
    return bool(environ.get(name, "").strip() or environ.get(file_variable(name), "").strip())


__all__ = [
    "FILE_SUFFIX",
    "file_variable",
    "read_secret_file",
    "secret_file_path",
    "secret_from_env",
    "secret_is_set",
]
