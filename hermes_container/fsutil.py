"""Small filesystem primitives: atomic writes and advisory locks.

Files are private to their owner by default (0600): what lives under $HERMES_HOME holds
keys, transcripts and logs, and an explicit fchmod would otherwise ignore the umask.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path
    from typing import Any


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to `path` so readers see either the old or the new file, never a mix.

    The temp file lives in the same directory (same filesystem, so rename is atomic),
    is fsync'd before the rename, and the directory is fsync'd after it.
    """
    directory = path.parent
    fd, tmp_name = _create_temp(directory, path.name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    fsync_dir(directory)


def _create_temp(directory: Path, name: str) -> tuple[int, str]:
    """A new private `.<name>.<random>.tmp` beside the target (like tempfile.mkstemp,
    without importing tempfile and random on every CLI run)."""
    while True:
        tmp_name = os.path.join(directory, f".{name}.{os.urandom(6).hex()}.tmp")
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
            return os.open(tmp_name, flags, 0o600), tmp_name
        except FileExistsError:
            continue


def atomic_write_text(path: Path, text: str, mode: int = 0o600) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def atomic_write_json(path: Path, obj: Any, mode: int = 0o600) -> None:
    import json  # here: modules that only read (`gateway status`) import fsutil too

    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", mode)


def fsync_dir(directory: Path) -> None:
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


@contextlib.contextmanager
def locked(lock_path: Path, *, blocking: bool = True) -> Iterator[int]:
    """Hold an exclusive flock on `lock_path` (created if missing) for the block.

    Raises BlockingIOError when `blocking` is False and someone else holds it.
    """
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        yield fd
    finally:
        os.close(fd)


class UnreadableText(Exception):
    """A small text file that cannot be used; `str()` says why in a few words."""


def read_small_text(path: str | os.PathLike[str], limit: int) -> str:
    """The whole of a small UTF-8 text file (personas, secrets, declarations): at most
    `limit` bytes are read. UnreadableText("cannot read it: ...", "larger than N bytes",
    "not UTF-8 text") otherwise, for the caller to prefix with what the file was."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise UnreadableText(f"cannot read it: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise UnreadableText(f"larger than {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UnreadableText("not UTF-8 text") from None
