"""The multiprocess metrics directory: where it lives, who may write it, and its upkeep.

prometheus-client's multiprocess mode keeps each process's values in mmap files named
`<type>_<pid>.db` in one directory, and a scrape merges every file. Here:

- The directory is `$HERMES_HOME/run/metrics/<generation>/`, 0700, owned by the home's
  owner. The generation is a hash of the boot id and the pid namespace, so a container
  restart (new pid namespace, pids counting from 1 again) starts a fresh directory
  instead of a new process adding to a dead one's live gauges; an older generation
  with no live writer left is removed.
- Only a process whose effective uid owns the home creates or changes anything in it
  (the gateways, the dispatcher and the dashboard all run as that owner); root never
  writes below a directory another user controls.
- Liveness is a lock, not a pid check: every writing process holds an exclusive flock
  on `<pid>.lock` for its whole life, taken before its first `.db` file exists. Whoever
  can take that lock knows the process is gone (the kernel dropped it), even when its
  pid has been reused since.
- Retiring a dead process: its live gauges are deleted (`mark_process_dead`), its
  counter and histogram files move into the current archive directory (one rename
  each, so every value is always in exactly one counted file). Once the archive holds
  more than COMPACT_AT files they are summed into one file per type, written to a new
  archive directory which replaces the old one by a single directory rename: a crash
  at any point leaves every count exactly once. The scraper holds `sweep.lock` while
  it reads, so it never sees a file half-way through a move.

Who cleans: the dashboard, before every scrape (it waits for the lock), and every
writing process once when it starts (only if nobody else is sweeping at that moment).
Without a dashboard the gateways' own sweeps keep the directory bounded.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import importlib
import logging
import os
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hermes_container.deferred_init import defer_init

log = logging.getLogger("hermes.metrics")

METRICS_DIR = "metrics"
SWEEP_LOCK = "sweep.lock"
ARCHIVE_PREFIX = "archive-"
TEMP_PREFIX = ".tmp-archive-"
COMPACT_AT = 8  # archived files before they are summed into one per type
FILE_BYTES = 64 * 1024  # what prometheus-client maps first; reserved up front (below)
ADDITIVE_TYPES = ("counter", "histogram", "summary")  # values that sum across processes
LOCK_WAIT_S = 2.0


def library(module: str) -> Any:
    """A module of prometheus-client, imported on first use (those used here are
    untyped: calls through it are checked by the tests, not by mypy).

    Without the package's __init__, which loads the library's exposition servers
    (http.server, urllib.request, wsgiref: 1.2 MB of every gateway, which never serves
    a scrape); `import prometheus_client` elsewhere still gets all of it (deferred_init).
    """
    defer_init("prometheus_client")
    return importlib.import_module(f"prometheus_client.{module}")


def metrics_root(home: Path) -> Path:
    return home / "run" / METRICS_DIR


def generation() -> str:
    """Names this boot of this pid namespace: what a pid is unique within."""
    parts = []
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(os.readlink("/proc/self/ns/pid"))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def generation_dir(home: Path) -> Path:
    return metrics_root(home) / generation()


def owned_dir(path: Path, uid: int | None = None) -> bool:
    """True when `path` is a real directory (not a symlink) owned by `uid`."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == (os.geteuid() if uid is None else uid)


def may_write(home: Path, euid: int | None = None) -> bool:
    """Only the home's owner writes metrics files (root only in a root-owned home)."""
    uid = os.geteuid() if euid is None else euid
    return owned_dir(home, uid)


def ensure_dir(home: Path) -> Path | None:
    """The generation directory, created 0700 if needed; None if this process may not
    write there (not the home's owner, or a path component is not ours)."""
    uid = os.geteuid()
    if not may_write(home, uid):
        return None
    path = home
    for part in ("run", METRICS_DIR, generation()):
        path = path / part
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        if not owned_dir(path, uid):
            log.warning(
                "metrics: %s is not a directory of ours; this process writes no metrics", path
            )
            return None
        if part != "run":  # ours alone; `run` may hold others' files (hermes supervise)
            os.chmod(path, 0o700)
    return path


