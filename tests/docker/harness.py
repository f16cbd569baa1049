"""Harness of the image tier: build the image once per session, run real containers against it.

`docker_image` (session) makes sure a daemon is reachable -- starting `dockerd` itself
when run as root with none running, and stopping only what it started -- then either
uses $HERMES_TEST_IMAGE or builds the image: it creates the base image with
../shared/offline/make-base-image.sh when missing, serves ../shared/offline/s6-overlay
on a free 127.0.0.1 port, downloads the Python wheels on the host into .wheels/, and
runs `docker build --network host` with the mirror and offline-wheel build args.

Containers (`start_container`) run with --network host, a temp bind-mounted volume and a
free port range, and are always removed. Without a daemon the tier skips with one
reason, unless HERMES_REQUIRE_DOCKER=1, which turns that into a failure.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import http.server
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for as shared_wait_for

REPO = Path(__file__).resolve().parents[2]
SHARED_OFFLINE = REPO.parent / "shared" / "offline"
ARTIFACTS = REPO / "test-artifacts"
WHEELS = REPO / ".wheels"
BASE_IMAGE = os.environ.get("HERMES_TEST_BASE_IMAGE", "debian:bookworm-slim")
IMAGE_TAG = "hermes-container:test"
HERMES_UID = 10000
PY_TAGS = ("--python-version", "3.11", "--implementation", "cp", "--abi", "cp311")
PLATFORMS = (
    "manylinux_2_36_x86_64",
    "manylinux_2_34_x86_64",
    "manylinux_2_28_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
)


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def _log(message: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with (ARTIFACTS / "docker-tier.log").open("a") as fh:
        fh.write(f"{time.strftime('%H:%M:%S')} {message}\n")


def docker(
    *args: str, check: bool = True, timeout: float = 120, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def _daemon_ok() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return docker("info", check=False, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.25
) -> Any:
    """tests.conftest.wait_for, tolerating the errors a container that is still starting
    raises (refused connections, half-written output, a failed docker call)."""
    errors = (OSError, AssertionError, ValueError, subprocess.SubprocessError)
    return shared_wait_for(predicate, timeout, what, interval=interval, tolerate=errors)


# --- the daemon ---------------------------------------------------------------------------


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes] | None = None  # set only when this session started dockerd


def _start_dockerd() -> subprocess.Popen[bytes] | None:
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        return None
    if (
        os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        != "unix:///var/run/docker.sock"
    ):
        return None  # the caller points at another daemon: never start a local one for it
    ARTIFACTS.mkdir(exist_ok=True)
    log = (ARTIFACTS / "dockerd.log").open("ab")
    proc = subprocess.Popen(
        ["dockerd", "--bridge=none", "--iptables=false"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None
        if _daemon_ok():
            _log(f"started dockerd pid {proc.pid}")
            return proc
        time.sleep(0.5)
    _stop_dockerd(proc)
    return None


def _stop_dockerd(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    _log(f"stopped dockerd pid {proc.pid}")


def unavailable_reason() -> str | None:
    """Why the tier cannot run here, or None when a daemon is (or can be made) reachable."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    if _daemon_ok():
        return None
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        return "no Docker daemon is reachable and none can be started (needs root + dockerd)"
    if (
        os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        != "unix:///var/run/docker.sock"
    ):
        return f"DOCKER_HOST={os.environ['DOCKER_HOST']} is not reachable"
    return None


def _no_docker(reason: str) -> None:
    if _truthy("HERMES_REQUIRE_DOCKER"):
        pytest.fail(f"HERMES_REQUIRE_DOCKER=1 but {reason}", pytrace=False)
    pytest.skip(f"docker tier skipped: {reason} (set HERMES_REQUIRE_DOCKER=1 to fail instead)")


@pytest.fixture(scope="session")
def docker_daemon() -> Iterator[Daemon]:
    if shutil.which("docker") is None:
        _no_docker("the docker CLI is not installed")
    daemon = Daemon()
    if not _daemon_ok():
        daemon.proc = _start_dockerd()
        if daemon.proc is None:
            _no_docker(
                "no Docker daemon is reachable and none could be started (needs root + dockerd)"
            )
    try:
        yield daemon
    finally:
        if daemon.proc is not None:
            _stop_dockerd(daemon.proc)


# --- the image ----------------------------------------------------------------------------


