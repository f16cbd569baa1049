"""`hermes healthcheck`: is this tree doing what the user asked for?

Three probes, one module. The plain check (the image's Docker HEALTHCHECK) is healthy when
  - the dashboard, if enabled (`HERMES_DASHBOARD=1|true|yes`), answers `GET /api/status`,
  - the ingress, when a supervision tree runs here and has it on (`HERMES_INGRESS` is not
    0|false|no: every tree starts it then), answers `GET /health`, and
  - every profile whose *desired* state is `running` answers `GET /health` on its port
    (as the boot reconciler reads it: `state.desired_or_default`, so the `default` profile
    counts as desired-running while it has no state yet).
A profile the user stopped is not checked, so `gateway stop` keeps the container healthy,
while a desired-running gateway that is parked (config error, crash loop) makes it unhealthy.

Kubernetes asks two narrower questions, because it acts differently on each answer:
  - liveness (`--liveness`; a failure restarts the pod): an s6-svscan runs on the gateways'
    scandir and the dashboard, if enabled, answers. No gateway is looked at: a parked or
    crash-looping profile is that profile's problem, and restarting the pod for it would
    take every other profile down with it, again and again;
  - readiness (`--readiness`; a failure only takes the pod out of its Services): the
    ingress answers (when a tree runs it), and every desired-running gateway has recorded
    `running` in its state file (it does so once its port accepts, the moment it signals
    s6 readiness) and answers `GET /health`.

Every probe runs every 10-30 s, so this stays cheap: one plain HTTP/1.1 GET per probe
over a socket (no http.client, which drags in email and ssl; no FastAPI, uvicorn,
authlib or httpx; no proxy settings), all probes in parallel, each bounded by a short
timeout, and no subprocess (s6-svscan's liveness is an open() of its control FIFO). The
command (hermes_container.commands.healthcheck) prints the results.
"""

from __future__ import annotations

import os
import socket
import threading
import time

from hermes_container.config import (
    DASHBOARD_DEFAULT_PORT,
    INGRESS_DEFAULT_PORT,
    env_port,
    load_config,
)
from hermes_container.envflags import env_flag, env_switch
from hermes_container.errors import ConfigError, HermesError
from hermes_container.home import HermesHome
from hermes_container.profiles import list_profiles
from hermes_container.record import Record
from hermes_container.state import desired_or_default, read_state

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from hermes_container.state import GatewayState

DEFAULT_TIMEOUT = 3.0
# The three questions (see the module's docstring).
HEALTH = "health"
LIVENESS = "liveness"
READINESS = "readiness"
MODES = (HEALTH, LIVENESS, READINESS)
WILDCARD_HOSTS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}


