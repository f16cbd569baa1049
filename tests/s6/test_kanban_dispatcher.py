"""The kanban dispatcher as a supervised service, under real s6 (issue 15).

`hermes supervise` runs `hermes kanban daemon` in a slot of its own beside the gateways
(HERMES_KANBAN_DISPATCHER=0 leaves it out); the image runs the same command as the s6-rc
longrun `dispatcher`, whose own scripts are run here too, by a root s6-svscan. Real
s6-svscan/s6-supervise, real gateways, the fake provider (tests/fake_upstream.py) and the
board in SQLite under the tree's HERMES_HOME; the board is read back by a Python process
running as the home's owner (root must not open, and so create, files in that home).

What must hold: a gateway killed mid-task costs the task one counted failure and a retry
after the backoff, then it is done; kill -9 of the dispatcher at 50 random moments while
tasks run leaves every task done once, with never two open runs of one task.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hermes_container.profiles import create_profile, ensure_default_profile
from hermes_container.state import write_desired
from tests.fake_upstream import FakeUpstream
from tests.s6.conftest import (
    GATEWAY_UID,
    WAIT,
    Tree,
    chown_home,
    host_mode_tree,
    make_base,
    make_tree,
    proc_uid,
    processes_of,
    require_s6,
    wait_for,
)

pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parents[2]
IMAGE_SERVICES = REPO / "root" / "etc" / "s6-overlay" / "s6-rc.d"
LIB = REPO / "root" / "opt" / "hermes" / "libexec" / "lib.sh"
LIB_LINE = ". /opt/hermes/libexec/lib.sh"
CONTENV_SHEBANG = "#!/command/with-contenv sh"
KILLS = 50
SWITCH = "HERMES_KANBAN_DISPATCHER"

# Snapshot of the board, printed as JSON by a process running as the home's owner.
SNAPSHOT = """
import json, sys
from dataclasses import asdict
from hermes_container.home import HermesHome
from hermes_container.kanban.store import open_store

store = open_store(HermesHome.from_env())
try:
    out = []
    for task in store.list_tasks(board="default"):
        out.append({
            "id": task.id,
            "status": task.status,
            "result": task.result,
            "attempts": task.attempts,
            "runs": [
                {k: v for k, v in asdict(run).items() if k != "token"}
                for run in store.runs_of(task.id)
            ],
            "events": [
                {"kind": e.kind, "data": e.data, "at": e.at}
                for e in store.events_since(0, task_id=task.id, limit=1_000_000)
            ],
        })
finally:
    store.close()
json.dump(out, sys.stdout)
"""

# Tops the board up to `want` unfinished tasks, spread over the profiles given; prints
# how many it created.
TOP_UP = """
import sys
from hermes_container.home import HermesHome
from hermes_container.kanban.store import open_store

want, profiles = int(sys.argv[1]), sys.argv[2:]
store = open_store(HermesHome.from_env())
try:
    left = sum(t.status != "done" for t in store.list_tasks(board="default"))
    made = 0
    for i in range(max(0, want - left)):
        store.create_task(f"chaos {i}", body=f"task body {i}", assignee=profiles[i % len(profiles)])
        made += 1
finally:
    store.close()
print(made)
"""


# -- the tree ----------------------------------------------------------------------------


def _as_owner(tree: Tree) -> dict[str, Any]:
    if tree.drop:
        return {"user": GATEWAY_UID, "group": GATEWAY_UID, "extra_groups": []}
    return {}


def _owner_python(tree: Tree, code: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=tree.env,
        cwd=tree.base,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        **_as_owner(tree),
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def snapshot(tree: Tree) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(_owner_python(tree, SNAPSHOT))
    return data


def _use_upstream(profile_dir: Path, upstream: FakeUpstream, kanban: dict[str, Any] | None) -> None:
    config = profile_dir / "config.yaml"
    data: dict[str, Any] = yaml.safe_load(config.read_text())
    data["model"]["base_url"] = upstream.base_url
    data["model"]["read_timeout_s"] = 30
    if kanban is not None:
        data["kanban"] = kanban
    config.write_text(yaml.safe_dump(data))


def prepare(
    tree: Tree,
    upstream: FakeUpstream,
    kanban: dict[str, Any],
    profiles: tuple[str, ...] = (),
) -> None:
    """What `hermes supervise` finds: the default profile (and `profiles`) wired to the
    fake provider, desired running, the `kanban:` section in the default profile's
    config.yaml; every file the home owner's."""
    ensure_default_profile(tree.home)
    dirs = [tree.home.root] + [create_profile(tree.home, name) for name in profiles]
    for profile_dir in dirs:
        tree.set_port(profile_dir)
        _use_upstream(profile_dir, upstream, kanban if profile_dir == tree.home.root else None)
        write_desired(profile_dir, "running")
    chown_home(tree)


