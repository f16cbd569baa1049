"""Metrics: what a scrape of 50 profiles costs, and what recording costs a gateway.

1. Scrape. A real `hermes dashboard` answers `GET /metrics` (bearer token); the figure
   is the median time of SCRAPES scrapes. Its home has 50 profiles, with a live s6 tree
   when s6 is installed (every slot registered, down: `gateway_status` asks s6-svstat
   for each), a board with tasks in every status and finished runs, and the multiprocess
   files of 50 gateways plus the dispatcher: a helper process records a realistic mix
   of requests for each profile under its own (fake, > pid_max) pid and then holds those
   pids' locks, so every file counts as a live gateway's. Baselines in the same run: the
   same scrape of a home with 1 profile, and rendering an empty registry in-process.
   Target: median <= 100 ms at 50 profiles.
2. Recording. Two real gateways of one fake upstream, one with HERMES_METRICS=0, get the
   same requests in alternating blocks; CPU per request (/proc) and p50 latency of
   each. Target: CPU per request with metrics <= 1.05x without.

    .venv/bin/python bench/bench_metrics.py [--profiles 50] [--requests 10000]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from _ports import free_port  # noqa: E402
from _s6tree import running_svscan  # noqa: E402

from hermes_container.envfile import read_env  # noqa: E402
from hermes_container.home import HermesHome  # noqa: E402
from hermes_container.profiles import (  # noqa: E402
    create_profile,
    ensure_default_profile,
    list_profiles,
)

TARGET_SCRAPE_MS = 100.0
TARGET_CPU_RATIO = 1.05
SCRAPES = 20
TOKEN = "bench-metrics-token-0123456789abcdef"
FAKE_PID_BASE = 10_000_000  # above Linux's pid_max (2^22): never a real process
BLOCK = 50


# -- the helper that plays 50 live gateways and a dispatcher -----------------------------


def write_files(home: Path, profiles: list[str]) -> None:
    """Record each profile's traffic under a fake pid, then hold every pid's lock."""
    from prometheus_client import values

    from hermes_container.metrics import files, names
    from hermes_container.metrics.gateway import GatewayMeter
    from hermes_container.metrics.writer import Writer

    directory = files.ensure_dir(home)
    assert directory is not None
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    locks = []
    for i, profile in enumerate([*profiles, None]):
        pid = FAKE_PID_BASE + i
        lock = files.ProcessLock(directory, pid)
        assert lock.acquire()
        locks.append(lock)
        values.ValueClass = values.MultiProcessValue(lambda pid=pid: pid)
        writer = Writer(home, directory, lock)
        if profile is None:  # the dispatcher
            tick = writer.histogram(
                names.TICK_DURATION, names.TICK_DURATION_HELP, ("board",), names.TICK_BUCKETS
            )
            for n in range(200):
                tick.labels("default").observe(0.002 + (n % 7) * 0.001)
            continue
        meter = GatewayMeter(writer, profile)
        for n in range(300):
            status = 200 if n % 25 else 502
            meter.begin()
            meter.end("/v1/chat/completions", status, 0.05 + (n % 40) * 0.01)
            meter.upstream(0.04 + (n % 40) * 0.01)
        for route, status in (("/health", 200), ("/v1/models", 200), ("/v1/models", 401)):
            for _ in range(10):
                meter.begin()
                meter.end(route, status, 0.0004)
        meter.begin()
        meter.end("other", 404, 0.0003)
        meter.upstream_error("server_error")
        meter.upstream_error("read_timeout")
        meter._tokens_in.inc(1234)
        meter._tokens_out.inc(567)
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


@contextlib.contextmanager
def fake_gateways(home: Path, profiles: list[str]) -> Iterator[None]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--write-files", str(home), ",".join(profiles)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the metrics file writer failed")
        yield
    finally:
        proc.terminate()
        proc.wait(10)


def fill_board(home: HermesHome) -> None:
    from hermes_container.kanban.model import Holder
    from hermes_container.kanban.store import open_store

    store = open_store(home, {})
    try:
        holder = Holder(host="bench#0", pid=os.getpid())
        for n in range(400):
            store.create_task(f"task {n}", assignee="default")
        for n in range(150):
            run = store.claim(holder)
            assert run is not None
            if n % 3:
                store.complete(run, "done")
            else:
                store.fail(run, "failed")
        for n in range(20):
            store.block(store.create_task(f"blocked {n}").id, "bench")
    finally:
        store.close()


def make_home(root: Path, count: int) -> HermesHome:
    home = HermesHome(root)
    ensure_default_profile(home)
    for i in range(count - 1):
        create_profile(home, f"p{i:02d}")
    fill_board(home)
    return home


@contextlib.contextmanager
def live_tree(env: dict[str, str], home: HermesHome) -> Iterator[tuple[dict[str, str], str]]:
    if shutil.which("s6-svscan") is None:
        yield env, "no s6 tree (s6 not installed)"
        return
    from hermes_container.state import write_desired

    scandir = home.root.parent / f"{home.root.name}-service"
    env = {**env, "HERMES_S6_SCANDIR": str(scandir), "HERMES_ALLOW_ROOT_GATEWAY": "1"}
    write_desired(home.root, "stopped")
    with running_svscan(scandir, env, stop_timeout=30):
        subprocess.run(
            [sys.executable, "-m", "hermes_container", "reconcile"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            cwd=REPO,
        )
        slots = len(list(scandir.glob("gateway-*")))
        yield env, f"live s6 tree, {slots} slots"


@contextlib.contextmanager
def dashboard(env: dict[str, str]) -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hermes_container", "dashboard", "--port", str(port)],
        env={**env, "HERMES_METRICS_TOKEN": TOKEN},
        cwd=REPO,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/api/status")
                conn.getresponse().read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the dashboard did not start") from None
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def scrape_ms(port: int, count: int) -> tuple[float, float, int, str]:
    """Milliseconds of the first scrape (every gateway status read afresh), the median
    of the `count` after it, the body's size and the last body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"authorization": f"Bearer {TOKEN}"}
    times = []
    first = 0.0
    body = b""
    for n in range(count + 1):
        started = time.perf_counter()
        conn.request("GET", "/metrics", headers=headers)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"/metrics answered {response.status}: {body[:200]!r}")
        elapsed = (time.perf_counter() - started) * 1000
        if n:
            times.append(elapsed)
        else:
            first = elapsed
    return first, statistics.median(times), len(body), body.decode()