def _ensure_base_image() -> None:
    if docker("image", "inspect", BASE_IMAGE, check=False).returncode == 0:
        return
    script = SHARED_OFFLINE / "make-base-image.sh"
    if not script.is_file():
        pytest.fail(f"{BASE_IMAGE} is missing and {script} does not exist", pytrace=False)
    _log(f"creating {BASE_IMAGE} with {script}")
    with (ARTIFACTS / "make-base-image.log").open("w") as log:
        proc = subprocess.run(
            ["sh", str(script)], stdout=log, stderr=subprocess.STDOUT, timeout=900, check=False
        )
    if proc.returncode != 0:
        pytest.fail(f"{script} failed; see test-artifacts/make-base-image.log", pytrace=False)


def _requirements() -> list[str]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    deps: list[str] = list(data["project"]["dependencies"])
    build: list[str] = list(data["build-system"]["requires"])
    return sorted(set(deps + build))


def prepare_wheels() -> Path:
    """Download the image's wheels on the host (cp311, manylinux x86_64) into .wheels/."""
    reqs = _requirements()
    stamp_value = hashlib.sha256("\n".join([*reqs, *PLATFORMS]).encode()).hexdigest()
    stamp = WHEELS / ".stamp"
    if stamp.is_file() and stamp.read_text().strip() == stamp_value:
        return WHEELS
    WHEELS.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
    cmd += ["--only-binary=:all:", *PY_TAGS, "--dest", str(WHEELS)]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    proc = subprocess.run([*cmd, *reqs], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"pip download of the image's wheels failed:\n{proc.stderr[-3000:]}")
    stamp.write_text(stamp_value + "\n")
    return WHEELS


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        _log("mirror: " + format % args)


@contextlib.contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(directory))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


# The mirror's URL and its context manager: dropping the manager would stop the server.
_mirror: list[tuple[str, contextlib.AbstractContextManager[str]]] = []


def mirror_url() -> str:
    """The s6-overlay mirror, served on 127.0.0.1 until the session ends.

    One URL for every build of the session: the S6_OVERLAY_MIRROR build argument is part
    of the layer cache key, so the compose scenario's build reuses the tier's layers.
    """
    if not _mirror:
        mirror_dir = SHARED_OFFLINE / "s6-overlay"
        if not mirror_dir.is_dir():
            pytest.fail(f"{mirror_dir} (the s6-overlay mirror) does not exist", pytrace=False)
        serving = serve_directory(mirror_dir)
        _mirror.append((serving.__enter__(), serving))  # a daemon thread: ends with the session
    return _mirror[0][0]


def offline_build_args() -> dict[str, str]:
    """The build arguments of an offline build: the local base image, the mirror and
    the host's wheels."""
    _ensure_base_image()
    wheels = prepare_wheels()
    return {
        "BASE_IMAGE": BASE_IMAGE,
        "S6_OVERLAY_MIRROR": mirror_url(),
        "WHEELS_DIR": str(wheels.relative_to(REPO)),
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": "/tmp/wheels",
    }