def reserve(path: Path, size: int = FILE_BYTES) -> None:
    """Create `path` (0600) with `size` bytes allocated on disk.

    prometheus-client maps its files with a plain truncate, which leaves a hole: a write
    into it on a full disk is a SIGBUS that kills the process. Allocating the blocks
    first turns a full disk into an OSError here, while metrics are being set up.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        if os.fstat(fd).st_size < size:
            os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)


class ProcessLock:
    """This process's `<pid>.lock`, held until the process ends (or close())."""

    def __init__(self, directory: Path, pid: int | None = None) -> None:
        self.directory = directory
        self.pid = os.getpid() if pid is None else pid
        self.path = directory / f"{self.pid}.lock"
        self.fd = -1

    def acquire(self, wait: float = LOCK_WAIT_S) -> bool:
        """Take the lock (a sweep retiring our pid's predecessor may hold it briefly)."""
        deadline = time.monotonic() + wait
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.01)
                continue
            try:
                current = os.stat(self.path, follow_symlinks=False).st_ino
            except FileNotFoundError:
                current = -1
            if current == os.fstat(fd).st_ino:
                self.fd = fd
                return True
            os.close(fd)  # a sweep removed the file we locked: lock the new one

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@contextlib.contextmanager
def sweep_lock(directory: Path, wait: float | None) -> Iterator[bool]:
    """Hold `sweep.lock`; yields False (not held) if it could not be had within `wait`
    seconds (None: do not wait at all)."""
    fd = os.open(
        directory / SWEEP_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
    )
    try:
        deadline = time.monotonic() + (wait or 0.0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if wait is None or time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.005)
        yield True
    finally:
        os.close(fd)


def _pid_of(name: str) -> int | None:
    """The pid in `<type>_<pid>.db`, `gauge_<mode>_<pid>.db` or `<pid>.lock`."""
    stem = name.removesuffix(".db").removesuffix(".lock")
    last = stem.rsplit("_", 1)[-1]
    return int(last) if last.isdigit() else None


def _writers(directory: Path) -> set[int]:
    pids = set()
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.endswith((".db", ".lock")):
                pid = _pid_of(entry.name)
                if pid is not None:
                    pids.add(pid)
    return pids


def current_archive(directory: Path) -> Path | None:
    best: tuple[int, Path] | None = None
    with os.scandir(directory) as entries:
        for entry in entries:
            seq = entry.name.removeprefix(ARCHIVE_PREFIX)
            if not (entry.name.startswith(ARCHIVE_PREFIX) and seq.isdigit() and entry.is_dir()):
                continue
            if best is None or int(seq) > best[0]:
                best = (int(seq), Path(entry.path))
    return None if best is None else best[1]


def _archive_for_moves(directory: Path) -> Path:
    archive = current_archive(directory)
    if archive is None:
        archive = directory / f"{ARCHIVE_PREFIX}0"
        os.mkdir(archive, 0o700)
    return archive


def _retire(directory: Path, pid: int) -> None:
    """Move a dead process's additive files into the archive and drop its live gauges."""
    library("multiprocess").mark_process_dead(pid, str(directory))
    archive: Path | None = None
    for kind in ADDITIVE_TYPES:
        source = directory / f"{kind}_{pid}.db"
        if not source.exists():
            continue
        archive = archive or _archive_for_moves(directory)
        os.rename(source, archive / f"{kind}_{pid}-{time.time_ns()}.db")


def retire_dead(directory: Path) -> list[int]:
    """Retire every process whose lock is free; the pids retired."""
    retired = []
    for pid in sorted(_writers(directory)):
        path = directory / f"{pid}.lock"
        # O_CREAT: a process starting with this pid right now then waits for us (it
        # needs this lock before it touches its files) instead of racing the moves.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # alive (this process too, if it writes: its lock is another fd)
            _retire(directory, pid)
            os.unlink(path)
            retired.append(pid)
        finally:
            os.close(fd)
    return retired


