"""The image, end to end: the image issue's scenarios, and a few more, against real containers.

Every container runs with --network host, a temp bind-mounted /opt/data and its own
free port range (HERMES_GATEWAY_PORT_BASE); waits are bounded polls, never fixed sleeps,
except where the point is that nothing happens for a while (scenario 7's restart loop).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from hermes_container.envfile import read_env
from tests.docker.harness import (
    HERMES_UID,
    REPO,
    Container,
    docker,
    free_port_range,
    http_get,
    port_answers,
    port_closed,
    volume_files,
    wait_for,
)
from tests.fake_upstream import FakeUpstream

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

Start = Callable[..., Container]


def _boot_log(c: Container) -> list[str]:
    path = c.volume / "logs" / "container-boot.log"
    return path.read_text().splitlines() if path.exists() else []


def _host_hermes(volume: Path, port_base: int, *args: str) -> None:
    """Run the CLI on the host against the bind-mounted volume (as a host user would)."""
    env = {**os.environ, "HERMES_HOME": str(volume), "HERMES_GATEWAY_PORT_BASE": str(port_base)}
    env.pop("HERMES_S6_SCANDIR", None)
    subprocess.run([sys.executable, "-m", "hermes_container", *args], env=env, check=True, cwd=REPO)


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.lchown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), uid, gid)


def _start_profile(c: Container, name: str) -> int:
    c.hermes("profile", "create", name)
    c.hermes("-p", name, "gateway", "start", "--timeout", "30")
    port = c.port_of(name)
    c.wait_healthy_gateway(port, timeout=30)
    return port


# Every s6-supervise in the container: "<uid> <argv>" per line (no ps in the image; its
# argv names the service dir, and unlike cwd it is readable without CAP_SYS_PTRACE).
SUPERVISORS = (
    "for p in /proc/[0-9]*; do"
    ' [ "$(cat "$p/comm" 2>/dev/null)" = s6-supervise ] || continue;'
    ' echo "$(stat -c %u "$p") $(tr "\\0" " " < "$p/cmdline")";'
    " done"
)


# 1 -----------------------------------------------------------------------------------------
def test_01_first_boot_starts_default(start_container: Start) -> None:
    c = start_container()
    c.wait_healthy_gateway(c.port_base, timeout=90)
    status, _ = http_get(c.port_base, "/health")
    assert status == 200
    st = c.status("default")
    assert st["up"] and st["ready"] and st["port"] == c.port_base
    assert "s6" in st["manager"]
    # The gateway's own output reaches `docker logs` (s6-log tees it to stdout).
    wait_for(lambda: "serving profile 'default'" in c.logs(), 15, "gateway output in docker logs")
    assert (c.volume / "logs" / "gateways" / "default" / "current").is_file()
    # The s6-rc tree compiled and every service of the user bundle is up (the dashboard
    # is "up" as an s6-rc service even while parked), with no deprecation warning.
    active = c.exec("s6-rc", "-a", "list").stdout.split()
    for service in ("init-volume", "svscan-gateways", "init-reconcile-profiles", "dashboard"):
        assert service in active, active
    assert "deprecated" not in c.logs()
    # Gateway slots live in the hermes-owned tree of svscan-gateways: their s6-supervise
    # runs as hermes, and s6-overlay's root scandir stays closed to the hermes user, so
    # nothing hermes can write is ever run as root.
    assert c.exec("stat", "-c", "%u", "/run/hermes/service").stdout.strip() == str(HERMES_UID)
    denied = c.exec("s6-setuidgid", "hermes", "mkdir", "/run/service/x", check=False)
    assert denied.returncode != 0
    listing = c.exec("sh", "-c", SUPERVISORS).stdout.splitlines()
    gateway_supervisors = [line for line in listing if "gateway-default" in line]
    assert gateway_supervisors, listing
    assert all(line.split()[0] == str(HERMES_UID) for line in gateway_supervisors), listing


# 2 -----------------------------------------------------------------------------------------
def test_02_profile_create_as_root_then_start(start_container: Start) -> None:
    c = start_container()
    c.wait_healthy_gateway(c.port_base, timeout=90)
    c.hermes("profile", "create", "coder")
    wrong = [(str(p), s.st_uid) for p, s in volume_files(c.volume) if s.st_uid != HERMES_UID]
    assert wrong == [], f"files not owned by {HERMES_UID}: {wrong}"
    out = c.hermes("-p", "coder", "gateway", "start", "--timeout", "30").stdout
    assert "ready" in out
    st = c.status("coder")
    assert st["up"] and st["ready"] and st["desired_state"] == "running"
    assert st["port"] != c.port_base
    assert port_answers(st["port"]) and port_answers(c.port_base)
    wrong = [(str(p), s.st_uid) for p, s in volume_files(c.volume) if s.st_uid != HERMES_UID]
    assert wrong == [], f"files not owned by {HERMES_UID}: {wrong}"


# 3 -----------------------------------------------------------------------------------------
def test_03_desired_state_survives_stop_and_restart(start_container: Start) -> None:
    c = start_container()
    c.wait_healthy_gateway(c.port_base, timeout=90)
    coder = _start_profile(c, "coder")
    writer = _start_profile(c, "writer")
    c.hermes("-p", "coder", "gateway", "stop", "--timeout", "30")
    assert port_closed(coder)
    boot_lines_before = len(_boot_log(c))

    docker("stop", c.name, timeout=60)  # SIGTERM: must not touch desired states
    for profile in ("default", "writer"):
        assert c.state_file(profile)["desired_state"] == "running", profile
    assert c.state_file("coder")["desired_state"] == "stopped"

    docker("start", c.name)
    c.wait_healthy_gateway(c.port_base, timeout=90)
    c.wait_healthy_gateway(writer, timeout=60)
    new = wait_for(
        lambda: len(_boot_log(c)) >= boot_lines_before + 3 and _boot_log(c)[boot_lines_before:],
        30,
        "container-boot.log lines of the second boot",
    )
    by_profile = {line.split("profile=")[1].split()[0]: line for line in new}
    assert "action=started" in by_profile["default"]
    assert "action=started" in by_profile["writer"]
    assert "action=started" not in by_profile["coder"]
    assert "prior_state=stopped" in by_profile["coder"]
    st = c.status("coder")
    assert not st["up"] and st["desired_state"] == "stopped"
    assert port_closed(coder)


# 4 -----------------------------------------------------------------------------------------
def test_04_kill9_restarts_only_that_gateway(start_container: Start) -> None:
    c = start_container()
    c.wait_healthy_gateway(c.port_base, timeout=90)
    coder = _start_profile(c, "coder")
    default_pid = c.status("default")["pid"]
    old_pid = c.status("coder")["pid"]
    assert default_pid and old_pid
    # The image forks gateways from the zygote (HERMES_GATEWAY_ZYGOTE=1): s6 supervises
    # each slot's launcher (the pid status shows), the gateway is the zygote's child.
    forked = _zygote_children(c)
    assert len(forked) == 2, forked
    c.exec("sh", "-c", f"kill -9 {int(old_pid)}")

    def restarted() -> bool:
        st = c.status("coder")
        return bool(st["pid"] and st["pid"] != old_pid and st["ready"])

    wait_for(restarted, 30, "coder's gateway to come back with a new pid")
    c.wait_healthy_gateway(coder, timeout=30)
    assert c.status("default")["pid"] == default_pid
    # The killed launcher's gateway went with it (no orphan holds the port); its
    # successor was forked again; default's gateway is the same process.
    now = _zygote_children(c)
    assert len(now) == 2 and len(now & forked) == 1, (forked, now)


def _zygote_children(c: Container) -> set[int]:
    script = (
        "z=$(s6-svstat -o pid /run/service/gateway-zygote) && for d in /proc/[0-9]*; do "
        '[ "$(awk \'/^PPid:/ {print $2}\' "$d/status" 2>/dev/null)" = "$z" ] && '
        'echo "${d#/proc/}"; done; true'
    )
    return {int(pid) for pid in c.exec("sh", "-c", script).stdout.split()}


# 5 -----------------------------------------------------------------------------------------
def test_05_profile_created_on_the_host_starts_without_restart(start_container: Start) -> None:
    # Root's CLI on the host becomes the volume's owner (uid 10000) before it writes, so
    # that user must be able to reach the volume: pytest's own tmp dirs are root's, 0700.
    base = Path(tempfile.mkdtemp(prefix="hermes-host-volume-"))
    try:
        base.chmod(0o755)
        _profile_from_the_host(start_container, base / "vol")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _profile_from_the_host(start_container: Start, volume: Path) -> None:
    volume.mkdir()
    c = start_container(volume=volume)
    c.wait_healthy_gateway(c.port_base, timeout=90)
    _host_hermes(c.volume, c.port_base, "profile", "create", "hostmade")
    # A host user whose uid matches the container's hermes user (PUID) owns what it creates.
    _chown_tree(c.volume, HERMES_UID, HERMES_UID)
    c.hermes("-p", "hostmade", "gateway", "start", "--timeout", "30")
    port = c.port_of("hostmade")
    c.wait_healthy_gateway(port, timeout=30)
    assert c.status("hostmade")["ready"]


# 6 -----------------------------------------------------------------------------------------
def test_06_upgrade_without_state_and_cmd_gateway_run(
    start_container: Start, tmp_path: Path
) -> None:
    volume = tmp_path / "old-volume"
    volume.mkdir()
    base = free_port_range(10)
    # An old image's volume: the default profile's files, no gateway_state.json, root-owned.
    env = {**os.environ, "HERMES_HOME": str(volume), "HERMES_GATEWAY_PORT_BASE": str(base)}
    code = (
        "from hermes_container.home import HermesHome\n"
        "from hermes_container.profiles import ensure_default_profile\n"
        "ensure_default_profile(HermesHome.from_env())\n"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=REPO)
    assert not (volume / "gateway_state.json").exists()

    c = start_container(volume=volume, cmd=("gateway", "run"), port_base=base)
    c.wait_healthy_gateway(base, timeout=90)
    wait_for(
        lambda: c.state_file("default").get("desired_state") == "running",
        15,
        "desired_state=running persisted",
    )
    assert c.running(), "the redirected `gateway run` must keep the container up"
    assert c.status("default")["up"]
    docker("stop", c.name, timeout=60)
    assert c.inspect("{{.State.ExitCode}}") == "0"
    assert c.state_file("default")["desired_state"] == "running"


# 7 -----------------------------------------------------------------------------------------
def test_07_dashboard_modes(start_container: Start) -> None:
    off = start_container()
    loopback = start_container(env={"HERMES_DASHBOARD": "1", "HERMES_DASHBOARD_HOST": "127.0.0.1"})
    open_no_auth = start_container(env={"HERMES_DASHBOARD": "true"})  # image default: 0.0.0.0

    wait_for(
        lambda: port_answers(loopback.dashboard_port, "/api/status"),
        90,
        "the loopback dashboard's /api/status",
    )
    status, body = http_get(loopback.dashboard_port, "/api/status")
    assert status == 200 and "auth_required" in body

    off.wait_healthy_gateway(off.port_base, timeout=90)
    wait_for(lambda: "dashboard: disabled" in off.logs(), 15, "the disabled message")
    assert port_closed(off.dashboard_port)

    wait_for(lambda: "dashboard: starting" in open_no_auth.logs(), 60, "the dashboard to start")
    time.sleep(10)  # the point: over 10 s a parked dashboard is not restarted
    logs = open_no_auth.logs()
    starts = logs.count("dashboard: starting")
    assert starts <= 2, f"dashboard restarted {starts - 1} times in 10 s:\n{logs[-2000:]}"
    assert "exit 78" in logs or "parked" in logs
    svstat = open_no_auth.exec("s6-svstat", "/run/service/dashboard").stdout
    assert svstat.startswith("down"), svstat
    assert port_closed(open_no_auth.dashboard_port)
    assert open_no_auth.running()


# 8 -----------------------------------------------------------------------------------------
def test_08_shim_drops_root_unless_asked(start_container: Start) -> None:
    c = start_container()
    c.wait_healthy_gateway(c.port_base, timeout=90)

    def owner_after_create(name: str, env: dict[str, str] | None) -> int:
        c.exec("hermes", "profile", "create", name, env=env)
        return (c.volume / "profiles" / name / "config.yaml").stat().st_uid

    assert owner_after_create("dropped", None) == HERMES_UID
    # Kept root still writes nothing as root: the CLI becomes the volume's owner first.
    assert owner_after_create("asroot", {"HERMES_DOCKER_EXEC_AS_ROOT": "1"}) == HERMES_UID
    assert owner_after_create("asrootyes", {"HERMES_DOCKER_EXEC_AS_ROOT": "YES"}) == HERMES_UID
    assert owner_after_create("zero", {"HERMES_DOCKER_EXEC_AS_ROOT": "0"}) == HERMES_UID
    # The uid the CLI process really has (`logs` only reads, so kept root stays root),
    # read from /proc once the shim has exec'd into Python (bounded wait; "timeout"
    # instead of a misleading uid under heavy load).
    probe = (
        "hermes logs -p default -f >/dev/null 2>&1 & pid=$!; i=0; "
        # `[.]venv/bin/python`, not `python`: until the child has exec'd, its cmdline is
        # this very probe's, and a plain word from it would match there, as root.
        "while ! grep -q '[.]venv/bin/python' /proc/$pid/cmdline 2>/dev/null; do "
        "i=$((i+1)); [ $i -gt 600 ] && { echo timeout; kill $pid; exit 0; }; sleep 0.1; done; "
        # The effective uid from status: /proc/<pid> itself may still show root for an
        # instant after the exec (ownership follows the dumpable flag, not the creds).
        "sed -n 's/^Uid:[[:space:]]*[0-9]*[[:space:]]*\\([0-9]*\\).*/\\1/p' /proc/$pid/status; "
        "kill $pid"
    )
    assert c.exec("sh", "-c", probe).stdout.strip() == str(HERMES_UID)
    as_root = {"HERMES_DOCKER_EXEC_AS_ROOT": "true"}
    assert c.exec("sh", "-c", probe, env=as_root).stdout.strip() == "0"
    as_zero = {"HERMES_DOCKER_EXEC_AS_ROOT": "0"}
    assert c.exec("sh", "-c", probe, env=as_zero).stdout.strip() == str(HERMES_UID)


def _stopped(c: Container) -> Callable[[], bool]:
    return lambda: not c.running()


# 9 -----------------------------------------------------------------------------------------
def test_09_puid_pgid_remap(start_container: Start) -> None:
    bad_uid = start_container(env={"PUID": "abc"})
    bad_gid = start_container(env={"PUID": "1000", "PGID": "0"})
    c = start_container(env={"PUID": "12345", "PGID": "12346"})
    c.wait_healthy_gateway(c.port_base, timeout=90)
    c.hermes("profile", "create", "coder")
    wrong = [
        (str(p), s.st_uid, s.st_gid)
        for p, s in volume_files(c.volume)
        if (s.st_uid, s.st_gid) != (12345, 12346)
    ]
    assert wrong == []
    pid = c.status("default")["pid"]
    assert c.exec("stat", "-c", "%u:%g", f"/proc/{pid}").stdout.strip() == "12345:12346"

    for bad, needle in ((bad_uid, "PUID='abc'"), (bad_gid, "PGID='0'")):
        wait_for(_stopped(bad), 60, "a bad PUID/PGID to stop the container")
        assert bad.inspect("{{.State.ExitCode}}") != "0"
        assert needle in bad.logs(), bad.logs()[-2000:]


# 10 ----------------------------------------------------------------------------------------
def _health(c: Container) -> dict[str, object]:
    data = json.loads(c.inspect("{{json .State.Health}}"))
    assert isinstance(data, dict)
    return data


def test_10_healthcheck_follows_desired_state(start_container: Start) -> None:
    c = start_container(
        run_args=(
            "--health-interval=1s",
            "--health-timeout=5s",
            "--health-retries=2",
            "--health-start-period=60s",
        )
    )
    c.wait_healthy_gateway(c.port_base, timeout=90)
    _start_profile(c, "coder")
    wait_for(lambda: _health(c)["Status"] == "healthy", 60, "healthy")

    c.hermes("gateway", "stop", "--all", "--timeout", "30")
    stopped_at = time.time()

    def checks_since(t: float) -> list[dict[str, object]]:
        from datetime import datetime

        out = []
        for entry in _health(c).get("Log") or []:  # type: ignore[attr-defined]
            start = datetime.fromisoformat(str(entry["Start"])[:26].replace("Z", "+00:00"))
            if start.timestamp() > t:
                out.append(entry)
        return out

    wait_for(lambda: len(checks_since(stopped_at)) >= 3, 30, "three checks after the stop")
    assert all(e["ExitCode"] == 0 for e in checks_since(stopped_at)), checks_since(stopped_at)
    assert _health(c)["Status"] == "healthy"

    # A desired-running gateway that is parked (config error, exit 78) -> unhealthy.
    config = c.volume / "config.yaml"
    config.write_text(config.read_text().replace("base_url:", "broken_base_url:"))
    c.hermes("gateway", "start", "--timeout", "15", check=False)
    assert c.state_file("default")["desired_state"] == "running"
    wait_for(lambda: _health(c)["Status"] == "unhealthy", 30, "unhealthy")


# 11 ----------------------------------------------------------------------------------------
def test_11_docker_stop_is_fast_clean_and_leaves_no_root_files(start_container: Start) -> None:
    c = start_container(env={"HERMES_DASHBOARD": "1", "HERMES_DASHBOARD_HOST": "127.0.0.1"})
    c.wait_healthy_gateway(c.port_base, timeout=90)
    _start_profile(c, "coder")
    wait_for(lambda: port_answers(c.dashboard_port, "/api/status"), 60, "the dashboard")
    started = time.monotonic()
    docker("stop", c.name, timeout=60)
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"docker stop took {elapsed:.1f}s"
    assert c.inspect("{{.State.ExitCode}}") == "0"
    root_owned = [str(p) for p, s in volume_files(c.volume) if s.st_uid == 0]
    assert root_owned == []


# extra -------------------------------------------------------------------------------------
def test_12_not_pid1_runs_unsupervised_with_one_warning(start_container: Start) -> None:
    c = start_container(run_args=("--init",))
    c.wait_healthy_gateway(c.port_base, timeout=60)
    logs = c.logs()
    assert logs.count("not PID 1") == 1, logs
    assert c.state_file("default")["gateway_state"] == "running"
    wrong = [(str(p), s.st_uid) for p, s in volume_files(c.volume) if s.st_uid != HERMES_UID]
    assert wrong == []


def test_13_runs_with_docker_run_user(start_container: Start, tmp_path: Path) -> None:
    volume = tmp_path / "user-volume"
    volume.mkdir()
    os.chown(volume, HERMES_UID, HERMES_UID)
    c = start_container(volume=volume, run_args=("--user", f"{HERMES_UID}:{HERMES_UID}"))
    c.wait_healthy_gateway(c.port_base, timeout=90)
    port = _start_profile(c, "coder")
    assert port_answers(port)
    assert "not root: no id remap" in c.logs()


def test_14_docker_stop_lets_an_inflight_stream_finish(start_container: Start) -> None:
    """SIGTERM: a gateway finishes the stream it is serving (9 s here, near its 10 s grace)
    before the tree goes down; s6-overlay's own timers do not cut it. Docker gets 30 s,
    as compose.yaml's stop_grace_period (20 s) would give it."""
    with FakeUpstream() as upstream:
        upstream.set(chunks=[f"w{i} " for i in range(10)], chunk_delay=1.0)  # ~9 s of stream
        c = start_container()
        c.wait_healthy_gateway(c.port_base, timeout=90)
        config = c.volume / "config.yaml"
        config.write_text(
            config.read_text().replace("https://api.openai.com/v1", upstream.base_url)
        )
        env = c.volume / ".env"
        env.write_text(env.read_text().replace("HERMES_MODEL_API_KEY=", "HERMES_MODEL_API_KEY=k"))
        c.hermes("gateway", "restart", "--timeout", "30")
        key = read_env(env)["API_SERVER_KEY"]
        received: list[str] = []

        def client() -> None:
            with httpx.stream(
                "POST",
                f"http://127.0.0.1:{c.port_base}/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]},
                timeout=60,
            ) as response:
                for text in response.iter_text():
                    received.append(text)

        thread = threading.Thread(target=client, daemon=True)
        thread.start()
        upstream.wait_for_requests(1, timeout=30)
        started = time.monotonic()
        docker("stop", "-t", "30", c.name, timeout=90)
        elapsed = time.monotonic() - started
        thread.join(timeout=60)
        body = "".join(received)
        assert elapsed < 20, f"docker stop took {elapsed:.1f}s"
        assert all(f"w{i}" in body for i in range(10)), body[-500:]
        assert "[DONE]" in body
        assert c.inspect("{{.State.ExitCode}}") == "0"
        assert c.state_file("default")["desired_state"] == "running"


