"""Dashboard: `/api/status` and `/api/profiles` throughput and p99 with wrk, and RSS.

Runs the real `hermes dashboard` (uvicorn, single process) on 127.0.0.1, loads it with
`wrk` (Debian package) and reads VmRSS of the server process: idle in both auth modes,
and in OAuth mode again once idle after three real OIDC logins (authlib, TLS and JWKS
loaded; needs the test extras' provider).

`/api/profiles` is measured with BENCH_PROFILES profiles (default 50) and, as a second
row, with 5. When s6 is installed, each home's loopback-mode dashboard runs inside a
live s6-svscan tree whose slots `hermes reconcile` registered (down: desired
`stopped`), so `/api/profiles` reads real s6 status for every profile; the same
endpoint without a tree (rows from the state files alone) is reported too.
`/api/profiles` is gated: wrk sends the loopback session token header
(`X-Hermes-Session-Token`, a fixed HERMES_DASHBOARD_SESSION_TOKEN for the run).
Beside each wrk figure: the server's CPU per request (utime+stime of the dashboard
process over the requests wrk completed), which the machine's load skews far less
than latency does.

Targets: >= 3,000 req/s `/api/status` on 2 cores; `/api/profiles` p99 <= 25 ms with
BENCH_PROFILES profiles in the tree (issue 21; baseline printed beside it: `/api/status`
p99 of the same run); RSS <= 70 MB. BENCH_BEFORE=<git ref> also measures that
`/api/profiles` against the dashboard of <ref> (`git archive`, first on PYTHONPATH) in
the same tree, as a before/after pair. Exit status 1 when a target is missed.
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
PROFILES = int(os.environ.get("BENCH_PROFILES", "50"))
FEW_PROFILES = 5  # the second /api/profiles row (the figure before issue 21)
TARGET_RPS = 3000.0
TARGET_PROFILES_P99_MS = 25.0  # issue 21
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
def dashboard(env: dict[str, str], code: Path | None = None) -> Iterator[tuple[int, int]]:
    """The real dashboard on a free port; `code`: run the package found there instead."""
    port = free_port()
    if code is not None:
        env = {**env, "PYTHONPATH": str(code)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hermes_container", "dashboard", "--port", str(port)],
        env=env,
        cwd=code,  # `-m` puts the cwd first on sys.path
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


# Every other page (each loads its feature's modules on first use: features.py).
OTHER_PAGES = ("/kanban", "/jobs", "/events", "/sessions", "/playground", "/profiles/default")


def rss_after_logins(env: dict[str, str]) -> tuple[float, str, float | None]:
    """RSS once idle again after 3 real logins (or after a login try without a
    provider); then the same after one visit of every other page (None without one)."""
    try:
        import httpx

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.unit.dashboard_support import oidc_provider
    except ImportError:
        with dashboard({**env, **oauth_vars("http://127.0.0.1:9")}) as (port, pid):
            get(port, "/auth/login/oidc")  # loads authlib; discovery fails
            time.sleep(1)
            return rss_mb(pid), "RSS, OAuth after a login try", None
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
            after_logins = rss_mb(pid)
            for path in OTHER_PAGES:
                browser.get(path).raise_for_status()
        time.sleep(2)
        return after_logins, "RSS, OAuth after 3 logins", rss_mb(pid)


def make_home(env: dict[str, str], root: Path, count: int) -> None:
    """A home with `count` profiles: default, and p0... by `hermes profile create`."""
    env = {**env, "HERMES_HOME": str(root)}
    for i in range(count - 1):
        subprocess.run(
            [sys.executable, "-m", "hermes_container", "profile", "create", f"p{i}"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )


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


class Load:
    """One wrk run: req/s, p99 as wrk prints it, and the server's CPU per request."""

    def __init__(self, rps: float, p99: str, cpu_us: float) -> None:
        self.rps = rps
        self.p99 = p99
        self.cpu_us = cpu_us

    @property
    def p99_ms(self) -> float:
        return latency_ms(self.p99)

    def line(self) -> str:
        return f"{self.rps:,.0f} req/s, p99 {self.p99}, server CPU {self.cpu_us:.0f} us/req"


