"""`hermes healthcheck`: desired-running gateways and the enabled dashboard must answer."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hermes_container.config import render_config
from hermes_container.healthcheck import LIVENESS, READINESS, CheckResult, check, probe_host
from hermes_container.home import HermesHome
from hermes_container.profiles import create_profile, ensure_default_profile
from hermes_container.state import write_desired, write_observed
from tests.conftest import free_port, run_hermes


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        code = 200 if self.path in ("/health", "/api/status") else 404
        body = b'{"ok": true}'
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def _set_port(home: HermesHome, profile: str, port: int) -> None:
    (home.profile_dir(profile) / "config.yaml").write_text(render_config(port))


def test_probe_host_maps_wildcards_to_loopback() -> None:
    assert probe_host("0.0.0.0") == "127.0.0.1"
    assert probe_host("") == "127.0.0.1"
    assert probe_host("::") == "::1"
    assert probe_host("10.1.2.3") == "10.1.2.3"


def test_default_without_state_counts_as_desired_running(
    hermes_home: HermesHome, server: int
) -> None:
    ensure_default_profile(hermes_home)
    _set_port(hermes_home, "default", server)
    results = check(hermes_home, env={})
    assert [(r.name, r.ok) for r in results] == [("gateway default", True)]


def test_down_gateway_that_should_run_is_unhealthy(hermes_home: HermesHome) -> None:
    ensure_default_profile(hermes_home)
    _set_port(hermes_home, "default", free_port())
    results = check(hermes_home, env={}, timeout=1)
    assert len(results) == 1 and not results[0].ok


def test_stopped_profiles_are_not_checked(hermes_home: HermesHome) -> None:
    ensure_default_profile(hermes_home)
    create_profile(hermes_home, "coder")
    write_desired(hermes_home.root, "stopped")
    _set_port(hermes_home, "default", free_port())
    assert check(hermes_home, env={}) == []  # coder has no desired state: not checked


def test_named_profile_desired_running_is_checked(hermes_home: HermesHome, server: int) -> None:
    ensure_default_profile(hermes_home)
    write_desired(hermes_home.root, "stopped")
    write_desired(create_profile(hermes_home, "coder"), "running")
    _set_port(hermes_home, "coder", server)
    results = check(hermes_home, env={})
    assert [(r.name, r.ok) for r in results] == [("gateway coder", True)]


def test_dashboard_checked_only_when_enabled(hermes_home: HermesHome, server: int) -> None:
    ensure_default_profile(hermes_home)
    write_desired(hermes_home.root, "stopped")
    env = {"HERMES_DASHBOARD_HOST": "0.0.0.0", "HERMES_DASHBOARD_PORT": str(server)}
    assert check(hermes_home, env=env) == []
    results = check(hermes_home, env={**env, "HERMES_DASHBOARD": "Yes"})
    assert [(r.name, r.ok) for r in results] == [("dashboard", True)]
    down = {**env, "HERMES_DASHBOARD": "1", "HERMES_DASHBOARD_PORT": str(free_port())}
    assert [r.ok for r in check(hermes_home, env=down, timeout=1)] == [False]
    bad = {**env, "HERMES_DASHBOARD": "1", "HERMES_DASHBOARD_PORT": "nope"}
    assert [r.ok for r in check(hermes_home, env=bad)] == [False]


def test_profile_without_port_is_unhealthy(hermes_home: HermesHome) -> None:
    ensure_default_profile(hermes_home)
    (hermes_home.root / "config.yaml").write_text("model: {}\n")
    results = check(hermes_home, env={})
    assert len(results) == 1 and not results[0].ok and "port" in results[0].detail


def test_cli_exit_codes_and_json(hermes_home: HermesHome, server: int) -> None:
    ensure_default_profile(hermes_home)
    _set_port(hermes_home, "default", server)
    ok = subprocess.run(
        [sys.executable, "-m", "hermes_container", "healthcheck", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["healthy"] is True
    _set_port(hermes_home, "default", free_port())
    bad = subprocess.run(
        [sys.executable, "-m", "hermes_container", "healthcheck", "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 1
    assert "FAIL gateway default" in bad.stdout and bad.stdout.strip().endswith("unhealthy")


def test_healthcheck_imports_nothing_heavy(hermes_home: HermesHome, tmp_path: Path) -> None:
    ensure_default_profile(hermes_home)
    code = (
        "import sys\n"
        "from hermes_container.cli import main\n"
        "main(['healthcheck', '--timeout', '0.2'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('fastapi', 'uvicorn', 'authlib', 'httpx', 'starlette', 'pydantic')"
        # The HEALTHCHECK runs every 30 s: no http.client (email, ssl), logging or dataclasses.
        " or m in ('http.client', 'ssl', 'email', 'logging', 'dataclasses', 'subprocess'))\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert "HEAVY []" in proc.stderr, proc.stderr


class _RawServer:
    """Accepts connections and answers each with fixed bytes (or nothing)."""

    def __init__(self, reply: bytes | None) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.reply = reply
        self.requests: list[bytes] = []
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.requests.append(conn.recv(4096))
            if self.reply is None:
                self.held.append(conn)  # accept, read, never answer
                continue
            conn.sendall(self.reply)
            conn.close()

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def raw_server(request: pytest.FixtureRequest) -> Iterator[_RawServer]:
    srv = _RawServer(request.param)
    yield srv
    srv.close()


@pytest.mark.parametrize(
    "raw_server", [b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"], indirect=True
)
def test_probe_reports_a_non_2xx_status(raw_server: _RawServer) -> None:
    from hermes_container.healthcheck import Probe, http_get_status, run_probe

    assert http_get_status("127.0.0.1", raw_server.port, "/health", 2) == 503
    result = run_probe(Probe("gateway x", "127.0.0.1", raw_server.port, "/health"), 2)
    assert not result.ok and result.detail == f"127.0.0.1:{raw_server.port}/health: HTTP 503"
    request = raw_server.requests[0].decode()
    assert request.startswith("GET /health HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{raw_server.port}\r\n" in request
    assert "Connection: close\r\n" in request


@pytest.mark.parametrize("raw_server", [b"SSH-2.0-OpenSSH_9.2\r\n", b""], indirect=True)
def test_probe_of_something_that_is_not_http_fails(raw_server: _RawServer) -> None:
    from hermes_container.healthcheck import Probe, run_probe

    result = run_probe(Probe("dashboard", "127.0.0.1", raw_server.port, "/api/status"), 2)
    assert not result.ok
    assert "not an HTTP response" in result.detail or "empty response" in result.detail


@pytest.mark.parametrize("raw_server", [None], indirect=True)
def test_probe_of_a_server_that_never_answers_times_out(raw_server: _RawServer) -> None:
    from hermes_container.healthcheck import Probe, run_probe

    result = run_probe(Probe("gateway x", "127.0.0.1", raw_server.port, "/health"), 0.3)
    assert not result.ok and result.detail.endswith("timed out"), result.detail


def test_probe_of_a_closed_port_names_the_reason() -> None:
    from hermes_container.healthcheck import Probe, run_probe

    port = free_port()
    result = run_probe(Probe("gateway x", "127.0.0.1", port, "/health"), 2)
    assert not result.ok and result.detail == f"127.0.0.1:{port}/health: Connection refused"


def test_ingress_checked_only_when_a_tree_runs_it(hermes_home: HermesHome, server: int) -> None:
    """A supervision tree starts the ingress unless HERMES_INGRESS is off, so a tree's
    healthcheck probes its /health; loose gateways have no ingress to probe."""
    ensure_default_profile(hermes_home)
    write_desired(hermes_home.root, "stopped")
    env = {"HERMES_INGRESS_PORT": str(server)}
    up = check(hermes_home, env=env, supervised=True)
    assert [(r.name, r.ok) for r in up] == [("ingress", True)]
    assert "/health" in up[0].detail
    assert check(hermes_home, env=env, supervised=False) == []
    assert check(hermes_home, env={**env, "HERMES_INGRESS": "0"}, supervised=True) == []
    down = check(hermes_home, env={"HERMES_INGRESS_PORT": str(free_port())}, supervised=True)
    assert [(r.name, r.ok) for r in down] == [("ingress", False)]
    bad = check(hermes_home, env={"HERMES_INGRESS_PORT": "http"}, supervised=True)
    assert not bad[0].ok and "HERMES_INGRESS_PORT" in bad[0].detail


# -- the Kubernetes probes: --liveness and --readiness ------------------------------------


@pytest.fixture
def live_scandir(tmp_path: Path) -> Iterator[Path]:
    """A scandir whose control FIFO has a reader, which is how s6-svscanctl (and the
    probe) tell that an s6-svscan runs on it; the s6 tier runs a real one."""
    scandir = tmp_path / "service"
    (scandir / ".s6-svscan").mkdir(parents=True)
    fifo = scandir / ".s6-svscan" / "control"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    yield scandir
    os.close(reader)


def _names_ok(results: list[CheckResult]) -> list[tuple[str, bool]]:
    return [(r.name, r.ok) for r in results]


def test_liveness_needs_a_live_svscan_and_ignores_every_gateway(
    hermes_home: HermesHome, live_scandir: Path
) -> None:
    ensure_default_profile(hermes_home)
    _set_port(hermes_home, "default", free_port())  # desired running, and down
    broken = create_profile(hermes_home, "broken")
    write_desired(broken, "running")
    write_observed(broken, gateway_state="startup_failed", exit_code=78, exit_reason="no key")
    env = {"HERMES_S6_SCANDIR": str(live_scandir), "HERMES_INGRESS": "0"}
    live = check(hermes_home, env=env, mode=LIVENESS)
    assert _names_ok(live) == [("supervision", True)]
    assert "s6-svscan is running" in live[0].detail
    # The plain HEALTHCHECK still fails for the same gateways.
    assert not all(r.ok for r in check(hermes_home, env=env, timeout=1))

    missing = {"HERMES_S6_SCANDIR": str(live_scandir.parent / "nowhere")}
    gone = check(hermes_home, env=missing, mode=LIVENESS)
    assert _names_ok(gone) == [("supervision", False)]
    assert "no such scandir" in gone[0].detail


def test_liveness_fails_when_nothing_reads_the_control_fifo(
    hermes_home: HermesHome, tmp_path: Path
) -> None:
    scandir = tmp_path / "service"
    (scandir / ".s6-svscan").mkdir(parents=True)
    os.mkfifo(scandir / ".s6-svscan" / "control")  # left by an s6-svscan that died
    results = check(hermes_home, env={"HERMES_S6_SCANDIR": str(scandir)}, mode=LIVENESS)
    assert _names_ok(results) == [("supervision", False)]
    assert "no s6-svscan runs on it" in results[0].detail


def test_liveness_checks_the_dashboard_only_when_enabled(
    hermes_home: HermesHome, live_scandir: Path, server: int
) -> None:
    env = {
        "HERMES_S6_SCANDIR": str(live_scandir),
        "HERMES_DASHBOARD_HOST": "0.0.0.0",
        "HERMES_DASHBOARD_PORT": str(server),
        "HERMES_INGRESS_PORT": str(free_port()),  # the ingress is readiness's business
    }
    assert _names_ok(check(hermes_home, env=env, mode=LIVENESS)) == [("supervision", True)]
    on = {**env, "HERMES_DASHBOARD": "1"}
    assert _names_ok(check(hermes_home, env=on, mode=LIVENESS)) == [
        ("supervision", True),
        ("dashboard", True),
    ]
    down = {**on, "HERMES_DASHBOARD_PORT": str(free_port())}
    assert _names_ok(check(hermes_home, env=down, timeout=1, mode=LIVENESS)) == [
        ("supervision", True),
        ("dashboard", False),
    ]


def test_readiness_needs_the_recorded_running_state_and_an_answer(
    hermes_home: HermesHome, server: int
) -> None:
    ensure_default_profile(hermes_home)
    _set_port(hermes_home, "default", server)
    # Answers, but has recorded no state yet: a gateway writes `running` once its port
    # accepts, so until then it is not ready, and the port is not even probed.
    first = check(hermes_home, env={}, mode=READINESS)
    assert _names_ok(first) == [("gateway default", False)]
    assert first[0].detail.startswith("not ready: no state recorded")
    write_observed(hermes_home.root, gateway_state="starting")
    assert check(hermes_home, env={}, mode=READINESS)[0].detail == "not ready: starting"
    write_observed(hermes_home.root, gateway_state="running")
    ready = check(hermes_home, env={}, mode=READINESS)
    assert _names_ok(ready) == [("gateway default", True)]
    assert ready[0].detail.endswith("/health: HTTP 200")
    # Recorded running but not answering (killed, its finish not run yet): not ready.
    _set_port(hermes_home, "default", free_port())
    assert _names_ok(check(hermes_home, env={}, timeout=1, mode=READINESS)) == [
        ("gateway default", False)
    ]


def test_readiness_reports_why_a_parked_profile_is_not_ready(hermes_home: HermesHome) -> None:
    ensure_default_profile(hermes_home)
    write_desired(hermes_home.root, "stopped")  # stopped by the user: never looked at
    broken = create_profile(hermes_home, "broken")
    write_desired(broken, "running")
    write_observed(
        broken, gateway_state="startup_failed", exit_code=78, exit_reason="model.api_key is empty"
    )
    results = check(hermes_home, env={}, mode=READINESS)
    assert _names_ok(results) == [("gateway broken", False)]
    assert results[0].detail == "not ready: startup_failed: model.api_key is empty"


def test_readiness_checks_the_ingress_of_a_tree_but_not_the_dashboard(
    hermes_home: HermesHome, server: int
) -> None:
    ensure_default_profile(hermes_home)
    write_desired(hermes_home.root, "stopped")
    env = {
        "HERMES_INGRESS_PORT": str(server),
        "HERMES_DASHBOARD": "1",
        "HERMES_DASHBOARD_PORT": str(free_port()),  # down: liveness's business
    }
    assert _names_ok(check(hermes_home, env=env, supervised=True, mode=READINESS)) == [
        ("ingress", True)
    ]
    assert check(hermes_home, env=env, supervised=False, mode=READINESS) == []
    down = {**env, "HERMES_INGRESS_PORT": str(free_port())}
    assert _names_ok(check(hermes_home, env=down, supervised=True, mode=READINESS)) == [
        ("ingress", False)
    ]


def test_cli_probe_flags(hermes_home: HermesHome, live_scandir: Path, server: int) -> None:
    ensure_default_profile(hermes_home)
    _set_port(hermes_home, "default", server)
    write_observed(hermes_home.root, gateway_state="startup_failed", exit_reason="bad port")
    env = {"HERMES_S6_SCANDIR": str(live_scandir), "HERMES_INGRESS": "0"}
    live = run_hermes("healthcheck", "--liveness", "--json", env=env)
    assert live.returncode == 0, live.stderr
    body = json.loads(live.stdout)
    assert body["probe"] == "liveness" and body["healthy"] is True
    assert [c["name"] for c in body["checks"]] == ["supervision"]

    ready = run_hermes("healthcheck", "--readiness", env=env)
    assert ready.returncode == 1
    assert "FAIL gateway default: not ready: startup_failed: bad port" in ready.stdout
    assert ready.stdout.strip().endswith("not ready")

    gone = run_hermes(
        "healthcheck", "--liveness", env={"HERMES_S6_SCANDIR": str(live_scandir / "x")}
    )
    assert gone.returncode == 1 and gone.stdout.strip().endswith("not live")

    both = run_hermes("healthcheck", "--liveness", "--readiness", env=env)
    assert both.returncode == 2 and "not allowed with" in both.stderr
    assert both.stdout == ""


@pytest.mark.parametrize("flag", ["--liveness", "--readiness"])
def test_probes_import_nothing_heavy(hermes_home: HermesHome, flag: str) -> None:
    ensure_default_profile(hermes_home)
    write_desired(hermes_home.root, "running")
    code = (
        "import sys\n"
        "from hermes_container.cli import main\n"
        f"main(['healthcheck', {flag!r}, '--timeout', '0.2'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('fastapi', 'uvicorn', 'authlib', 'httpx', 'starlette', 'pydantic')"
        # kubelet runs these every few seconds: as light as the HEALTHCHECK.
        " or m in ('http.client', 'ssl', 'email', 'logging', 'dataclasses', 'subprocess'))\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert "HEAVY []" in proc.stderr, proc.stderr
