"""Dashboard: `/api/status` throughput and p99 with wrk, and RSS from /proc.

Runs the real `hermes dashboard` (uvicorn, single process) on 127.0.0.1 with a home
of BENCH_PROFILES profiles, loads it with `wrk` (Debian package) and reads VmRSS of
the server process: idle in both auth modes, and in OAuth mode again once idle after
three real OIDC logins (authlib, TLS and JWKS loaded; needs the test extras' provider).
Targets: >= 3,000 req/s on 2 cores, RSS <= 70 MB. Exit status 1 when one is missed.
"""

from __future__ import annotations

import contextlib
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

DURATION = os.environ.get("BENCH_DURATION", "10s")
CONNECTIONS = os.environ.get("BENCH_CONNECTIONS", "32")
THREADS = os.environ.get("BENCH_THREADS", "1")  # leave the other core to the server
PROFILES = int(os.environ.get("BENCH_PROFILES", "5"))
TARGET_RPS = 3000.0
TARGET_RSS_MB = 70.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def run_wrk(port: int) -> tuple[float, str]:
    out = subprocess.run(
        [
            "wrk",
            f"-t{THREADS}",
            f"-c{CONNECTIONS}",
            f"-d{DURATION}",
            "--latency",
            f"http://127.0.0.1:{port}/api/status",
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
        with dashboard(env) as (port, pid):
            rss_token = idle_rss(port, pid)
            run_wrk(port)  # warm-up
            rps, p99 = run_wrk(port)
            rss_loaded = rss_mb(pid)
        with dashboard({**env, **oauth_vars("http://127.0.0.1:9")}) as (port, pid):
            rss_oauth = idle_rss(port, pid)
        rss_login, login_label = rss_after_logins(env)
    rss_ok = f"<= {TARGET_RSS_MB:.0f}"
    rows = [
        ("/api/status throughput", f"{rps:,.0f} req/s", f">= {TARGET_RPS:,.0f}", rps >= TARGET_RPS),
        ("/api/status p99 latency", p99, "(reported)", True),
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
    for label, value, target, ok in rows:
        print(f"{label:<28} {value:>14}  target {target:<10} {'met' if ok else 'MISSED'}")
    return 0 if all(ok for *_, ok in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
