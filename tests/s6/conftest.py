"""A real s6-svscan on a temp scandir, and a HERMES_HOME for its gateways.

No s6 mocks here: the tests drive real s6-svscan/s6-supervise/s6-log and the real
`hermes gateway run`. Without the s6 binaries the tier is skipped, unless
HERMES_REQUIRE_S6=1 (CI), where that is a failure.

When the tests run as root and an unprivileged uid can run this Python, the home is
owned by uid 10000 (no passwd entry needed) so the slot's privilege drop is real and the
CLI runs as that uid too, like `docker exec` through the image's shim. Otherwise the
home stays root's and gateways run with HERMES_ALLOW_ROOT_GATEWAY=1.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hermes_container.home import HermesHome
from hermes_container.supervision.tools import find_tool
from tests.conftest import free_port, set_port
from tests.conftest import wait_for as shared_wait_for
from tests.s6.support import WAIT

S6_TOOLS = (
    "s6-svscan",
    "s6-svscanctl",
    "s6-supervise",
    "s6-svc",
    "s6-svstat",
    "s6-svok",
    "s6-log",
    "s6-applyuidgid",
    "s6-envdir",
)
GATEWAY_UID = 10000
HERMES = str(Path(sys.executable).parent / "hermes")


def require_s6() -> None:
    missing = [tool for tool in S6_TOOLS if find_tool(tool) is None]
    if os.environ.get("HERMES_REQUIRE_DROP") == "1" and not DROP:
        pytest.fail(
            "HERMES_REQUIRE_DROP=1, but uid 10000 cannot run this interpreter or read this "
            "checkout: build the venv from a python3 outside a 0700 home "
            "(PYTHON=/usr/bin/python3 make venv) in a checkout others can read"
        )
    if not missing:
        return
    reason = f"s6 binaries missing: {', '.join(missing)} (install the s6 and execline packages)"
    if os.environ.get("HERMES_REQUIRE_S6") == "1":
        pytest.fail(reason + "; HERMES_REQUIRE_S6=1 forbids skipping")
    pytest.skip(reason)


def unprivileged_can_run_hermes() -> bool:
    """Root, and uid 10000 can import this package with this interpreter."""
    if os.geteuid() != 0:
        return False
    try:
        probe = subprocess.run(
            [sys.executable, "-c", "import hermes_container.cli"],
            user=GATEWAY_UID,
            group=GATEWAY_UID,
            extra_groups=[],
            capture_output=True,
            timeout=30,
            check=False,
        )
    except PermissionError:  # e.g. the interpreter lives under a 0700 /root
        return False
    return probe.returncode == 0


DROP = unprivileged_can_run_hermes()


def wait_for(predicate: Callable[[], Any], timeout: float = WAIT, what: str = "condition") -> Any:
    """tests.conftest.wait_for with this tier's longer default timeout."""
    return shared_wait_for(predicate, timeout, what)