def scrape_home(root: Path, count: int) -> tuple[float, float, int, str, str]:
    home = make_home(root, count)
    profiles = list_profiles(home)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERMES_DASHBOARD_")}
    env["HERMES_HOME"] = str(home.root)
    with (
        fake_gateways(home.root, profiles),
        live_tree(env, home) as (tree, note),
        dashboard(tree) as port,
    ):
        first, median, size, body = scrape_ms(port, SCRAPES)
    return first, median, size, body, note


def empty_registry_ms() -> float:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    times = []
    for _ in range(SCRAPES):
        started = time.perf_counter()
        generate_latest(registry)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


# -- recording cost in a gateway ----------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def gateway(root: Path, upstream: int, metrics: bool) -> Iterator[tuple[int, int, str]]:
    home = HermesHome(root)
    ensure_default_profile(home)
    port = free_port()
    (root / "config.yaml").write_text(
        f"model:\n  base_url: http://127.0.0.1:{upstream}/v1\n  name: bench-model\n"
        f"gateway:\n  port: {port}\n"
    )
    env = {**os.environ, "HERMES_HOME": str(root), "HERMES_ALLOW_ROOT_GATEWAY": "1"}
    env["HERMES_METRICS"] = "1" if metrics else "0"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hermes_container", "gateway", "run"], env=env, cwd=REPO
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("gateway did not become healthy")
            time.sleep(0.05)
        yield proc.pid, port, read_env(root / ".env")["API_SERVER_KEY"]
    finally:
        proc.terminate()
        proc.wait(30)