# 15 ----------------------------------------------------------------------------------------
# Every `hermes kanban daemon` process: "<uid> <pid>" per line. The pattern is split by
# quotes so that this probe's own command line does not match it.
DISPATCHERS = (
    "for p in /proc/[0-9]*; do"
    ' case "$(tr "\\0" " " < "$p/cmdline" 2>/dev/null)" in'
    ' *"kanban"" daemon"*) echo "$(stat -c %u "$p") ${p#/proc/}" ;;'
    " esac;"
    " done"
)


def _dispatchers(c: Container) -> list[tuple[int, int]]:
    lines = c.exec("sh", "-c", DISPATCHERS).stdout.split("\n")
    return [(int(uid), int(pid)) for uid, pid in (line.split() for line in lines if line)]


def test_15_the_image_runs_the_kanban_dispatcher(start_container: Start) -> None:
    """The s6-rc longrun `dispatcher` runs `hermes kanban daemon` as hermes, logs to
    $HERMES_HOME/logs/dispatcher (and `docker logs`), and runs a task created with
    `docker exec ... hermes kanban create` through the default gateway to the provider;
    s6 restarts it after a kill -9. HERMES_KANBAN_DISPATCHER=0 keeps it down, no loop."""
    with FakeUpstream() as upstream:
        c = start_container()
        off = start_container(env={"HERMES_KANBAN_DISPATCHER": "0"})
        c.wait_healthy_gateway(c.port_base, timeout=90)
        config = c.volume / "config.yaml"
        config.write_text(
            config.read_text().replace("https://api.openai.com/v1", upstream.base_url)
        )
        c.hermes("gateway", "restart", "--timeout", "30")
        active = c.exec("s6-rc", "-a", "list").stdout.split()
        assert "dispatcher" in active and "dispatcher-log" in active, active
        ((uid, pid),) = wait_for(lambda: _dispatchers(c), 30, "the dispatcher process")
        assert uid == HERMES_UID

        task_id = c.hermes(
            "kanban", "create", "container task", "--body", "say hi", "--assignee", "default"
        ).stdout.strip()

        def done() -> dict[str, object] | None:
            task = json.loads(c.hermes("kanban", "show", task_id, "--json").stdout)
            return task if task["status"] == "done" else None

        task = wait_for(done, 60, "the task to be done")
        asked = [r for r in upstream.requests if r.path.endswith("/chat/completions")]
        assert len(asked) == 1
        prompt = asked[0].body["messages"][-1]["content"]
        assert "container task" in prompt and "say hi" in prompt
        assert task["result"] == f"echo: {prompt}"
        runs = task["runs"]
        assert isinstance(runs, list) and [r["outcome"] for r in runs] == ["completed"]

        log = c.volume / "logs" / "dispatcher" / "current"
        assert "dispatcher started" in log.read_text()
        assert log.stat().st_uid == HERMES_UID and log.parent.stat().st_uid == HERMES_UID
        assert "dispatcher started" in c.logs()  # s6-log tees it to stdout

        c.exec("sh", "-c", f"kill -9 {pid}")
        again = wait_for(
            lambda: [p for p in _dispatchers(c) if p[1] != pid], 30, "s6 to restart the dispatcher"
        )
        assert [u for u, _ in again] == [HERMES_UID]
        wait_for(
            lambda: "dispatcher: exited (code 256, signal 9)" in log.read_text(),
            15,
            "the finish script's line",
        )

        off.wait_healthy_gateway(off.port_base, timeout=90)
        wait_for(lambda: "dispatcher: disabled" in off.logs(), 30, "the disabled message")
        time.sleep(3)  # the point: a parked service is not restarted (s6 would after 1 s)
        assert off.logs().count("dispatcher: disabled") == 1, off.logs()[-2000:]
        svstat = off.exec("s6-svstat", "/run/service/dispatcher").stdout
        assert svstat.startswith("down"), svstat
        assert _dispatchers(off) == []
        wrong = [(str(p), s.st_uid) for p, s in volume_files(c.volume) if s.st_uid != HERMES_UID]
        assert wrong == []