class Probe(Record):
    """One thing to check: an HTTP GET that must answer 2xx."""

    __slots__ = ("host", "name", "path", "port", "problem")

    def __init__(
        self,
        name: str,
        host: str,
        port: int | None,
        path: str,
        problem: str | None = None,  # set when the probe cannot even be attempted
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.path = path
        self.problem = problem


class CheckResult(Record):
    __slots__ = ("detail", "name", "ok")

    def __init__(self, name: str, ok: bool, detail: str) -> None:
        self.name = name
        self.ok = ok
        self.detail = detail

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def probe_host(bind_host: str) -> str:
    """Where to connect to reach a server bound to `bind_host` (wildcards -> loopback)."""
    host = bind_host.strip()
    return WILDCARD_HOSTS.get(host, host.strip("[]"))


def dashboard_probe(env: Mapping[str, str]) -> Probe | None:
    """The dashboard's probe, or None when the dashboard is not enabled."""
    if not env_flag("HERMES_DASHBOARD", env):
        return None
    port: int | None
    problem: str | None = None
    try:
        port = env_port("HERMES_DASHBOARD_PORT", DASHBOARD_DEFAULT_PORT, env)
    except ConfigError as exc:
        port, problem = None, exc.message
    host = probe_host(env.get("HERMES_DASHBOARD_HOST", "127.0.0.1"))
    return Probe("dashboard", host, port, "/api/status", problem)


def ingress_probe(env: Mapping[str, str]) -> Probe | None:
    """The ingress's probe, or None when it is switched off."""
    # The names and defaults of `hermes ingress run`, whose module this one does not
    # import: it would pull in the server's imports.
    if not env_switch("HERMES_INGRESS", env):
        return None
    port: int | None
    problem: str | None = None
    try:
        port = env_port("HERMES_INGRESS_PORT", INGRESS_DEFAULT_PORT, env)
    except ConfigError as exc:
        port, problem = None, exc.message
    host = probe_host(env.get("HERMES_INGRESS_HOST", "127.0.0.1"))
    return Probe("ingress", host, port, "/health", problem)


def gateway_probe(home: HermesHome, profile: str, env: Mapping[str, str]) -> Probe:
    name = f"gateway {profile}"
    try:
        config = load_config(home.profile_dir(profile))
    except HermesError as exc:
        return Probe(name, "", None, "/health", str(exc))
    if config.port is None:
        return Probe(name, "", None, "/health", "config.yaml has no valid gateway.port")
    gateway = config.raw.get("gateway")
    host = gateway.get("host") if isinstance(gateway, dict) else None
    if not isinstance(host, str) or not host.strip():
        host = env.get("HERMES_GATEWAY_HOST", "")
    return Probe(name, probe_host(host), config.port, "/health")


def _tree_runs_here(home: HermesHome) -> bool:
    from hermes_container.supervision import live_scandir

    return live_scandir(home) is not None


def supervision_check(home: HermesHome, env: Mapping[str, str]) -> CheckResult:
    """Liveness of the supervision tree: an s6-svscan reads the gateways' scandir."""
    from hermes_container.supervision.scandir import resolve_scandir, svscan_alive

    scandir = resolve_scandir(home, dict(env))
    if not scandir.is_dir():
        return CheckResult("supervision", False, f"{scandir}: no such scandir")
    if not svscan_alive(scandir):
        return CheckResult("supervision", False, f"{scandir}: no s6-svscan runs on it")
    return CheckResult("supervision", True, f"{scandir}: s6-svscan is running")


def _not_ready(state: GatewayState) -> str | None:
    """Why a desired-running gateway is not ready by its state file, None when it is."""
    if state.gateway_state == "running":
        return None
    words = state.gateway_state or f"no state recorded ({state.problem or 'empty'})"
    if state.gateway_state in ("startup_failed", "crashed") and state.exit_reason:
        words += f": {state.exit_reason}"
    return f"not ready: {words}"


def collect_probes(
    home: HermesHome,
    env: Mapping[str, str],
    supervised: bool | None = None,
    mode: str = HEALTH,
) -> list[Probe]:
    """What to probe for `mode`; `supervised` says whether a supervision tree runs here
    (None: look).

    The ingress runs only as part of a tree (the image's s6-rc service, or `hermes
    supervise`), so a home served by loose `hermes gateway run`s is not expected to
    have one.
    """
    probes = []
    if mode in (HEALTH, LIVENESS):
        dashboard = dashboard_probe(env)
        if dashboard is not None:
            probes.append(dashboard)
    if mode == LIVENESS:
        return probes
    ingress = ingress_probe(env)
    if ingress is not None and (supervised if supervised is not None else _tree_runs_here(home)):
        probes.append(ingress)
    for profile in list_profiles(home):
        state = read_state(home.profile_dir(profile), warn=False)
        if desired_or_default(profile, state) != "running":
            continue
        probe = gateway_probe(home, profile, env)
        if mode == READINESS and probe.problem is None:
            probe.problem = _not_ready(state)
        probes.append(probe)
    return probes


def run_probe(probe: Probe, timeout: float) -> CheckResult:
    if probe.problem is not None or probe.port is None:
        return CheckResult(probe.name, False, probe.problem or "no port")
    where = f"{probe.host}:{probe.port}{probe.path}"
    try:
        status = http_get_status(probe.host, probe.port, probe.path, timeout)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return CheckResult(probe.name, False, f"{where}: {reason}")
    return CheckResult(probe.name, 200 <= status < 300, f"{where}: HTTP {status}")


def http_get_status(host: str, port: int, path: str, timeout: float) -> int:
    """The status code of `GET path`; the whole exchange is bounded by `timeout`.

    OSError when the server cannot be reached or stops answering, ValueError when what
    comes back is not an HTTP response.
    """
    deadline = time.monotonic() + timeout
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {authority}\r\n"
        "User-Agent: hermes-healthcheck\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request.encode("ascii"))
        head = b""
        while b"\r\n" not in head and len(head) < 4096:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP response: {line[:60]!r}" if line else "empty response")
    return int(parts[1])


def check(
    home: HermesHome,
    env: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    supervised: bool | None = None,
    mode: str = HEALTH,
) -> list[CheckResult]:
    """Run every probe of `mode` (in parallel) and return one result per probe."""
    if mode not in MODES:
        raise ValueError(f"unknown probe {mode!r}")
    environ = os.environ if env is None else env
    first = [supervision_check(home, environ)] if mode == LIVENESS else []
    probes = collect_probes(home, environ, supervised, mode)
    if not probes:
        return first
    # One thread per probe (concurrent.futures would import logging): each is bounded
    # by `timeout`, so the whole check takes about one timeout at worst.
    results: list[CheckResult | None] = [None] * len(probes)

    def run(index: int) -> None:
        results[index] = run_probe(probes[index], timeout)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(probes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return first + [
        result or CheckResult(probe.name, False, "probe failed")
        for probe, result in zip(probes, results, strict=True)
    ]


def healthcheck(timeout: float = DEFAULT_TIMEOUT, mode: str = HEALTH) -> list[CheckResult]:
    """The checks of this container's home (HERMES_HOME, the environment's settings);
    it passes when every result is ok (none at all passes too)."""
    return check(HermesHome.from_env(), timeout=timeout, mode=mode)