def svstat(service_dir: Path) -> tuple[bool, int]:
    """(up, pid) of a supervised service."""
    out = subprocess.run(
        ["s6-svstat", "-o", "up,pid", str(service_dir)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if len(out) != 2:
        return False, -1
    return out[0] == "true", int(out[1])


def _argv(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [word.decode() for word in raw.split(b"\0") if word]


def is_daemon(pid: int) -> bool:
    """`python .../hermes kanban daemon`: the daemon itself, not a wrapper about to exec it."""
    argv = _argv(pid)
    return (
        len(argv) == 4
        and Path(argv[0]).name.startswith("python")
        and argv[1].endswith("/hermes")
        and argv[2:] == ["kanban", "daemon"]
    )


def daemon_pid(service_dir: Path) -> int | None:
    """The pid of the service once it is `hermes kanban daemon` itself (not yet the run
    script that will exec it)."""
    up, pid = svstat(service_dir)
    return pid if up and pid > 0 and is_daemon(pid) else None


def daemons(tree: Tree) -> list[int]:
    return [pid for pid in processes_of(tree.base) if is_daemon(pid)]


def cpu_ticks(pid: int) -> int:
    """User + system CPU time of a process, in clock ticks (1/100 s on Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS line for pid {pid}")


def chat_requests(upstream: FakeUpstream) -> int:
    return sum(r.path.endswith("/chat/completions") for r in list(upstream.requests))


@pytest.fixture
def host() -> Iterator[Tree]:
    with host_mode_tree() as tree:
        yield tree


def supervise(tree: Tree) -> subprocess.Popen[str]:
    return tree.spawn("supervise")


def stop(supervisor: subprocess.Popen[str]) -> str:
    supervisor.send_signal(signal.SIGTERM)
    out, _ = supervisor.communicate(timeout=WAIT + 40)
    assert supervisor.returncode == 0, out
    return out


def show(tree: Tree, task_id: int) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(tree.ok("kanban", "show", str(task_id), "--json"))
    return data


def wait_done(tree: Tree, task_id: int) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        task = show(tree, task_id)
        return task if task["status"] == "done" else None

    result: dict[str, Any] = wait_for(done, what=f"task {task_id} to be done")
    return result


def _by_kind(task: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in task["events"] if e["kind"] == kind]


# -- hermes supervise --------------------------------------------------------------------


def test_supervise_runs_the_dispatcher_as_a_slot(host: Tree) -> None:
    with FakeUpstream() as upstream:
        prepare(host, upstream, {"dispatch_interval_seconds": 5})
        supervisor = supervise(host)
        try:
            host.wait_ready("default")
            slot = host.scandir / "dispatcher"
            pid = wait_for(lambda: daemon_pid(slot), what="the dispatcher slot's daemon")
            assert proc_uid(pid) == host.owner
            assert daemons(host) == [pid], "one dispatcher per home"
            log = host.home.logs_dir / "dispatcher" / "current"
            wait_for(
                lambda: log.is_file() and "dispatcher started" in log.read_text(),
                what="the dispatcher's log line",
            )
            assert log.stat().st_uid == host.owner
            # The slot is live: a new task is run through the default gateway at once.
            created = time.monotonic()
            task_id = int(host.ok("kanban", "create", "hello board", "--assignee", "default"))
            done = wait_done(host, task_id)
            # Well within the 5 s dispatch interval: a write wakes the dispatcher.
            assert time.monotonic() - created < 5
            assert done["result"].startswith("echo: ") and "hello board" in done["result"]
            # Idle, it costs little: no busy polling, a small resident set.
            assert daemon_pid(slot) == pid
            before = cpu_ticks(pid)
            time.sleep(3)
            assert cpu_ticks(pid) - before <= 3, "CPU time (1/100 s) over 3 idle seconds"
            assert rss_kib(pid) <= 30 * 1024, f"VmRSS {rss_kib(pid)} KiB"
        finally:
            out = stop(supervisor)
    assert "dispatcher is off" not in out
    wait_for(lambda: not processes_of(host.base), what="every process of the tree to exit")
    # The next `hermes supervise` replaces the slot the last one left behind.
    assert (host.scandir / "dispatcher").is_dir()
    again = supervise(host)
    try:
        pid = wait_for(lambda: daemon_pid(host.scandir / "dispatcher"), what="a new dispatcher")
        assert daemons(host) == [pid]
    finally:
        out = stop(again)
    assert "not supervised" not in out


def test_supervise_leaves_the_dispatcher_out_when_switched_off(host: Tree) -> None:
    host.env[SWITCH] = "0"
    with FakeUpstream() as upstream:
        prepare(host, upstream, {"dispatch_interval_seconds": 5})
        supervisor = supervise(host)
        try:
            host.wait_ready("default")
            assert not (host.scandir / "dispatcher").exists()
            task_id = int(host.ok("kanban", "create", "nobody runs me", "--assignee", "default"))
            time.sleep(2)  # the point: nothing picks it up
            task = show(host, task_id)
            assert task["status"] == "ready" and task["runs"] == []
            assert daemons(host) == []
            assert chat_requests(upstream) == 0
        finally:
            out = stop(supervisor)
    assert f"the kanban dispatcher is off ({SWITCH})" in out


# -- a gateway killed mid-task -----------------------------------------------------------


def test_a_gateway_killed_mid_task_costs_one_failure_and_a_retry(host: Tree) -> None:
    backoff = 3.0
    kanban = {
        "dispatch_interval_seconds": 1,
        "retry_backoff_seconds": backoff,
        "retry_backoff_max_seconds": 10,
    }
    with FakeUpstream() as upstream:
        upstream.set(delay=60)  # the first request hangs until the gateway dies
        prepare(host, upstream, kanban)
        supervisor = supervise(host)
        try:
            before = host.wait_ready("default")
            wait_for(lambda: daemon_pid(host.scandir / "dispatcher"), what="the dispatcher")
            task_id = int(host.ok("kanban", "create", "survive", "--assignee", "default"))
            wait_for(lambda: chat_requests(upstream) == 1, what="the task's request upstream")
            os.kill(before["pid"], signal.SIGKILL)
            upstream.set()  # the retry is answered at once
            after = host.wait_ready("default", old_pid=before["pid"])
            assert after["restarts"] >= 1, "s6 restarted the killed gateway"
            wait_for(
                lambda: snapshot(host)[0]["status"] == "done",
                timeout=backoff + 30,
                what="the retried task to be done",
            )
            (task,) = snapshot(host)
        finally:
            stop(supervisor)
    assert task["id"] == task_id and task["attempts"] == 2
    asked = [r for r in upstream.requests if r.path.endswith("/chat/completions")]
    assert len(asked) == 2, "one request per run: nothing ran twice"
    assert task["result"] == "echo: " + asked[-1].body["messages"][-1]["content"]
    first, second = task["runs"]
    assert first["outcome"] == "failed", first
    assert "failed mid-request" in first["error"], first["error"]
    assert second["outcome"] == "completed", second
    # Retried after the backoff (jitter shortens it by at most 10 %), not before.
    assert second["claimed_at"] >= first["finished_at"] + 0.9 * backoff - 0.05
    kinds = [e["kind"] for e in task["events"]]
    assert kinds.count("failed") == 1 and kinds.count("retry_scheduled") == 1
    assert kinds.count("completed") == 1 and "gave_up" not in kinds


# -- kill -9 of the dispatcher, over and over ----------------------------------------------


def test_kill_9_of_the_dispatcher_at_50_random_moments_loses_nothing(host: Tree) -> None:
    seed = int(os.environ.get("HERMES_CHAOS_SEED") or time.time())
    rng = random.Random(seed)
    why = f"(HERMES_CHAOS_SEED={seed})"
    kanban = {
        "max_in_progress": 6,
        "max_in_progress_per_profile": 3,
        "dispatch_interval_seconds": 1,
        "claim_ttl_seconds": 30,
        "retry_backoff_seconds": 0.2,
        "retry_backoff_max_seconds": 1,
    }
    profiles = ("default", "second")
    with FakeUpstream() as upstream:
        upstream.set(delay=0.4)  # kills land while requests are in flight
        prepare(host, upstream, kanban, profiles=("second",))
        _owner_python(host, TOP_UP, "40", *profiles)
        supervisor = supervise(host)
        slot = host.scandir / "dispatcher"
        seen: list[int] = []
        started = time.monotonic()
        try:
            for name in profiles:
                host.wait_ready(name)
            pid = wait_for(lambda: daemon_pid(slot), what="the dispatcher")
            seen.append(pid)
            while len(seen) <= KILLS:
                if len(seen) % 10 == 0:
                    _owner_python(host, TOP_UP, "40", *profiles)
                if len(seen) % 2 == 0:
                    # Half the kills wait for this dispatcher's first request upstream,
                    # then land inside a run; the rest land anywhere from its start on
                    # (reading the board, claiming, recording an outcome).
                    requests = chat_requests(upstream)
                    wait_for(
                        lambda n=requests: chat_requests(upstream) > n,
                        what=f"a request from dispatcher {pid} {why}",
                    )
                time.sleep(rng.uniform(0.0, 0.6))
                os.kill(pid, signal.SIGKILL)
                pid = wait_for(
                    lambda old=pid: (new := daemon_pid(slot)) != old and new,
                    what=f"s6 to restart the dispatcher after kill {len(seen)} {why}",
                )
                seen.append(pid)
            chaos = time.monotonic() - started
            upstream.set()  # settle quickly

            def settled() -> list[dict[str, Any]] | None:
                tasks = snapshot(host)
                unsettled = [t for t in tasks if t["status"] not in ("done", "blocked")]
                return None if unsettled else tasks

            tasks = wait_for(settled, timeout=90, what=f"every task to settle {why}")
            assert daemons(host) == [pid], "one dispatcher, the last one s6 started"
        finally:
            stop(supervisor)

    assert len(set(seen)) == KILLS + 1, f"{KILLS} kills, each restarted by s6 {why}"
    statuses = {t["id"]: t["status"] for t in tasks}
    assert set(statuses.values()) == {"done"}, f"{statuses} {why}"
    for task in tasks:
        completed_runs = [r for r in task["runs"] if r["outcome"] == "completed"]
        assert len(completed_runs) == 1, f"task {task['id']}: {task['runs']} {why}"
        assert len(_by_kind(task, "completed")) == 1, f"task {task['id']} {why}"
        # A dispatcher's death is never the task's failure.
        assert not _by_kind(task, "failed") and not _by_kind(task, "gave_up"), task["events"]
        runs = sorted(task["runs"], key=lambda r: r["claimed_at"])
        assert all(r["finished_at"] is not None for r in runs), runs
        for earlier, later in itertools.pairwise(runs):
            assert earlier["finished_at"] <= later["claimed_at"], (
                f"task {task['id']} had two open runs at once: {earlier} {later} {why}"
            )
        assert {r["pid"] for r in runs} <= set(seen), "every run was a supervised dispatcher's"
    # The kills really landed inside runs: each such run was handed back by the next
    # dispatcher, without a failure, because its holder's pid was gone.
    handed_back = [
        e for t in tasks for e in _by_kind(t, "reclaimed") if "is gone" in e["data"]["reason"]
    ]
    killed_mid_run = {e["data"]["pid"] for e in handed_back}
    assert killed_mid_run <= set(seen[:-1])
    assert len(killed_mid_run) >= KILLS // 3, (
        f"only {len(killed_mid_run)} of {KILLS} kills landed inside a run {why}"
    )
    print(
        f"chaos: {KILLS} kills in {chaos:.1f}s, {len(tasks)} tasks, "
        f"{len(killed_mid_run)} kills inside a run, {len(handed_back)} runs handed back {why}"
    )


# -- the image's own service scripts -------------------------------------------------------


def _image_script(name: str, target: Path) -> None:
    """An image script as the host can run it: /bin/sh instead of with-contenv (the
    environment is s6-svscan's already), the checkout's lib.sh."""
    text = (IMAGE_SERVICES / name).read_text()
    assert ("lib.sh" in text) == (LIB_LINE in text), f"{name} sources lib.sh another way"
    if text.startswith(CONTENV_SHEBANG):
        text = "#!/bin/sh" + text[len(CONTENV_SHEBANG) :]
    target.write_text(text.replace(LIB_LINE, f". {LIB}"))
    target.chmod(0o755)


# `s6-setuidgid hermes`: the image's hermes user is uid 10000; the host has no such name.
FAKE_SETUIDGID = """#!/bin/sh
[ "$1" = hermes ] || exit 100
shift
exec s6-applyuidgid -u {uid} -g {uid} -G '' "$@"
"""


@pytest.fixture
def root_tree() -> Iterator[tuple[Tree, Path]]:
    """A home for the image's scripts and a ROOT s6-svscan, as s6-overlay's own is.

    The scripts drop to the hermes user only when root runs them, so that is the only
    way to see them do it; without root (or a uid 10000 that can run this Python) the
    test is skipped, unless HERMES_REQUIRE_DROP=1.
    """
    require_s6()
    base = make_base()
    tree = make_tree(base)
    try:
        if os.geteuid() != 0 or not tree.drop:
            reason = "needs root, and a uid 10000 that can run this interpreter"
            if os.environ.get("HERMES_REQUIRE_DROP") == "1":
                pytest.fail(reason + "; HERMES_REQUIRE_DROP=1 forbids skipping")
            pytest.skip(reason)
        bin_dir = base / "bin"
        bin_dir.mkdir()
        (bin_dir / "s6-setuidgid").write_text(FAKE_SETUIDGID.format(uid=GATEWAY_UID))
        (bin_dir / "s6-setuidgid").chmod(0o755)
        tree.env["PATH"] = f"{bin_dir}:{tree.env['PATH']}"
        ensure_default_profile(tree.home)
        chown_home(tree)
        scandir = base / "root-service"  # root's, like /run/service
        scandir.mkdir()
        yield tree, scandir
    finally:
        tree.kill_everything()
        shutil.rmtree(base, ignore_errors=True)


def _image_service(scandir: Path) -> Path:
    """The image's `dispatcher` and its `dispatcher-log` consumer, as one s6 service
    with a logger: s6-svscan pipes run's output into log/run, as s6-rc's pipeline does."""
    service = scandir / ".dispatcher"
    (service / "log").mkdir(parents=True)
    _image_script("dispatcher/run", service / "run")
    _image_script("dispatcher/finish", service / "finish")
    _image_script("dispatcher-log/run", service / "log" / "run")
    _image_script("dispatcher-log/finish", service / "log" / "finish")
    return service


def _root_svscan(tree: Tree, scandir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["s6-svscan", str(scandir)],
        env=tree.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def test_the_image_service_runs_the_daemon_as_hermes_and_logs_as_hermes(
    root_tree: tuple[Tree, Path],
) -> None:
    tree, scandir = root_tree
    service = _image_service(scandir)
    final = scandir / "dispatcher"
    os.rename(service, final)
    svscan = _root_svscan(tree, scandir)
    try:
        pid = wait_for(lambda: daemon_pid(final), what="the image's dispatcher")
        assert proc_uid(pid) == GATEWAY_UID, "the daemon runs as the hermes user"
        assert svstat(final)[0]
        log_dir = tree.home.logs_dir / "dispatcher"
        current = log_dir / "current"
        wait_for(
            lambda: current.is_file() and "dispatcher started" in current.read_text(),
            what="the daemon's first line in its log",
        )
        # Made by the hermes user, not by root; private like every log.
        for path in (log_dir, current):
            assert path.stat().st_uid == GATEWAY_UID, path
            assert path.stat().st_mode & 0o077 == 0, oct(path.stat().st_mode)
        board = tree.home.root / "kanban" / "kanban.db"
        assert board.stat().st_uid == GATEWAY_UID
        # kill -9: finish reports it, s6-supervise starts a new one.
        os.kill(pid, signal.SIGKILL)
        again = wait_for(
            lambda: (new := daemon_pid(final)) != pid and new, what="s6 to restart the daemon"
        )
        assert proc_uid(again) == GATEWAY_UID
        wait_for(
            lambda: (
                "dispatcher: exited (code 256, signal 9); s6 restarts it" in current.read_text()
            ),
            what="the finish script's line in the log",
        )
        made_as_root = [
            str(p) for p in tree.home.root.rglob("*") if p.lstat().st_uid != GATEWAY_UID
        ]
        assert made_as_root == []
    finally:
        subprocess.run(["s6-svscanctl", "-t", str(scandir)], check=False)
        svscan.wait(timeout=WAIT)


def test_the_image_service_switched_off_stays_down(root_tree: tuple[Tree, Path]) -> None:
    tree, scandir = root_tree
    tree.env[SWITCH] = "0"
    service = _image_service(scandir)
    final = scandir / "dispatcher"
    os.rename(service, final)
    svscan = _root_svscan(tree, scandir)
    try:
        current = tree.home.logs_dir / "dispatcher" / "current"
        wait_for(
            lambda: current.is_file() and "dispatcher: disabled" in current.read_text(),
            what="the disabled line",
        )
        wait_for(lambda: not svstat(final)[0], what="the service to be down")
        time.sleep(2.5)  # the point: s6-supervise would restart it after 1 s
        up, _ = svstat(final)
        assert not up
        assert current.read_text().count("dispatcher: disabled") == 1, current.read_text()
        status = subprocess.run(
            ["s6-svstat", str(final)], capture_output=True, text=True, check=False
        ).stdout
        assert status.startswith("down (exitcode 0)"), status
        assert daemons(tree) == []
    finally:
        subprocess.run(["s6-svscanctl", "-t", str(scandir)], check=False)
        svscan.wait(timeout=WAIT)
