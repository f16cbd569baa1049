"""The multiprocess directory: real writer processes, deaths, archive, compaction, owners."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hermes_container.home import HermesHome
from hermes_container.metrics import files
from hermes_container.profiles import ensure_default_profile
from tests.unit.metrics_support import REPO, WriterProc, dashboard, scrape, total, value


@pytest.fixture
def home(tmp_path: Path) -> HermesHome:
    home = HermesHome(tmp_path / "home")
    ensure_default_profile(home)
    return home


def gen_dir(home: HermesHome) -> Path:
    return files.generation_dir(home.root)


def test_directory_is_private_and_per_generation(home: HermesHome) -> None:
    writer = WriterProc(home.root)
    try:
        directory = gen_dir(home)
        assert directory.parent == home.root / "run" / "metrics"
        for path in (directory.parent, directory):
            st = path.lstat()
            assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
            assert st.st_uid == os.geteuid()
        names = {p.name for p in directory.iterdir()}
        pid = writer.pid
        assert {f"{pid}.lock", f"counter_{pid}.db", f"histogram_{pid}.db"} <= names
        # Reserved on disk (no holes for a full disk to turn into SIGBUS), private.
        counter = directory / f"counter_{pid}.db"
        assert counter.stat().st_blocks * 512 >= files.FILE_BYTES
        assert stat.S_IMODE(counter.stat().st_mode) == 0o600
    finally:
        writer.exit()


def test_a_dead_writer_counts_once_and_its_live_gauge_goes(home: HermesHome) -> None:
    first = WriterProc(home.root)
    assert first.ask("inc 3") == "ok" and first.ask("live 5") == "ok"
    assert first.ask("observe 0.5") == "ok"
    second = WriterProc(home.root)
    assert second.ask("inc 4") == "ok" and second.ask("live 2") == "ok"
    with dashboard(home) as client:
        samples, _, _ = scrape(client)
        assert value(samples, "hermes_test_events_total", kind="a") == 7
        assert value(samples, "hermes_test_live") == 7

        first.kill()  # SIGKILL: nothing of its own cleans up
        directory = gen_dir(home)
        assert (directory / f"counter_{first.pid}.db").exists()
        for _ in range(3):  # retired at the first scrape, and never counted twice after
            samples, _, _ = scrape(client)
            assert value(samples, "hermes_test_events_total", kind="a") == 7
            assert value(samples, "hermes_test_live") == 2  # the dead one's 5 is gone
            assert value(samples, "hermes_test_seconds_count") == 1
            assert value(samples, "hermes_test_seconds_sum") == 0.5
        assert not (directory / f"counter_{first.pid}.db").exists()
        assert not (directory / f"gauge_livesum_{first.pid}.db").exists()
        assert not (directory / f"{first.pid}.lock").exists()
        archived = list(files.current_archive(directory).glob(f"counter_{first.pid}-*.db"))  # type: ignore[union-attr]
        assert len(archived) == 1

        # The survivor still counts into its own file, and the sum still adds up.
        assert second.ask("inc 10") == "ok"
        samples, _, _ = scrape(client)
        assert value(samples, "hermes_test_events_total", kind="a") == 17
        second.exit()
        samples, _, _ = scrape(client)
        assert value(samples, "hermes_test_events_total", kind="a") == 17
        assert value(samples, "hermes_test_live") is None  # no live writer: no live series


def test_archive_compacts_into_one_file_per_type_without_changing_a_sum(
    home: HermesHome,
) -> None:
    expected = 0
    deaths = files.COMPACT_AT * 2 + 1
    for n in range(1, deaths + 1):
        writer = WriterProc(home.root)  # its start-up sweep retires the one before
        writer.ask(f"inc {n}")
        writer.ask(f"observe {n / 10}")
        expected += n
        writer.exit()
    directory = gen_dir(home)
    with dashboard(home) as client:
        samples, _, _ = scrape(client)
    assert value(samples, "hermes_test_events_total", kind="a") == expected
    assert value(samples, "hermes_test_seconds_count") == deaths
    assert not list(directory.glob("*.db"))  # every dead writer retired
    archive = files.current_archive(directory)
    assert archive is not None
    assert int(archive.name.removeprefix(files.ARCHIVE_PREFIX)) >= 1  # compacted on the way
    assert len(list(archive.iterdir())) <= files.COMPACT_AT  # bounded, whatever the deaths
    # The older archive directories are gone: nothing is counted twice.
    assert [p.name for p in directory.iterdir() if p.is_dir()] == [archive.name]

    with files.sweep_lock(directory, None) as held:
        assert held and files.compact(directory, at=0)
    archive = files.current_archive(directory)
    assert archive is not None
    assert sorted(p.name for p in archive.iterdir()) == [
        "counter_archive.db",
        "histogram_archive.db",
    ]
    with dashboard(home) as client:  # a fresh scraper reads the same totals
        samples, _, _ = scrape(client)
    assert value(samples, "hermes_test_events_total", kind="a") == expected
    assert value(samples, "hermes_test_seconds_count") == deaths
    assert value(samples, "hermes_test_seconds_sum") == pytest.approx(expected / 10)


def test_a_crash_between_archive_and_cleanup_counts_once(home: HermesHome) -> None:
    """A new archive renamed into place but the old one not yet removed: only the
    newest is read."""
    for n in (1, 2):
        writer = WriterProc(home.root)
        writer.ask(f"inc {n}")
        writer.exit()
    directory = gen_dir(home)
    with files.sweep_lock(directory, None) as held:
        assert held
        files.retire_dead(directory)
        old = files.current_archive(directory)
        assert old is not None
        assert files.compact(directory, at=0)
    new = files.current_archive(directory)
    assert new is not None and new != old
    old.mkdir()  # as if the removal of the old archive had not happened
    (old / "counter_1-1.db").write_bytes((new / "counter_archive.db").read_bytes())
    with dashboard(home) as client:
        samples, _, _ = scrape(client)
    assert value(samples, "hermes_test_events_total", kind="a") == 3
    assert not old.exists()  # and the next sweep removed it


def test_a_live_writer_is_never_retired(home: HermesHome) -> None:
    writer = WriterProc(home.root)
    writer.ask("inc 2")
    directory = gen_dir(home)
    try:
        assert files.sweep(directory, wait=1.0)
        assert files.retire_dead(directory) == []
        assert (directory / f"counter_{writer.pid}.db").exists()
    finally:
        writer.exit()
    assert files.retire_dead(directory) == [writer.pid]


def test_a_predecessors_live_gauge_is_not_inherited(home: HermesHome) -> None:
    """A new process with a dead one's pid (and its files still there) starts with its
    own live gauge, but continues the counters: a sum is a sum."""
    directory = files.ensure_dir(home.root)
    assert directory is not None
    stale = WriterProc(home.root)
    stale.ask("inc 5")
    stale.ask("live 9")
    stale.kill()
    pid = os.getpid()  # this test process plays the successor with that pid's files
    for path in directory.glob(f"*_{stale.pid}.db"):
        os.rename(path, directory / path.name.replace(f"_{stale.pid}.db", f"_{pid}.db"))
    os.rename(directory / f"{stale.pid}.lock", directory / f"{pid}.lock")
    successor = files.ProcessLock(directory)
    assert successor.acquire()
    try:
        files.library("multiprocess").mark_process_dead(pid, str(directory))  # what _switch does
        assert not (directory / f"gauge_livesum_{pid}.db").exists()
        assert (directory / f"counter_{pid}.db").exists()
        assert files.retire_dead(directory) == []  # ours, and we hold its lock
    finally:
        successor.close()


def test_old_generation_is_removed_once_nobody_writes_it(home: HermesHome) -> None:
    root = files.metrics_root(home.root)
    old = root / "0123456789abcdef"
    old.mkdir(parents=True, mode=0o700)
    (old / "counter_1.db").write_bytes(b"\0" * 16)
    (old / "1.lock").touch()
    busy = root / "fedcba9876543210"
    busy.mkdir(mode=0o700)
    held = files.ProcessLock(busy, 7)
    assert held.acquire()
    try:
        writer = WriterProc(home.root)  # its start-up sweep runs in a thread
        writer.ask("inc 1")
        with dashboard(home) as client:
            scrape(client)
        writer.exit()
        assert not old.exists()
        assert busy.exists()  # another container on the same volume still writes there
    finally:
        held.close()


def run_writer(home: HermesHome, **env: str) -> subprocess.CompletedProcess[str]:
    """A writer process that gives up at once (no metrics) or just exits."""
    return subprocess.run(
        [sys.executable, "-m", "tests.unit.metrics_support", str(home.root)],
        cwd=REPO,
        env={**os.environ, "HERMES_HOME": str(home.root), **env},
        input="exit\n",
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_no_files_for_a_process_that_does_not_own_the_home(home: HermesHome) -> None:
    if os.geteuid() != 0:
        if os.environ.get("HERMES_REQUIRE_ROOT") == "1":
            pytest.fail("needs root to give the home to another user; HERMES_REQUIRE_ROOT=1")
        pytest.skip("needs root to give the home to another user")
    os.chown(home.root, 12345, 12345)
    result = run_writer(home)
    # Root in a home another user owns creates nothing below it, and writes no metrics.
    assert result.stdout.strip() == "no writer", result.stderr
    assert not (home.root / "run").exists()


def test_metrics_off_writes_nothing(home: HermesHome) -> None:
    result = run_writer(home, HERMES_METRICS="0")
    assert result.stdout.strip() == "no writer", result.stderr
    assert not (home.root / "run").exists()
    assert run_writer(home).stdout.strip() == "ok"  # the same, switched on
    assert (home.root / "run" / "metrics").is_dir()


def test_a_path_in_the_way_leaves_the_process_without_metrics(home: HermesHome) -> None:
    (home.root / "run").mkdir()
    (home.root / "run" / "metrics").write_text("not a directory")
    result = run_writer(home)
    assert result.stdout.strip() == "no writer"
    assert "writes no metrics" in result.stderr


def test_scrape_totals_match_after_many_writers(home: HermesHome) -> None:
    writers = [WriterProc(home.root) for _ in range(3)]
    for n, writer in enumerate(writers, 1):
        writer.ask(f"inc {n}")
    with dashboard(home) as client:
        samples, _, _ = scrape(client)
        assert total(samples, "hermes_test_events_total") == 6
        writers[0].kill()
        writers[1].exit()
        samples, _, _ = scrape(client)
        assert total(samples, "hermes_test_events_total") == 6
        writers[2].exit()
