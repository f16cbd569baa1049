"""The ownership and mode repair of $HERMES_HOME (hermes_container.volume, its command line
hermes_container.commands.volume_repair, init-volume).

Real files, real chown/chmod, real mounts: most tests need root (files owned by other
uids, tmpfs and bind mounts). Without root they skip, unless HERMES_REQUIRE_ROOT=1 (CI,
which runs as root) makes that a failure.

The racing-writer test swaps a directory for a symlink to a directory outside the volume
the moment the repair opens it (inotify IN_OPEN), as a host user writing the bind mount
could, and checks that nothing outside the volume changed hands.

Script tests run the real init-volume script (root/etc/s6-overlay/s6-rc.d/init-volume/run,
its `. /opt/hermes/libexec/lib.sh` line pointed at the helpers in the checkout) with
HERMES_USER set to a system account whose primary group has its name (`daemon` on Debian),
as a CI machine has no `hermes`.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import grp
import os
import pwd
import select
import stat
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hermes_container.volume import MAX_DEPTH, Summary, make_private, repair

REPO = Path(__file__).resolve().parents[2]
INIT_VOLUME = REPO / "root" / "etc" / "s6-overlay" / "s6-rc.d" / "init-volume" / "run"
LIB = REPO / "root" / "opt" / "hermes" / "libexec" / "lib.sh"
LIB_LINE = ". /opt/hermes/libexec/lib.sh"
VENV_HERMES = Path(sys.executable).parent / "hermes"  # the script runs python beside it
OTHER = 4242  # an owner that needs repair
TARGET = (4343, 4343)  # what the Python entry is asked to give things to
IN_OPEN = 0x20
ID_VARIABLES = ("PUID", "PGID", "HERMES_UID", "HERMES_GID")  # init-volume's remap inputs


def require_root(what: str = "this test") -> None:
    if os.geteuid() == 0:
        return
    reason = f"{what} needs root (files of other uids, mounts)"
    if os.environ.get("HERMES_REQUIRE_ROOT") == "1":
        pytest.fail(f"{reason}; HERMES_REQUIRE_ROOT=1 forbids skipping")
    pytest.skip(reason)


def system_user() -> tuple[str, int, int]:
    """An existing non-root account whose primary group has its name and gid, so that
    init-volume (without PUID/PGID) finds nothing to remap and leaves /etc/passwd be."""
    for entry in pwd.getpwall():
        if not 0 < entry.pw_uid < 1000 or entry.pw_gid == 0:
            continue
        with contextlib.suppress(KeyError):
            if grp.getgrnam(entry.pw_name).gr_gid == entry.pw_gid:
                return entry.pw_name, entry.pw_uid, entry.pw_gid
    pytest.fail("no system account with a same-named primary group (Debian has daemon:daemon)")


def init_volume_script(directory: Path) -> Path:
    """The real init-volume script, copied into directory with its helpers line pointed at
    the checkout's lib.sh (the image's path, /opt/hermes/libexec, is not on this machine)."""
    text = INIT_VOLUME.read_text()
    assert text.count(LIB_LINE) == 1, "init-volume's helpers line changed; update this test"
    script = directory / "init-volume"
    script.write_text(text.replace(LIB_LINE, f". {LIB}"))
    script.chmod(0o755)
    return script


def run_init_volume(home: Path, user: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ID_VARIABLES}
    environ.update(HERMES_HOME=str(home), HERMES_USER=user, HERMES_BIN=str(VENV_HERMES), **env)
    script = init_volume_script(home.parent)
    return subprocess.run([str(script)], capture_output=True, text=True, env=environ, timeout=120)


def run_entry(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hermes_container.commands.volume_repair", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def make(path: Path, mode: int, owner: int | None = OTHER, *, directory: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        path.mkdir()
    else:
        path.write_text(path.name)
    os.chmod(path, mode)
    if owner is not None:
        os.chown(path, owner, owner)
    return path


def owner_mode(path: Path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


@pytest.fixture
def mounts() -> Iterator[Callable[..., None]]:
    """mount(*args): run `mount` as root; everything mounted is unmounted afterwards."""
    require_root("mounting")
    points: list[str] = []

    def mount(*args: str) -> None:
        proc = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            reason = f"mount {' '.join(args)} failed: {proc.stderr.strip()}"
            if os.environ.get("HERMES_REQUIRE_ROOT") == "1":
                pytest.fail(reason)
            pytest.skip(reason)
        points.append(args[-1])

    yield mount
    for point in reversed(points):
        subprocess.run(["umount", point], check=False, timeout=30)


# -- the racing writer ----------------------------------------------------------------


class Racer(threading.Thread):
    """Waits for the first open of `watched` itself, then swaps it for a symlink to
    `victim`: rename the real directory away, symlink in its place."""

    def __init__(self, watched: Path, victim: Path) -> None:
        super().__init__(daemon=True)
        self.watched, self.victim = watched, victim
        self.swapped = threading.Event()
        self.stop = threading.Event()
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if libc.inotify_add_watch(self.fd, bytes(watched), IN_OPEN) < 0:
            err = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(err, f"inotify_add_watch {watched} failed")

    def run(self) -> None:
        try:
            while True:
                if not select.select([self.fd], [], [], 0.05)[0]:
                    if self.stop.is_set():  # only once every queued event was seen
                        return
                    continue
                data = os.read(self.fd, 65536)
                offset = 0
                while offset < len(data):
                    _wd, mask, _cookie, length = struct.unpack_from("iIII", data, offset)
                    offset += 16 + length
                    if mask & IN_OPEN and length == 0:  # the directory itself, not a child
                        os.rename(self.watched, self.watched.with_name("d.moved"))
                        os.symlink(self.victim, self.watched)
                        self.swapped.set()
                        return
        finally:
            os.close(self.fd)

    def __enter__(self) -> Racer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join(10)


def race_setup(tmp_path: Path) -> tuple[Path, Path]:
    victim = make(tmp_path / "victim", 0o755, owner=0, directory=True)
    make(victim / "secret", 0o644, owner=0)
    home = make(tmp_path / "home", 0o755, directory=True)
    make(home / "d", 0o755, directory=True)
    make(home / "d" / "secret", 0o644)
    return home, victim


@pytest.mark.parametrize("via", ["init-volume", "python-entry"])
def test_racing_writer_cannot_redirect_the_repair_outside_the_volume(
    tmp_path: Path, via: str
) -> None:
    require_root()
    home, victim = race_setup(tmp_path)
    run: Callable[[], subprocess.CompletedProcess[str]]
    if via == "init-volume":
        user, uid, gid = system_user()
        target = (uid, gid)
        run = functools.partial(run_init_volume, home, user)
    else:
        target = TARGET
        run = functools.partial(run_entry, "repair", "--owner", "4343:4343", "--modes", str(home))

    with Racer(home / "d", victim) as racer:
        proc = run()
    assert proc.returncode == 0, proc.stderr
    assert racer.swapped.is_set(), "the repair never opened d: the race did not happen"
    assert (home / "d").is_symlink()

    # Nothing outside the volume changed: not through d, not through the symlink.
    assert owner_mode(victim / "secret") == (0, 0, 0o644), "root's file outside changed"
    assert owner_mode(victim) == (0, 0, 0o755)
    # The real directory (renamed while the repair held it) was repaired all the same.
    assert owner_mode(home / "d.moved") == (*target, 0o700)
    assert owner_mode(home / "d.moved" / "secret") == (*target, 0o600)


# -- what is followed, entered, changed ---------------------------------------------


def test_symlinks_are_never_followed_and_the_link_itself_is_reowned(tmp_path: Path) -> None:
    require_root()
    outside = make(tmp_path / "outside", 0o755, owner=0, directory=True)
    make(outside / "file", 0o644, owner=0)
    home = make(tmp_path / "home", 0o700, owner=None, directory=True)
    os.symlink(outside / "file", home / "to-file")
    os.symlink(outside, home / "to-dir")
    os.symlink("nowhere", home / "dangling")
    for link in ("to-file", "to-dir", "dangling"):
        os.lchown(home / link, OTHER, OTHER)

    summary = repair(home, owner=TARGET, modes=True)

    for link in ("to-file", "to-dir", "dangling"):
        assert (home / link).is_symlink()
        assert os.lstat(home / link)[4:6] == TARGET  # st_uid, st_gid of the link itself
    assert owner_mode(outside) == (0, 0, 0o755)
    assert owner_mode(outside / "file") == (0, 0, 0o644)
    assert summary.owned == 4  # the home itself and the three links
    assert summary.moded == 0 and summary.errors == 0


def test_another_filesystem_is_neither_entered_nor_changed(
    tmp_path: Path, mounts: Callable[..., None]
) -> None:
    home = make(tmp_path / "home", 0o755, directory=True)
    point = make(home / "mnt", 0o755, directory=True)
    mounts("-t", "tmpfs", "-o", "mode=0755,uid=4242,gid=4242", "hermes-test", str(point))
    make(point / "inner", 0o644)
    make(home / "file", 0o644)

    summary = repair(home, owner=TARGET, modes=True)

    assert owner_mode(point) == (OTHER, OTHER, 0o755)  # the mounted root, untouched
    assert owner_mode(point / "inner") == (OTHER, OTHER, 0o644)
    assert owner_mode(home / "file") == (*TARGET, 0o600)
    assert summary.other_fs == 1
    assert "did not enter 1 other filesystems" in " ".join(t for _, t in summary.messages("h"))


def test_hard_linked_files_are_left_alone_and_counted(tmp_path: Path) -> None:
    require_root()
    outside = make(tmp_path / "outside", 0o644, owner=0)
    home = make(tmp_path / "home", 0o700, owner=None, directory=True)
    os.link(outside, home / "link-out")  # another name of a file outside the volume
    make(home / "twice", 0o644)
    os.link(home / "twice", home / "twice-again")  # both names inside: still left alone
    make(home / "single", 0o644)

    proc = run_entry("repair", "--owner", "4343:4343", "--modes", str(home))

    assert proc.returncode == 0, proc.stderr
    assert owner_mode(outside) == (0, 0, 0o644)
    assert owner_mode(home / "twice") == (OTHER, OTHER, 0o644)
    assert owner_mode(home / "single") == (*TARGET, 0o600)
    warning = f"init-volume: warning: left 3 hard-linked entries under {home}"
    assert warning in proc.stderr
    assert proc.stdout.splitlines() == [
        f"init-volume: gave 2 entries under {home} to 4343:4343",
        f"init-volume: removed group/other permissions from 1 entries under {home}",
    ]


def test_the_depth_is_bounded(tmp_path: Path) -> None:
    home = tmp_path / "home"
    deepest = home.joinpath(*["d"] * (MAX_DEPTH + 3))
    deepest.mkdir(parents=True)
    # A file in the directory at depth k is itself at depth k + 1 (the home is depth 0).
    level = {k: home.joinpath(*["d"] * k) for k in (MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1)}
    for directory in level.values():
        directory.chmod(0o755)  # whatever umask an earlier test left in this process
        make(directory / "f", 0o644, owner=None)

    summary = repair(home, modes=True)

    assert stat.S_IMODE(os.stat(level[MAX_DEPTH - 1] / "f").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(level[MAX_DEPTH] / "f").st_mode) == 0o644  # depth 257
    assert stat.S_IMODE(os.stat(level[MAX_DEPTH]).st_mode) == 0o700  # depth 256 itself
    assert stat.S_IMODE(os.stat(level[MAX_DEPTH + 1]).st_mode) != 0o700
    assert summary.too_deep == 1 and summary.errors == 0
    assert any("more than 256 levels" in text for _, text in summary.messages(str(home)))


def test_errors_on_single_entries_are_counted_and_the_walk_goes_on(
    tmp_path: Path, mounts: Callable[..., None]
) -> None:
    home = make(tmp_path / "home", 0o700, directory=True)
    frozen = make(home / "a-frozen", 0o755, directory=True)
    make(frozen / "file", 0o644)
    make(home / "b-file", 0o644)
    mounts("--bind", str(frozen), str(frozen))
    mounts("-o", "remount,bind,ro", str(frozen))  # same st_dev, every change is EROFS

    summary = repair(home, owner=TARGET, modes=True)

    assert summary.errors == 2  # the frozen directory and its file
    assert "Read-only file system" in summary.first_error
    assert owner_mode(frozen / "file") == (OTHER, OTHER, 0o644)
    assert owner_mode(home / "b-file") == (*TARGET, 0o600)


# -- modes ------------------------------------------------------------------------------


def test_files_and_directories_become_private(tmp_path: Path) -> None:
    """make_private is what the boot reconciler runs as the home's owner: no root here."""
    outside = make(tmp_path / "outside.txt", 0o644, owner=None)
    home = make(tmp_path / "home", 0o755, owner=None, directory=True)
    make(home / "profiles", 0o755, owner=None, directory=True)
    make(home / "profiles" / "alpha", 0o755, owner=None, directory=True)
    make(home / "profiles" / "alpha" / ".env", 0o644, owner=None)
    make(home / "profiles" / "alpha" / "run.sh", 0o755, owner=None)
    make(home / "profiles" / "alpha" / "private", 0o600, owner=None)
    os.mkfifo(home / "fifo", 0o644)
    os.chmod(home / "fifo", 0o644)
    os.symlink(outside, home / "link")

    summary = make_private(home)

    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(home / "profiles").st_mode) == 0o700
    alpha = home / "profiles" / "alpha"
    assert stat.S_IMODE(os.stat(alpha).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(alpha / ".env").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(alpha / "run.sh").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(alpha / "private").st_mode) == 0o600
    assert stat.S_IMODE(os.lstat(home / "fifo").st_mode) == 0o644  # not a file or directory
    assert stat.S_IMODE(os.stat(outside).st_mode) == 0o644  # a symlink's target
    assert summary == Summary(moded=5)
    assert make_private(home) == Summary()  # nothing left to do