def latency_ms(text: str) -> float:
    """wrk's latency (e.g. `850.00us`, `12.40ms`, `1.20s`) in milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(port: int, pid: int, path: str = "/api/status", token: str | None = None) -> Load:
    """A warm-up run, then the measured one."""
    run_wrk(port, path, token)
    before = cpu_seconds(pid)
    rps, p99, requests = run_wrk(port, path, token)
    return Load(rps, p99, (cpu_seconds(pid) - before) / max(requests, 1) * 1e6)


def run_wrk(
    port: int, path: str = "/api/status", token: str | None = None
) -> tuple[float, str, int]:
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
    # The latency distribution's line (not a "+/- Stdev" column ending in 99%).
    p99 = re.search(r"^\s*99%\s+(\S+)", out, re.MULTILINE).group(1)  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return rps, p99, requests


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


def profiles_in_tree(
    base: Path, env: dict[str, str], count: int, before: Path | None = None
) -> tuple[Load, Load | None, str, float]:
    """`/api/profiles` with `count` profiles in a live tree (and with the dashboard of
    `before` too, in the same tree); also the tree note and the RSS after the load."""
    home = base / f"home-{count}"
    make_home(env, home, count)
    env = {**env, "HERMES_HOME": str(home), "HERMES_DASHBOARD_SESSION_TOKEN": TOKEN}
    with s6_tree(env) as (tree_env, note):
        with dashboard(tree_env) as (port, pid):
            check_profiles(port, count)
            now = load(port, pid, "/api/profiles", TOKEN)
            rss_loaded = rss_mb(pid)
        old = None
        if before is not None:
            with dashboard(tree_env, before) as (port, pid):
                check_profiles(port, count)
                old = load(port, pid, "/api/profiles", TOKEN)
    return now, old, note, rss_loaded


def checkout(ref: str, into: Path) -> Path:
    """The package as of git `ref` (the working tree is left alone)."""
    repo = Path(__file__).resolve().parents[1]
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", ref, "hermes_container"],
        check=True,
        capture_output=True,
    ).stdout
    into.mkdir()
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> int:
    if shutil.which("wrk") is None:
        print("wrk not found (apt-get install wrk)")
        return 1
    before_ref = os.environ.get("BENCH_BEFORE")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        before = checkout(before_ref, base / "before") if before_ref else None
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERMES_DASHBOARD_")}
        env["HERMES_HOME"] = str(base / "home-few")
        make_home(env, base / "home-few", FEW_PROFILES)
        with (
            s6_tree({**env, "HERMES_DASHBOARD_SESSION_TOKEN": TOKEN}) as (tree_env, _),
            dashboard(tree_env) as (port, pid),
        ):
            rss_token = idle_rss(port, pid)
            status = load(port, pid)
            check_profiles(port, FEW_PROFILES)
            few = load(port, pid, "/api/profiles", TOKEN)
        many, old, tree_note, rss_loaded = profiles_in_tree(base, env, PROFILES, before)
        # The same endpoint with no supervisor: rows from the state files alone, so the
        # difference is the cost of the per-profile s6 status reads.
        bare_env = {**env, "HERMES_HOME": str(base / f"home-{PROFILES}")}
        with dashboard({**bare_env, "HERMES_DASHBOARD_SESSION_TOKEN": TOKEN}) as (port, pid):
            check_profiles(port, PROFILES)
            bare = load(port, pid, "/api/profiles", TOKEN)
        with dashboard({**env, **oauth_vars("http://127.0.0.1:9")}) as (port, pid):
            rss_oauth = idle_rss(port, pid)
        rss_login, login_label, rss_every_page = rss_after_logins(env)
    rss_ok = f"<= {TARGET_RSS_MB:.0f} MB"
    p99_ok = many.p99_ms <= TARGET_PROFILES_P99_MS
    many_label = f"/api/profiles, {PROFILES} profiles"
    rows = [
        ("/api/status", status.line(), f">= {TARGET_RPS:,.0f} req/s", status.rps >= TARGET_RPS),
        (
            many_label,
            many.line() + f"; baseline /api/status p99 {status.p99} (same run)",
            f"p99 <= {TARGET_PROFILES_P99_MS:.0f} ms",
            p99_ok,
        ),
        (f"/api/profiles, {FEW_PROFILES} profiles", few.line(), "(reported)", True),
        (f"{many_label}, no s6 tree", bare.line(), "(reported)", True),
    ]
    if old is not None:
        rows.append((f"{many_label}, {before_ref}", old.line(), "(before, reported)", True))
    rows += [
        ("idle RSS, loopback mode", f"{rss_token:.1f} MB", rss_ok, rss_token <= TARGET_RSS_MB),
        ("idle RSS, OAuth mode", f"{rss_oauth:.1f} MB", rss_ok, rss_oauth <= TARGET_RSS_MB),
        (login_label, f"{rss_login:.1f} MB", rss_ok, rss_login <= TARGET_RSS_MB),
    ]
    if rss_every_page is not None:
        rows.append(("  then every other page", f"{rss_every_page:.1f} MB", "(reported)", True))
    rows.append(
        (f"RSS after the {PROFILES}-profile load", f"{rss_loaded:.1f} MB", "(reported)", True)
    )
    load_avg = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"dashboard bench: {os.cpu_count()} cores, wrk -t{THREADS} -c{CONNECTIONS} "
        f"-d{DURATION}, load average {load_avg} (other work on the box skews req/s and p99)"
    )
    print(f"loopback mode ran in: {tree_note}; /api/profiles sends {TOKEN_HEADER}")
    for label, value, target, ok in rows:
        print(f"{label:<40} {value}  [target {target}: {'met' if ok else 'MISSED'}]")
    return 0 if all(ok for *_, ok in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