def _proc_environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def _proc_cwd(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


def processes_of(base: Path) -> list[int]:
    """Every live process whose HERMES_HOME or cwd lies under `base` (what a tree started)."""
    marker = f"HERMES_HOME={base}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        if marker in _proc_environ(pid) or _proc_cwd(pid).startswith(str(base)):
            found.append(pid)
    return found


def gateway_pids(profile: str, base: Path) -> list[int]:
    """Live `hermes -p <profile> gateway run` processes of this test's home."""
    pids = []
    for pid in processes_of(base):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        words = [a.decode() for a in argv if a]
        if "gateway" in words and "run" in words and words[words.index("-p") + 1] == profile:
            pids.append(pid)
    return pids


def proc_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")


@dataclass
class Tree:
    """One simulated container: a home, a scandir, a live s6-svscan."""

    base: Path
    home: HermesHome
    scandir: Path
    env: dict[str, str]
    drop: bool
    svscan: subprocess.Popen[bytes] | None = None
    scandirs: list[Path] = field(default_factory=list)

    @property
    def owner(self) -> int:
        return GATEWAY_UID if self.drop else os.geteuid()

    def hermes(
        self,
        *args: str,
        as_root: bool = False,
        timeout: float = 60,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the real CLI, as the home owner unless `as_root` (like docker exec + shim)."""
        return subprocess.run(
            [sys.executable, "-m", "hermes_container", *args],
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            timeout=timeout,
            check=False,
            cwd=self.base,
            **self._as_owner(as_root),
        )

    def spawn(self, *args: str, as_root: bool = False) -> subprocess.Popen[str]:
        """Start the real CLI in the background (output piped), like `hermes()`."""
        return subprocess.Popen(
            [sys.executable, "-m", "hermes_container", *args],
            env=self.env,
            cwd=self.base,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **self._as_owner(as_root),
        )

    def _as_owner(self, as_root: bool) -> dict[str, Any]:
        if self.drop and not as_root:
            return {"user": GATEWAY_UID, "group": GATEWAY_UID, "extra_groups": []}
        return {}

    def ok(self, *args: str, **kwargs: Any) -> str:
        proc = self.hermes(*args, **kwargs)
        assert proc.returncode == 0, (
            f"hermes {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
        return proc.stdout

    def status(self, profile: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.ok("-p", profile, "gateway", "status", "--json"))
        return data

    def create(self, name: str, *extra: str) -> Path:
        self.ok("profile", "create", name, *extra)
        profile_dir = self.home.profile_dir(name)
        self.set_port(profile_dir)
        return profile_dir

    def set_port(self, profile_dir: Path) -> int:
        """Give the profile a port that is free right now (tests must not collide)."""
        return set_port(profile_dir)

    def slot(self, profile: str) -> Path:
        return self.scandir / f"gateway-{profile}"

    def svstat(self, profile: str) -> str:
        return subprocess.run(
            ["s6-svstat", str(self.slot(profile))], capture_output=True, text=True, check=False
        ).stdout.strip()

    def wait_ready(self, profile: str, old_pid: int | None = None) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            st = self.status(profile)
            return st if st["ready"] and st["pid"] != old_pid else None

        result: dict[str, Any] = wait_for(ready, what=f"{profile} ready")
        return result

    # -- the supervisor --------------------------------------------------------

    def start_svscan(self, scandir: Path | None = None) -> None:
        if scandir is not None:
            self.scandir = scandir
            self.env["HERMES_S6_SCANDIR"] = str(scandir)
        self.scandir.mkdir(parents=True, exist_ok=True)
        self.scandirs.append(self.scandir)
        # As in both supported deployments (the image's svscan-gateways, `hermes
        # supervise`): the scandir and its s6-svscan are the home owner's, never root's.
        as_owner: dict[str, Any] = {}
        if self.drop:
            os.chown(self.scandir, GATEWAY_UID, GATEWAY_UID)
            as_owner = {"user": GATEWAY_UID, "group": GATEWAY_UID, "extra_groups": []}
        self.svscan = subprocess.Popen(
            ["s6-svscan", str(self.scandir)],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            **as_owner,
        )
        control = self.scandir / ".s6-svscan" / "control"

        def listening() -> bool:
            try:
                os.close(os.open(control, os.O_WRONLY | os.O_NONBLOCK))
                return True
            except OSError:
                return False

        wait_for(listening, what="s6-svscan control")

    def stop_svscan(self) -> None:
        """Like `docker stop`: every service gets SIGTERM and goes down, then svscan exits."""
        if self.svscan is None:
            return
        subprocess.run(["s6-svscanctl", "-t", str(self.scandir)], check=False)
        try:
            self.svscan.wait(timeout=WAIT)
        finally:
            self.svscan = None

    def kill_everything(self) -> None:
        """Like a container crash: SIGKILL the tree and every process it started."""
        if self.svscan is not None:
            with contextlib.suppress(ProcessLookupError):
                self.svscan.kill()
            self.svscan.wait(timeout=WAIT)
            self.svscan = None
        for _ in range(50):
            pids = processes_of(self.base)
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        raise AssertionError(f"processes of {self.base} survive SIGKILL: {processes_of(self.base)}")


def make_base() -> Path:
    """A world-traversable temp dir (pytest's tmp_path is 0700 under root)."""
    base = Path(tempfile.mkdtemp(prefix="hermes-s6-"))
    base.chmod(0o755)
    return base


def make_tree(base: Path, *, drop: bool = DROP, extra_env: dict[str, str] | None = None) -> Tree:
    home = HermesHome(base / "home")
    home.root.mkdir()
    if drop:
        os.chown(home.root, GATEWAY_UID, GATEWAY_UID)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HERMES_HOME": str(home.root),
        "HERMES_S6_SCANDIR": str(base / "service"),
        "HERMES_GATEWAY_PORT_BASE": str(free_port()),
        "HERMES_INGRESS_PORT": str(free_port()),  # `hermes supervise` runs an ingress
        "HERMES_GATEWAY_STAGGER": "0",
        "HERMES_CRASH_LOOP_MAX": "3",
        "HERMES_CRASH_LOOP_WINDOW": "60",
        "HERMES_BIN": HERMES,
        "PYTHONDONTWRITEBYTECODE": "1",
        **({} if drop else {"HERMES_ALLOW_ROOT_GATEWAY": "1"}),
        **(extra_env or {}),
    }
    return Tree(base=base, home=home, scandir=base / "service", env=env, drop=drop)


def chown_home(tree: Tree) -> None:
    """Files the test wrote as root belong to the home owner, as in the image."""
    if not tree.drop:
        return
    for root, dirs, files in os.walk(tree.home.root):
        for name in [*dirs, *files]:
            os.chown(os.path.join(root, name), GATEWAY_UID, GATEWAY_UID, follow_symlinks=False)


def boot(tree: Tree, *, default_running: bool = False) -> None:
    """What the image does: default profile files, s6-svscan, then the root reconciler."""
    from hermes_container.profiles import ensure_default_profile
    from hermes_container.state import write_desired

    if not (tree.home.root / "config.yaml").exists():
        ensure_default_profile(tree.home)
        tree.set_port(tree.home.root)
        write_desired(tree.home.root, "running" if default_running else "stopped")
        chown_home(tree)
    tree.start_svscan()
    tree.ok("reconcile", as_root=True)


@contextlib.contextmanager
def host_mode_tree(extra_env: dict[str, str] | None = None) -> Iterator[Tree]:
    """A home for `hermes supervise` (host mode: its scandir is $HERMES_HOME/run/service),
    nothing started; killed and removed afterwards."""
    require_s6()
    base = make_base()
    tree = make_tree(base, extra_env=extra_env)
    del tree.env["HERMES_S6_SCANDIR"]
    tree.scandir = tree.home.run_dir / "service"
    try:
        yield tree
    finally:
        tree.kill_everything()
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def booted_tree(**options: Any) -> Iterator[Tree]:
    """A booted tree (make_tree's `options`); killed and removed afterwards."""
    require_s6()
    base = make_base()
    t = make_tree(base, **options)
    try:
        boot(t)
        yield t
    finally:
        t.kill_everything()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def tree() -> Iterator[Tree]:
    with booted_tree() as t:
        yield t