def recording_cost(requests: int, deadline: float) -> tuple[dict[str, float], dict[str, float]]:
    upstream = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_upstream"], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert upstream.stdout is not None
        up_port = int(upstream.stdout.readline())
        with (
            tempfile.TemporaryDirectory() as off_dir,
            tempfile.TemporaryDirectory() as on_dir,
            gateway(Path(off_dir), up_port, False) as off,
            gateway(Path(on_dir), up_port, True) as on,
        ):
            body = json.dumps(
                {"model": "m", "messages": [{"role": "user", "content": "hello from the bench"}]}
            ).encode()
            sides = {"off": off, "on": on}
            conns = {
                k: http.client.HTTPConnection("127.0.0.1", v[1], timeout=30)
                for k, v in sides.items()
            }
            latencies: dict[str, list[float]] = {"off": [], "on": []}

            def once(side: str) -> float:
                headers = {"authorization": f"Bearer {sides[side][2]}"}
                started = time.perf_counter()
                conns[side].request("POST", "/v1/chat/completions", body=body, headers=headers)
                response = conns[side].getresponse()
                response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}")
                return (time.perf_counter() - started) * 1000

            for _ in range(200):  # warm-up
                once("off")
                once("on")
            cpu_before = {k: cpu_seconds(v[0]) for k, v in sides.items()}
            while len(latencies["on"]) < requests and time.monotonic() < deadline:
                for side in ("off", "on"):
                    latencies[side].extend(once(side) for _ in range(BLOCK))
            time.sleep(0.5)  # the session writer's last batch (token counting) included
            cpu_ms = {
                k: (cpu_seconds(v[0]) - cpu_before[k]) * 1000 / len(latencies[k])
                for k, v in sides.items()
            }
            p50 = {k: statistics.median(v) for k, v in latencies.items()}
            return cpu_ms, p50
    finally:
        upstream.terminate()
        upstream.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=50)
    parser.add_argument("--requests", type=int, default=10000, help="per side")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="recording part")
    parser.add_argument("--write-files", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_files:
        write_files(Path(args.write_files[0]), args.write_files[1].split(","))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        many_first, many_ms, many_size, many_body, note = scrape_home(
            Path(tmp) / "many", args.profiles
        )
        _, one_ms, one_size, _, _ = scrape_home(Path(tmp) / "one", 1)
    empty_ms = empty_registry_ms()
    series = sum(1 for line in many_body.splitlines() if line and not line.startswith("#"))
    failed = [
        line
        for line in many_body.splitlines()
        if line.startswith("hermes_metrics_collector_up") and line.endswith(" 0.0")
    ]
    if failed:
        print(f"a collector failed: {failed}")
    scrape_met = many_ms <= TARGET_SCRAPE_MS and not failed
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"metrics bench: {os.cpu_count()} cores, load average {load}; {note}")
    print(f"scrape, empty registry (baseline)  {empty_ms:8.3f} ms (in-process)")
    print(f"scrape, 1 profile (baseline)       {one_ms:8.2f} ms  ({one_size:,} bytes)")
    print(
        f"scrape, {args.profiles} profiles               {many_ms:8.2f} ms  ({many_size:,} bytes, "
        f"{series:,} samples; {many_ms / one_ms:.1f}x 1 profile)   "
        f"[target <= {TARGET_SCRAPE_MS:.0f} ms: {'met' if scrape_met else 'MISSED'}]"
    )
    print(
        f"scrape, {args.profiles} profiles, the first      {many_first:8.2f} ms  (every "
        "gateway status read afresh, prometheus-client imported; reported)"
    )

    cpu_ms, p50 = recording_cost(args.requests, time.monotonic() + args.max_seconds)
    ratio = cpu_ms["on"] / cpu_ms["off"]
    cpu_met = ratio <= TARGET_CPU_RATIO
    verdict = (
        f"[target CPU <= {TARGET_CPU_RATIO:.2f}x: {ratio:.3f}x {'met' if cpu_met else 'MISSED'}]"
    )
    for side, label, note in (
        ("off", "HERMES_METRICS=0 (baseline)", ""),
        ("on", "metrics on", "   " + verdict),
    ):
        print(
            f"gateway, {label:<28} CPU {cpu_ms[side]:.3f} ms/request  p50 {p50[side]:.3f} ms{note}"
        )
    ok = scrape_met and cpu_met
    print("all targets met" if ok else "SOME TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
