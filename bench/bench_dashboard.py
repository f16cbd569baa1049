"""Dashboard: `/api/status` and `/api/profiles` throughput and p99 with wrk, and RSS.

Runs the real `hermes dashboard` (uvicorn, single process) on 127.0.0.1 with a home
of BENCH_PROFILES profiles, loads it with `wrk` (Debian package) and reads VmRSS of
the server process: idle in both auth modes, and in OAuth mode again once idle after
three real OIDC logins (authlib, TLS and JWKS loaded; needs the test extras' provider).
When s6 is installed, the loopback-mode dashboard runs inside a live s6-svscan tree
whose slots `hermes reconcile` registered (down: desired `stopped`), so `/api/profiles`
reads real s6 status for every profile. `/api/profiles` is gated: wrk sends the
loopback session token header (`X-Hermes-Session-Token`, a fixed
HERMES_DASHBOARD_SESSION_TOKEN for the run).
Targets: >= 3,000 req/s `/api/status` on 2 cores, RSS <= 70 MB; `/api/profiles` is
reported. Exit status 1 when a target is missed.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from _ports import free_port
from _s6tree import running_svscan

from hermes_container.state import write_desired

DURATION = os.environ.get("BENCH_DURATION", "10s")
CONNECTIONS = os.environ.get("BENCH_CONNECTIONS", "32")
THREADS = os.environ.get("BENCH_THREADS", "1")  # leave the other core to the server
PROFILES = int(os.environ.get("BENCH_PROFILES", "5"))
TARGET_RPS = 3000.0
TOKEN = "bench-dashboard-session-token-7d1f"
TOKEN_HEADER = "X-Hermes-Session-Token"
TARGET_RSS_MB = 70.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def get(port: int, path: str) -> int:
    with socket.create_connection(("127.0.0.1", port), 2) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        return int(sock.recv(64).split(b" ", 2)[1])


@contextlib.contextmanager
def dashboard(env: dict[str, str]) -> Iterator[tuple[int, int]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hermes_container", "dashboard", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if get(port, "/api/status") == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the dashboard did not come up")
            time.sleep(0.1)
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


def oauth_vars(issuer: str) -> dict[str, str]:
    return {
        "HERMES_DASHBOARD_OIDC_ISSUER": issuer,  # discovery is lazy: no provider needed yet
        "HERMES_DASHBOARD_OIDC_CLIENT_ID": "bench",
        "HERMES_DASHBOARD_OIDC_CLIENT_SECRET": "bench",
        "HERMES_DASHBOARD_ALLOWED_EMAILS": "bench@example.com",
        # OAuth mode serves known hosts only; the redirect URI then comes from this one.
        "HERMES_DASHBOARD_ALLOWED_HOSTS": "127.0.0.1",
    }


def idle_rss(port: int, pid: int) -> float:
    for path in ("/api/status", "/", "/api/auth/providers"):
        get(port, path)  # touch the common code paths once
    time.sleep(2)
    return rss_mb(pid)


def rss_after_logins(env: dict[str, str]) -> tuple[float, str]:
    """RSS once idle again after 3 real logins, or after a login try without a provider."""
    try:
        import httpx

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.unit.dashboard_support import oidc_provider
    except ImportError:
        with dashboard({**env, **oauth_vars("http://127.0.0.1:9")}) as (port, pid):
            get(port, "/auth/login/oidc")  # loads authlib; discovery fails
            time.sleep(1)
            return rss_mb(pid), "RSS, OAuth after a login try"
    users = [("bench", {"email": "bench@example.com", "email_verified": True})]
    with oidc_provider(users) as issuer, dashboard({**env, **oauth_vars(issuer)}) as (port, pid):
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base) as browser:
            for _ in range(3):
                start = browser.get("/auth/login/oidc")
                idp = httpx.post(start.headers["location"], data={"sub": "bench"})
                done = browser.get(idp.headers["location"].removeprefix(base))
                if done.status_code != 303:
                    raise RuntimeError(f"login failed: {done.status_code}")
                for path in ("/", "/api/profiles", "/logs/audit"):
                    browser.get(path).raise_for_status()
        time.sleep(2)
        return rss_mb(pid), "RSS, OAuth after 3 logins"


@contextlib.contextmanager
def s6_tree(env: dict[str, str]) -> Iterator[tuple[dict[str, str], str]]:
    """A live s6-svscan on a temp scandir with every profile's slot registered (down).

    Yields the env to run the dashboard with and a note; without s6 the env unchanged.
    """
    if shutil.which("s6-svscan") is None:
        yield env, "no s6 tree (s6-svscan not installed)"
        return
    base = Path(tempfile.mkdtemp(prefix="bench-dashboard-s6-"))
    scandir = base / "service"
    scandir.mkdir()
    env = {
        **env,
        "HERMES_S6_SCANDIR": str(scandir),
        "HERMES_GATEWAY_STAGGER": "0",
        "HERMES_ALLOW_ROOT_GATEWAY": "1",
    }
    write_desired(Path(env["HERMES_HOME"]), "stopped")  # the default slot stays down too
    try:
        with running_svscan(scandir, env, stop_timeout=30):
            subprocess.run(
                [sys.executable, "-m", "hermes_container", "reconcile"],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            slots = len(list(scandir.glob("gateway-*")))
            yield env, f"live s6 tree, {slots} slots registered and down"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run_wrk(port: int, path: str = "/api/status", token: str | None = None) -> tuple[float, str]:
    header = ["-H", f"{TOKEN_HEADER}: {token}"] if token else []
    out = subprocess.run(
        [
            "wrk",
            f"-t{THREADS}",
            f"-c{CONNECTIONS}",
            f"-d{DURATION}",
            "--latency",
            *header,
            f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out:
        raise RuntimeError("wrk saw errors:\n" + out)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    return rps, p99


def check_profiles(port: int, expected: int) -> None:
    """The gated endpoint really answers with the token (and only with it)."""
    headers = {"Host": f"127.0.0.1:{port}"}
    with contextlib.closing(http.client.HTTPConnection("127.0.0.1", port, timeout=5)) as conn:
        conn.request("GET", "/api/profiles", headers=headers)
        denied = conn.getresponse()
        denied.read()
        conn.request("GET", "/api/profiles", headers={**headers, TOKEN_HEADER: TOKEN})
        answer = conn.getresponse()
        body = json.loads(answer.read())
    if denied.status != 401 or answer.status != 200 or len(body["profiles"]) != expected:
        raise RuntimeError(f"/api/profiles: {denied.status} without token, {answer.status} with")


def main() -> int:
    if shutil.which("wrk") is None:
        print("wrk not found (apt-get install wrk)")
        return 1
    with tempfile.TemporaryDirectory() as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERMES_DASHBOARD_")}
        env["HERMES_HOME"] = home
        for i in range(PROFILES - 1):
            subprocess.run(
                [sys.executable, "-m", "hermes_container", "profile", "create", f"p{i}"],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
        with (
            s6_tree({**env, "HERMES_DASHBOARD_SESSION_TOKEN": TOKEN}) as (
                tree_env,
                tree_note,
            ),
            dashboard(tree_env) as (port, pid),
        ):
            rss_token = idle_rss(port, pid)
            run_wrk(port)  # warm-up
            rps, p99 = run_wrk(port)
            check_profiles(port, PROFILES)
            run_wrk(port, "/api/profiles", TOKEN)  # warm-up
            profiles_rps, profiles_p99 = run_wrk(port, "/api/profiles", TOKEN)
            rss_loaded = rss_mb(pid)
        # The same endpoint with no supervisor: rows from the state files alone, so the
        # difference is the cost of the per-profile s6 status reads.
        with dashboard({**env, "HERMES_DASHBOARD_SESSION_TOKEN": TOKEN}) as (port, pid):
            check_profiles(port, PROFILES)
            run_wrk(port, "/api/profiles", TOKEN)  # warm-up
            bare_rps, bare_p99 = run_wrk(port, "/api/profiles", TOKEN)
        with dashboard({**env, **oauth_vars("http://127.0.0.1:9")}) as (port, pid):
            rss_oauth = idle_rss(port, pid)
        rss_login, login_label = rss_after_logins(env)
    rss_ok = f"<= {TARGET_RSS_MB:.0f}"
    rows = [
        ("/api/status throughput", f"{rps:,.0f} req/s", f">= {TARGET_RPS:,.0f}", rps >= TARGET_RPS),
        ("/api/status p99 latency", p99, "(reported)", True),
        ("/api/profiles throughput", f"{profiles_rps:,.0f} req/s", "(reported)", True),
        ("/api/profiles p99 latency", profiles_p99, "(reported)", True),
        ("/api/profiles, no s6 tree", f"{bare_rps:,.0f} req/s", "(reported)", True),
        ("/api/profiles p99, no s6", bare_p99, "(reported)", True),
        ("idle RSS, loopback mode", f"{rss_token:.1f} MB", rss_ok, rss_token <= TARGET_RSS_MB),
        ("idle RSS, OAuth mode", f"{rss_oauth:.1f} MB", rss_ok, rss_oauth <= TARGET_RSS_MB),
        (login_label, f"{rss_login:.1f} MB", rss_ok, rss_login <= TARGET_RSS_MB),
        ("RSS after the wrk load", f"{rss_loaded:.1f} MB", "(reported)", True),
    ]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"dashboard bench: {os.cpu_count()} cores, wrk -t{THREADS} -c{CONNECTIONS} "
        f"-d{DURATION}, {PROFILES} profiles, load average {load} "
        "(other work on the box skews req/s and p99)"
    )
    print(f"loopback mode ran in: {tree_note}; /api/profiles sends {TOKEN_HEADER}")
    for label, value, target, ok in rows:
        print(f"{label:<28} {value:>14}  target {target:<10} {'met' if ok else 'MISSED'}")
    return 0 if all(ok for *_, ok in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