def _entry_size(key: str) -> int:
    encoded = len(key.encode("utf-8"))
    return 4 + encoded + (8 - (encoded + 4) % 8) + 16  # mmap_dict's layout


def _write_summed(path: Path, values: dict[str, float]) -> None:
    needed = 8 + sum(_entry_size(key) for key in values)
    reserve(path, max(FILE_BYTES, -(-needed // 4096) * 4096))  # no growth, no holes
    mmapped = library("mmap_dict").MmapedDict(str(path))
    try:
        for key, value in values.items():
            mmapped.write_value(key, value, 0.0)
    finally:
        mmapped.close()


def compact(directory: Path, at: int = COMPACT_AT) -> bool:
    """Sum the archive's files into one per type once it holds more than `at` files."""
    read_all = library("mmap_dict").MmapedDict.read_all_values_from_file
    archive = current_archive(directory)
    if archive is None:
        return False
    files = sorted(glob.glob(str(archive / "*.db")))
    if len(files) <= at:
        return False
    sums: dict[str, dict[str, float]] = {}
    for name in files:
        kind = os.path.basename(name).split("_", 1)[0]
        into = sums.setdefault(kind, {})
        for key, value, _ts, _pos in read_all(name):
            into[key] = into.get(key, 0.0) + value
    seq = int(archive.name.removeprefix(ARCHIVE_PREFIX)) + 1
    temp = directory / f"{TEMP_PREFIX}{seq}-{os.getpid()}"
    os.mkdir(temp, 0o700)
    try:
        for kind, values in sums.items():
            _write_summed(temp / f"{kind}_archive.db", values)
        os.rename(temp, directory / f"{ARCHIVE_PREFIX}{seq}")  # the one switch-over
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    _remove_old(directory)
    return True


def _remove_old(directory: Path) -> None:
    """Archives older than the current one (a crash may leave one) and stray temps."""
    keep = current_archive(directory)
    with os.scandir(directory) as entries:
        old = [
            Path(e.path)
            for e in entries
            if e.is_dir(follow_symlinks=False)
            and (e.name.startswith(TEMP_PREFIX) or e.name.startswith(ARCHIVE_PREFIX))
            and Path(e.path) != keep
        ]
    for path in old:
        shutil.rmtree(path, ignore_errors=True)


def _generation_in_use(path: Path) -> bool:
    try:
        locks = [p for p in path.iterdir() if p.name.endswith(".lock") and p.name != SWEEP_LOCK]
    except OSError:
        return True
    for lock in locks:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
    return False


def remove_old_generations(directory: Path) -> list[str]:
    """Delete the sibling generations (earlier boots of the container) nobody writes."""
    removed = []
    uid = os.geteuid()
    with os.scandir(directory.parent) as entries:
        others = [Path(e.path) for e in entries if e.name != directory.name]
    for path in others:
        if owned_dir(path, uid) and not _generation_in_use(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed


def sweep(directory: Path, *, wait: float | None) -> bool:
    """Retire dead writers, compact the archive, drop old generations. False when the
    sweep lock was busy (someone else is sweeping) or the directory is not ours."""
    if not owned_dir(directory, os.geteuid()):
        return False
    with sweep_lock(directory, wait) as held:
        if not held:
            return False
        sweep_locked(directory)
    return True


def sweep_locked(directory: Path) -> None:
    retired = retire_dead(directory)
    if retired:
        log.debug("metrics: retired the files of %d ended process(es)", len(retired))
    if not compact(directory):
        _remove_old(directory)  # what an interrupted compaction may have left
    remove_old_generations(directory)


def metric_files(directory: Path) -> list[str]:
    """The files a scrape merges: the live processes' and the current archive's."""
    files = glob.glob(str(directory / "*.db"))
    archive = current_archive(directory)
    if archive is not None:
        files.extend(glob.glob(str(archive / "*.db")))
    return files