def test_make_private_reports_a_bad_home_instead_of_raising(tmp_path: Path) -> None:
    target = make(tmp_path / "real", 0o755, owner=None, directory=True)
    os.symlink(target, tmp_path / "link")
    for bad in (tmp_path / "missing", tmp_path / "link"):
        summary = make_private(bad)
        assert summary.errors == 1 and str(bad) in summary.first_error
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o755


# -- init-volume end to end ------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "owned", "private"),
    [
        ({}, True, True),
        ({"HERMES_FIX_MODES": "0"}, True, False),
        ({"HERMES_FIX_MODES": "No"}, True, False),
        ({"HERMES_FIX_OWNERSHIP": "false"}, False, True),
        ({"HERMES_FIX_OWNERSHIP": "0", "HERMES_FIX_MODES": "FALSE"}, False, False),
    ],
)
def test_init_volume_repairs_the_volume(
    tmp_path: Path, env: dict[str, str], owned: bool, private: bool
) -> None:
    require_root()
    user, uid, gid = system_user()
    home = make(tmp_path / "home", 0o755, directory=True)
    make(home / "logs", 0o755, directory=True)
    make(home / "logs" / "container-boot.log", 0o644)
    make(home / ".env", 0o600, owner=None)
    os.chown(home / ".env", uid, gid)  # already right: not counted

    proc = run_init_volume(home, user, **env)

    assert proc.returncode == 0, proc.stderr
    expected_owner = (uid, gid) if owned else (OTHER, OTHER)
    file_mode, dir_mode = (0o600, 0o700) if private else (0o644, 0o755)
    assert owner_mode(home) == (*expected_owner, dir_mode)
    assert owner_mode(home / "logs") == (*expected_owner, dir_mode)
    assert owner_mode(home / "logs" / "container-boot.log") == (*expected_owner, file_mode)
    out = proc.stdout.splitlines()
    assert (f"init-volume: gave 3 entries under {home} to {user}:{user}" in out) == owned
    removed = f"init-volume: removed group/other permissions from 3 entries under {home}"
    assert (removed in out) == private
    if not owned:
        assert f"leaving ownership of {home} alone" in proc.stdout
    if not private:
        assert f"leaving the modes of {home} alone" in proc.stdout
    assert proc.stderr == ""


# -- the command line -------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["repair"],
        ["frobnicate", "--modes", "/tmp"],
        ["repair", "/tmp"],  # nothing to do
        ["repair", "--owner", "4343", "/tmp"],
        ["repair", "--owner", "no-such-user-x:no-such-group-x", "/tmp"],
        ["repair", "--owner", "4294967295:1", "/tmp"],
        ["repair", "--modes", "--max-depth", "0", "/tmp"],
        ["repair", "--modes", "--bogus", "/tmp"],
        ["repair", "--modes", "/tmp", "/var"],
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str]) -> None:
    proc = run_entry(*args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("init-volume: error: "), proc.stderr


def test_a_path_that_is_not_a_directory_is_exit_1(tmp_path: Path) -> None:
    make(tmp_path / "file", 0o644, owner=None)
    os.symlink(tmp_path, tmp_path / "link")
    for path in (tmp_path / "file", tmp_path / "link", tmp_path / "missing"):
        proc = run_entry("repair", "--modes", str(path))
        assert proc.returncode == 1
        assert proc.stderr.startswith(f"init-volume: error: cannot repair {path}: ")
        assert len(proc.stderr.splitlines()) == 1
