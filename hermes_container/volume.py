"""Repair ownership and modes under $HERMES_HOME without following anything.

`init-volume` runs this as root at every container start, over a bind mount that a host
user may be writing at the same time. A path-based tool (`find ... -exec chown`) resolves
every path again when it acts, so a directory swapped for a symlink in between makes
root change a file outside the volume. Here no path is resolved twice: the walk holds a
file descriptor for every directory it is in, opens each entry relative to its parent's
fd with O_NOFOLLOW, looks at the entry through that fd and changes it through that fd.
Whatever is renamed or swapped meanwhile, a change can only land on the inode we looked
at, which we reached from the top without crossing a symlink or another filesystem.

Rules (the same for root in init-volume and for the home's owner at boot):
- ownership: only entries not owned by uid:gid change; a symlink itself is re-owned;
- modes: regular files and directories lose their group/other bits (`& ~0o077`);
  symlinks, sockets, fifos and devices are left as they are;
- symlinks are never followed, other filesystems (another st_dev) never entered;
- a non-directory with several hard links is left alone and counted: another name of
  it may be a file outside the volume;
- directories deeper than `max_depth` are not entered (counted), so a hostile deep tree
  cannot exhaust file descriptors or the stack;
- an error on one entry (it vanished, EPERM) is counted and the walk goes on.

Linux only (O_PATH, AT_EMPTY_PATH, /proc/self/fd). Imports only the standard library,
ctypes only when ownership changes. init-volume's command line (which prints what a walk
did) is hermes_container.commands.volume_repair.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

MAX_DEPTH = 256
PRIVATE_MASK = 0o077  # group and other permission bits

# <fcntl.h> on Linux; the os module does not export these two.
_AT_SYMLINK_NOFOLLOW = 0x100
_AT_EMPTY_PATH = 0x1000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class Summary:
    """What one walk did and left alone."""

    owned: int = 0  # entries given to uid:gid
    moded: int = 0  # entries that lost group/other permission bits
    linked: int = 0  # hard-linked non-directories that needed a change, left alone
    other_fs: int = 0  # mount points of other filesystems, not entered or changed
    too_deep: int = 0  # directories past max_depth whose contents were not visited
    errors: int = 0  # entries that could not be looked at or changed
    first_error: str = ""
    max_depth: int = MAX_DEPTH

    def note_error(self, path: str, exc: OSError) -> None:
        self.errors += 1
        if not self.first_error:
            # repr(): a hostile name must not break the one-line message (newlines,
            # undecodable bytes)
            self.first_error = f"{path!r}: {exc.strerror or exc}"

    def messages(self, where: str, owner: str = "") -> list[tuple[bool, str]]:
        """(is_warning, text) lines worth showing; nothing when nothing happened."""
        lines: list[tuple[bool, str]] = []
        if self.owned:
            lines.append((False, f"gave {self.owned} entries under {where} to {owner}"))
        if self.moded:
            lines.append(
                (False, f"removed group/other permissions from {self.moded} entries under {where}")
            )
        if self.other_fs:
            lines.append((False, f"did not enter {self.other_fs} other filesystems under {where}"))
        if self.linked:
            lines.append(
                (
                    True,
                    f"left {self.linked} hard-linked entries under {where} with their owner and "
                    "mode (another name may be outside the volume); fix them yourself if the "
                    "gateways need them",
                )
            )
        if self.too_deep:
            lines.append(
                (
                    True,
                    f"did not enter {self.too_deep} directories more than {self.max_depth} levels "
                    f"below {where}",
                )
            )
        if self.errors:
            lines.append(
                (True, f"could not repair {self.errors} entries under {where} ({self.first_error})")
            )
        return lines


_fchownat: Callable[[int, bytes, int, int, int], int] | None = None


def _chown_fd(fd: int, uid: int, gid: int) -> None:
    """chown exactly the inode behind `fd`, even an O_PATH fd of a symlink.

    os.fchown refuses O_PATH fds and os.chown has no AT_EMPTY_PATH, hence libc's
    fchownat(fd, "", ..., AT_EMPTY_PATH): no name is looked up at all.
    """
    import ctypes  # only here: the mode repair alone never needs it

    global _fchownat
    if _fchownat is None:
        func = ctypes.CDLL(None, use_errno=True).fchownat
        func.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint, ctypes.c_int)
        func.restype = ctypes.c_int
        _fchownat = func
    if _fchownat(fd, b"", uid, gid, _AT_EMPTY_PATH | _AT_SYMLINK_NOFOLLOW) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class _Walk:
    def __init__(
        self, owner: tuple[int, int] | None, modes: bool, max_depth: int, dev: int
    ) -> None:
        self.owner, self.modes, self.max_depth, self.dev = owner, modes, max_depth, dev
        self.summary = Summary(max_depth=max_depth)

    def wants(self, st: os.stat_result) -> bool:
        return self._wants_owner(st) or self._wants_mode(st)

    def _wants_owner(self, st: os.stat_result) -> bool:
        return self.owner is not None and (st.st_uid, st.st_gid) != self.owner

    def _wants_mode(self, st: os.stat_result) -> bool:
        kind = stat.S_IFMT(st.st_mode)
        return (
            self.modes and kind in (stat.S_IFREG, stat.S_IFDIR) and bool(st.st_mode & PRIVATE_MASK)
        )

    def fix(self, fd: int, st: os.stat_result, path: str) -> None:
        """Apply both rules to the inode behind `fd`, whose fstat is `st`."""
        try:
            # Mode first: a chown by root clears set-id bits, and a mode computed from
            # the earlier fstat must not put them back.
            if self._wants_mode(st):
                mode = stat.S_IMODE(st.st_mode) & ~PRIVATE_MASK
                if stat.S_ISDIR(st.st_mode):
                    os.fchmod(fd, mode)  # directories are opened for reading: a real fd
                else:
                    # fchmod refuses O_PATH fds; the /proc magic link reaches exactly the
                    # inode the fd holds, whatever its name has become since.
                    os.chmod(f"/proc/self/fd/{fd}", mode)
                self.summary.moded += 1
            if self.owner is not None and self._wants_owner(st):
                _chown_fd(fd, *self.owner)
                self.summary.owned += 1
        except OSError as exc:
            self.summary.note_error(path, exc)

    def directory(self, dfd: int, path: str, depth: int) -> None:
        """Visit the entries of the directory open as `dfd` (already fixed itself)."""
        with os.scandir(dfd) as entries:
            if depth >= self.max_depth:
                if next(entries, None) is not None:
                    self.summary.too_deep += 1
                return
            for entry in entries:
                child = f"{path}/{entry.name}"
                try:
                    self.entry(dfd, entry.name, child, depth + 1)
                except OSError as exc:
                    self.summary.note_error(child, exc)

    def entry(self, dfd: int, name: str, path: str, depth: int) -> None:
        # A cheap look first; every decision is made again on the fd we act through.
        seen = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        if seen.st_dev != self.dev:
            self.summary.other_fs += 1  # a mount point: neither changed nor entered
            return
        if stat.S_ISDIR(seen.st_mode):
            fd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
            try:
                st = _same(fd, seen, path)
                self.fix(fd, st, path)
                self.directory(fd, path, depth)
            finally:
                os.close(fd)
            return
        if not self.wants(seen):
            return
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        try:
            st = _same(fd, seen, path)
            if not self.wants(st):
                pass
            elif st.st_nlink > 1:
                self.summary.linked += 1  # another name of it may be outside the volume
            else:
                self.fix(fd, st, path)
        finally:
            os.close(fd)


def _same(fd: int, seen: os.stat_result, path: str) -> os.stat_result:
    """fstat `fd`; it must be the inode looked at by name a moment ago (same type too)."""
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino, stat.S_IFMT(st.st_mode)) != (
        seen.st_dev,
        seen.st_ino,
        stat.S_IFMT(seen.st_mode),
    ):
        raise OSError(0, "replaced while being repaired, left alone", path)
    return st


def repair(
    root: str | os.PathLike[str],
    *,
    owner: tuple[int, int] | None = None,
    modes: bool = False,
    max_depth: int = MAX_DEPTH,
) -> Summary:
    """Give everything under `root` to `owner` (uid, gid) and/or make it private.

    `root` itself must be a directory, not a symlink to one (OSError otherwise, the
    only error raised); it is repaired like the rest.
    """
    top = os.open(root, _DIR_FLAGS)
    try:
        st = os.fstat(top)
        walk = _Walk(owner, modes, max_depth, st.st_dev)
        path = os.fspath(root)
        walk.fix(top, st, path)
        try:
            walk.directory(top, path, 0)
        except OSError as exc:
            walk.summary.note_error(path, exc)
    finally:
        os.close(top)
    return walk.summary


def make_private(root: str | os.PathLike[str]) -> Summary:
    """The boot-time mode repair for homes without init-volume (`hermes supervise`,
    `docker run --user`): run as the home's owner, never raises for a bad home."""
    try:
        return repair(root, modes=True)
    except OSError as exc:
        summary = Summary()
        summary.note_error(os.fspath(root), exc)
        return summary
