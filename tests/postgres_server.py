"""A real PostgreSQL server for the tests, started from Debian's binaries.

initdb and postgres refuse to run as root, so as root the cluster belongs to the
`postgres` system user the Debian package creates (falling back to uid 10000 would not
do: initdb needs a passwd entry for its user). The server listens on 127.0.0.1 at a
free port with its unix socket in its own temp dir, trusts local connections (nothing
but the tests can reach it), and skips fsync: the tests check locking, not durability.

Without the binaries the tests that need it skip, unless HERMES_REQUIRE_POSTGRES=1
(CI), where that is a failure.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port

SUPERUSER = "kanban"


def find_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/<major>/bin with initdb, pg_ctl and postgres."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda path: int(Path(path).parent.name) if Path(path).parent.name.isdigit() else 0,
    )
    for path in reversed(candidates):
        if all((Path(path) / tool).exists() for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(path)
    return None


def require_postgres() -> Path:
    bin_dir = find_bin_dir()
    reason = ""
    if bin_dir is None:
        reason = "PostgreSQL binaries missing (install the postgresql package)"
    elif os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            reason = "running as root and there is no postgres user to run the server as"
    if not reason:
        assert bin_dir is not None
        return bin_dir
    if os.environ.get("HERMES_REQUIRE_POSTGRES") == "1":
        pytest.fail(reason + "; HERMES_REQUIRE_POSTGRES=1 forbids skipping")
    pytest.skip(reason)


class PostgresServer:
    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="hermes-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=self.root,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
            **self._as,
        )
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {result.stdout}{result.stderr}{log}")

    def start(self) -> None:
        self._run(
            str(self.bin_dir / "initdb"),
            "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
            "--encoding=UTF8", "--no-sync",
        )  # fmt: skip
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=50"
        )
        self._run(
            str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running_server() -> Iterator[PostgresServer]:
    server = PostgresServer(require_postgres())
    try:
        server.start()
        yield server
    finally:
        server.stop()