def test_16_the_image_serves_every_profile_through_the_ingress(start_container: Start) -> None:
    """The s6-rc longrun `ingress` answers on HERMES_INGRESS_PORT: /v1/models with the
    generated key lists the profiles, a profile created with `docker exec` included, and
    a chat reaches the provider through it; the key file is hermes's, mode 600."""
    with FakeUpstream() as upstream:
        c = start_container()
        c.wait_healthy_gateway(c.port_base, timeout=90)
        config = c.volume / "config.yaml"
        config.write_text(
            config.read_text().replace("https://api.openai.com/v1", upstream.base_url)
        )
        c.hermes("gateway", "restart", "--timeout", "30")
        c.hermes("profile", "create", "side")
        key = c.hermes("ingress", "key").stdout.strip()
        url = f"http://127.0.0.1:{c.ingress_port}"
        auth = {"authorization": f"Bearer {key}"}

        def models() -> list[str] | None:
            try:
                response = httpx.get(url + "/v1/models", headers=auth, timeout=2, trust_env=False)
            except httpx.TransportError:
                return None
            return [m["id"] for m in response.json()["data"]] if response.is_success else None

        assert wait_for(models, 60, "the ingress's /v1/models") == ["default", "side"]
        chat = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}
        reply = httpx.post(
            url + "/v1/chat/completions", json=chat, headers=auth, timeout=30, trust_env=False
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"] == "echo: hi"
        down = httpx.post(
            url + "/v1/chat/completions",
            json={**chat, "model": "side"},
            headers=auth,
            timeout=30,
            trust_env=False,
        )
        assert down.status_code == 503 and down.headers["retry-after"]
        keyfile = c.volume / "ingress" / "key"
        assert keyfile.stat().st_uid == HERMES_UID
        assert keyfile.stat().st_mode & 0o777 == 0o600
        assert "ingress" in c.exec("s6-rc", "-a", "list").stdout.split()
        assert key not in c.logs()
