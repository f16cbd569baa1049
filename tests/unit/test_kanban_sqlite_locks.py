"""A second board store in a process must not strip the first one's SQLite locks.

close(2) on any descriptor of a file releases every POSIX lock the process holds on it,
SQLite's included. The dashboard keeps two stores on one board (its board page and the
metrics collector), so opening the second must not close a descriptor of the file:
else the next process to close its store believes it is the last one, deletes the WAL
under our live connection, and our writes fail or vanish."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hermes_container.home import HermesHome
from hermes_container.kanban.store import open_store, sqlite_path

REPO = Path(__file__).resolve().parents[2]


def test_a_second_store_keeps_the_first_ones_locks(tmp_path: Path) -> None:
    home = HermesHome(tmp_path / "home")
    first = open_store(home, {})
    try:
        first.create_task("before", assignee="alpha")
        second = open_store(home, {})  # what used to open and close the board file
        try:
            # Another process opens, writes, and closes the board: the last closer of a
            # WAL database checkpoints and deletes the WAL unless someone else holds it.
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "import sys; from hermes_container.home import HermesHome; "
                    "from hermes_container.kanban.store import open_store; "
                    "from pathlib import Path; s = open_store(HermesHome(Path(sys.argv[1])), {}); "
                    "s.create_task('elsewhere', assignee='beta'); s.close()",
                    str(home.root),
                ],
                cwd=REPO,
                check=True,
                timeout=60,
            )
            assert sqlite_path(home).with_name("kanban.db-wal").exists()
            for i in range(20):
                first.create_task(f"after {i}", assignee="alpha")
            titles = [t.title for t in second.list_tasks()]
        finally:
            second.close()
    finally:
        first.close()
    assert titles[:2] == ["before", "elsewhere"] and len(titles) == 22
    check = open_store(home, {})
    try:
        assert len(check.list_tasks()) == 22
    finally:
        check.close()