def build_image(tag: str = IMAGE_TAG) -> float:
    build_args = offline_build_args()
    started = time.monotonic()
    args = ["build", "--network", "host"]
    for key, value in build_args.items():
        args += ["--build-arg", f"{key}={value}"]
    proc = docker(*args, "-t", tag, str(REPO), check=False, timeout=1200)
    elapsed = time.monotonic() - started
    (ARTIFACTS / "docker-build.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-4000:]
        pytest.fail(f"docker build failed (test-artifacts/docker-build.log):\n{tail}")
    size = docker("image", "inspect", "-f", "{{.Size}}", tag).stdout.strip()
    _log(f"built {tag} in {elapsed:.1f}s, size {int(size) / 1e6:.1f} MB")
    return elapsed


@pytest.fixture(scope="session")
def docker_image(docker_daemon: Daemon) -> str:
    ARTIFACTS.mkdir(exist_ok=True)
    given = os.environ.get("HERMES_TEST_IMAGE", "").strip()
    if given:
        if docker("image", "inspect", given, check=False).returncode != 0:
            pytest.fail(f"HERMES_TEST_IMAGE={given} does not exist", pytrace=False)
        return given
    build_image()
    return IMAGE_TAG


# --- containers ---------------------------------------------------------------------------


def _bindable(port: int) -> bool:
    for host in ("127.0.0.1", "0.0.0.0"):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


_taken: set[int] = set()


def free_port_range(count: int) -> int:
    """First port of `count` consecutive free ports (never handed out twice per session)."""
    for _ in range(500):
        base = random.randrange(20000, 60000 - count)
        ports = range(base, base + count)
        if any(p in _taken for p in ports):
            continue
        if all(_bindable(p) for p in ports):
            _taken.update(ports)
            return base
    raise AssertionError("no free port range found")


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()


def port_answers(port: int, path: str = "/health") -> bool:
    try:
        return http_get(port, path)[0] == 200
    except OSError:
        return False


def port_closed(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


@dataclass
class Container:
    name: str
    image: str
    volume: Path
    port_base: int
    dashboard_port: int
    env: dict[str, str] = field(default_factory=dict)
    cmd: tuple[str, ...] = ()
    run_args: tuple[str, ...] = ()
    # Containers share the host network: each one's ingress needs a port of its own.
    ingress_port: int = field(default_factory=lambda: free_port_range(1))

    def start(self) -> Container:
        args = ["run", "-d", "--name", self.name, "--network", "host"]
        args += ["-v", f"{self.volume}:/opt/data"]
        env = {
            "HERMES_GATEWAY_PORT_BASE": str(self.port_base),
            "HERMES_DASHBOARD_PORT": str(self.dashboard_port),
            "HERMES_INGRESS_PORT": str(self.ingress_port),
            "HERMES_GATEWAY_STAGGER": "0",
            **self.env,
        }
        for key, value in env.items():
            args += ["-e", f"{key}={value}"]
        docker(*args, *self.run_args, self.image, *self.cmd)
        return self

    def exec(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        user: str | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        opts: list[str] = []
        for key, value in (env or {}).items():
            opts += ["-e", f"{key}={value}"]
        if user is not None:
            opts += ["-u", user]
        return docker("exec", *opts, self.name, *args, check=check, timeout=timeout)

    def hermes(self, *args: str, check: bool = True, timeout: float = 60) -> Any:
        return self.exec("hermes", *args, check=check, timeout=timeout)

    def logs(self) -> str:
        proc = docker("logs", self.name, check=False)
        return proc.stdout + proc.stderr

    def inspect(self, fmt: str) -> str:
        return str(docker("inspect", "-f", fmt, self.name).stdout.strip())

    def running(self) -> bool:
        return self.inspect("{{.State.Running}}") == "true"

    def port_of(self, profile: str) -> int:
        return int(self.status(profile)["port"])

    def status(self, profile: str) -> dict[str, Any]:
        proc = self.hermes("-p", profile, "gateway", "status", "--json", check=False)
        data = json.loads(proc.stdout)
        if isinstance(data, list):
            data = data[0]
        assert isinstance(data, dict)
        return data

    def state_file(self, profile: str) -> dict[str, Any]:
        base = self.volume if profile == "default" else self.volume / "profiles" / profile
        data = json.loads((base / "gateway_state.json").read_text())
        assert isinstance(data, dict)
        return data

    def wait_healthy_gateway(self, port: int, timeout: float = 60) -> None:
        wait_for(
            lambda: port_answers(port) or (self.running() is False and "exited"),
            timeout,
            f"/health on port {port}",
        )
        assert self.running(), f"container exited:\n{self.logs()[-3000:]}"

    def remove(self) -> None:
        docker("rm", "-f", "-v", self.name, check=False, timeout=60)


def volume_files(volume: Path) -> list[tuple[Path, os.stat_result]]:
    out = [(volume, os.lstat(volume))]
    for root, dirs, files in os.walk(volume):
        for name in dirs + files:
            path = Path(root) / name
            out.append((path, os.lstat(path)))
    return out


@pytest.fixture
def start_container(
    docker_image: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Container]]:
    """Factory: start a container of the test image; every one is removed afterwards."""
    made: list[Container] = []

    def start(
        env: dict[str, str] | None = None,
        cmd: tuple[str, ...] = (),
        run_args: tuple[str, ...] = (),
        volume: Path | None = None,
        port_base: int | None = None,
    ) -> Container:
        vol = volume or tmp_path / f"vol{len(made)}"
        vol.mkdir(parents=True, exist_ok=True)
        c = Container(
            name=f"hermes-test-{uuid.uuid4().hex[:10]}",
            image=docker_image,
            volume=vol,
            port_base=port_base or free_port_range(10),
            dashboard_port=free_port_range(1),
            env=env or {},
            cmd=cmd,
            run_args=run_args,
        )
        made.append(c)
        return c.start()

    yield start
    for c in made:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            (ARTIFACTS / f"{request.node.name}-{c.name}.log").write_text(c.logs())
        c.remove()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
