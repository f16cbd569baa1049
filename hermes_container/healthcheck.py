"""`hermes healthcheck`: is this tree doing what the user asked for?

Healthy when
  - the dashboard, if enabled (`HERMES_DASHBOARD=1|true|yes`), answers `GET /api/status`, and
  - every profile whose *desired* state is `running` answers `GET /health` on its port
    (the `default` profile counts as desired-running while it has no state yet).
A profile the user stopped is not checked, so `gateway stop` keeps the container healthy,
while a desired-running gateway that is parked (config error, crash loop) makes it unhealthy.

It is what the image's HEALTHCHECK runs every few seconds, so it stays cheap: stdlib
`http.client` only (no FastAPI, uvicorn, authlib or httpx, and no proxy settings), all
probes in parallel, each bounded by a short timeout.
"""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from hermes_container.config import DASHBOARD_DEFAULT_PORT, load_config
from hermes_container.errors import HermesError
from hermes_container.home import DEFAULT_PROFILE, HermesHome
from hermes_container.profiles import list_profiles
from hermes_container.state import read_state

DEFAULT_TIMEOUT = 3.0
TRUTHY = frozenset({"1", "true", "yes"})
WILDCARD_HOSTS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}


@dataclass(frozen=True)
class Probe:
    """One thing to check: an HTTP GET that must answer 2xx."""

    name: str
    host: str
    port: int | None
    path: str
    problem: str | None = None  # set when the probe cannot even be attempted


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def is_truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in TRUTHY


def probe_host(bind_host: str) -> str:
    """Where to connect to reach a server bound to `bind_host` (wildcards -> loopback)."""
    host = bind_host.strip()
    return WILDCARD_HOSTS.get(host, host.strip("[]"))


def _port_from_env(
    env: Mapping[str, str], name: str, default: int
) -> tuple[int | None, str | None]:
    raw = env.get(name, "").strip()
    if not raw:
        return default, None
    try:
        port = int(raw)
    except ValueError:
        return None, f"{name}={raw!r} is not a port number"
    if not 1 <= port <= 65535:
        return None, f"{name}={port} is outside 1-65535"
    return port, None


def dashboard_probe(env: Mapping[str, str]) -> Probe | None:
    """The dashboard's probe, or None when the dashboard is not enabled."""
    if not is_truthy(env.get("HERMES_DASHBOARD")):
        return None
    port, problem = _port_from_env(env, "HERMES_DASHBOARD_PORT", DASHBOARD_DEFAULT_PORT)
    host = probe_host(env.get("HERMES_DASHBOARD_HOST", "127.0.0.1"))
    return Probe("dashboard", host, port, "/api/status", problem)


def desired_running(home: HermesHome, profile: str) -> bool:
    state = read_state(home.profile_dir(profile), warn=False)
    if state.desired_state is None:
        # No desired state yet: the reconciler starts `default` on first boot.
        return profile == DEFAULT_PROFILE
    return state.desired_state == "running"


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


def collect_probes(home: HermesHome, env: Mapping[str, str]) -> list[Probe]:
    probes = []
    dashboard = dashboard_probe(env)
    if dashboard is not None:
        probes.append(dashboard)
    for profile in list_profiles(home):
        if desired_running(home, profile):
            probes.append(gateway_probe(home, profile, env))
    return probes


def run_probe(probe: Probe, timeout: float) -> CheckResult:
    if probe.problem is not None or probe.port is None:
        return CheckResult(probe.name, False, probe.problem or "no port")
    where = f"{probe.host}:{probe.port}{probe.path}"
    conn = http.client.HTTPConnection(probe.host, probe.port, timeout=timeout)
    try:
        conn.request("GET", probe.path, headers={"User-Agent": "hermes-healthcheck"})
        response = conn.getresponse()
        response.read(65536)
    except (OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return CheckResult(probe.name, False, f"{where}: {reason}")
    finally:
        conn.close()
    if 200 <= response.status < 300:
        return CheckResult(probe.name, True, f"{where}: HTTP {response.status}")
    return CheckResult(probe.name, False, f"{where}: HTTP {response.status}")


def check(
    home: HermesHome, env: Mapping[str, str] | None = None, timeout: float = DEFAULT_TIMEOUT
) -> list[CheckResult]:
    """Run every probe (in parallel) and return one result per probe."""
    environ = os.environ if env is None else env
    probes = collect_probes(home, environ)
    if not probes:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(probes))) as pool:
        return list(pool.map(lambda p: run_probe(p, timeout), probes))


def healthcheck_command(*, as_json: bool = False, timeout: float = DEFAULT_TIMEOUT) -> int:
    """Print the results; 0 when healthy, 1 when not (what docker's HEALTHCHECK expects)."""
    results = check(HermesHome.from_env(), timeout=timeout)
    healthy = all(r.ok for r in results)
    if as_json:
        body = {"healthy": healthy, "checks": [r.to_json() for r in results]}
        print(json.dumps(body, indent=2))
    else:
        for result in results:
            print(f"{'ok  ' if result.ok else 'FAIL'} {result.name}: {result.detail}")
        if not results:
            print("ok   nothing to check (dashboard disabled, no gateway desired running)")
        print("healthy" if healthy else "unhealthy")
    return 0 if healthy else 1
