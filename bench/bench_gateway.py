"""Gateway relay overhead, ingress overhead and idle memory.

Starts the fake upstream (tests/fake_upstream.py, in its own process), a real
`hermes gateway run` and a real `hermes ingress run` in front of it, then sends the
same chat request N times directly to the upstream, N times through the gateway and N
times through the ingress and the gateway, interleaved in blocks so all three see the
same machine state. Prints p50/p99 of each and the overheads (gateway - direct,
ingress - gateway), for non-streaming and streaming (time to the last byte), and the
gateway's idle RSS from /proc/<pid>/status. Targets: gateway overhead <= 0.4 ms p50
and <= 1.0 ms p99 in both modes, ingress overhead <= 0.4 ms p50, idle RSS <= 45 MB.

The judged p99 overhead is p99(gateway) - p99(direct) over the whole run, the figure
issue 21 stated. A difference of quantiles is not the p99 of the time the gateway
adds (no request is measured both ways), and one burst of load elsewhere on the
machine moves it either way; so beside it, unjudged, the same difference per chunk of
CHUNK consecutive requests a side (their blocks interleaved, so each chunk's two sides
saw the same minutes): the median over the chunks and their range.

    .venv/bin/python bench/bench_gateway.py [--requests 5000] [--max-seconds 200]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _ports import free_port  # noqa: E402

from hermes_container.envfile import read_env  # noqa: E402
from hermes_container.home import HermesHome  # noqa: E402
from hermes_container.profiles import ensure_default_profile  # noqa: E402

TARGET_OVERHEAD_MS = 0.4  # p50
TARGET_OVERHEAD_P99_MS = 1.0
TARGET_INGRESS_MS = 0.4
TARGET_RSS_MB = 45.0
BLOCK = 50  # requests per block; blocks alternate direct / gateway
CHUNK = 10 * BLOCK  # requests a side per chunk, for the p99 overhead by chunk


def start_upstream() -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_upstream"], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def start_gateway(home: Path, upstream_port: int) -> tuple[subprocess.Popen[bytes], int, str]:
    ensure_default_profile(HermesHome(home))
    port = free_port()
    (home / "config.yaml").write_text(
        f"model:\n  base_url: http://127.0.0.1:{upstream_port}/v1\n  name: bench-model\n"
        f"gateway:\n  port: {port}\n"
    )
    env = {**os.environ, "HERMES_HOME": str(home), "HERMES_ALLOW_ROOT_GATEWAY": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hermes_container", "gateway", "run"], env=env, cwd=REPO
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                conn.close()
                return proc, port, read_env(home / ".env")["API_SERVER_KEY"]
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("gateway did not become healthy within 30 s")


def start_ingress(home: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {**os.environ, "HERMES_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hermes_container", "ingress", "run", "--port", str(port)],
        env=env,
        cwd=REPO,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                conn.close()
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("ingress did not become healthy within 30 s")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Target:
    """A keep-alive connection and the headers for one side (direct or gateway)."""

    def __init__(self, port: int, key: str | None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"content-type": "application/json"}
        if key:
            self.headers["authorization"] = f"Bearer {key}"

    def once(self, body: bytes) -> float:
        started = time.perf_counter()
        self.conn.request("POST", "/v1/chat/completions", body=body, headers=self.headers)
        response = self.conn.getresponse()
        data = response.read()  # to the last byte (chunked streams included)
        elapsed = time.perf_counter() - started
        if response.status != 200 or not data:
            raise RuntimeError(f"HTTP {response.status}: {data[:200]!r}")
        return elapsed * 1000.0


def measure(
    targets: tuple[Target, Target, Target], body: bytes, n: int, deadline: float
) -> tuple[list[float], list[float], list[float]]:
    """Samples of direct, gateway and ingress (+ gateway), block by block."""
    for _ in range(200):  # warm-up: connections, caches, the upstream's threads
        for target in targets:
            target.once(body)
    samples: tuple[list[float], list[float], list[float]] = ([], [], [])
    while len(samples[0]) < n and time.monotonic() < deadline:
        for target, out in zip(targets, samples, strict=True):
            out.extend(target.once(body) for _ in range(BLOCK))
    return samples


def pct(samples: list[float], q: int) -> float:
    return (
        statistics.quantiles(samples, n=100, method="inclusive")[q - 1] if q < 100 else max(samples)
    )


def chunked_p99_overheads(d: list[float], g: list[float]) -> list[float]:
    """p99(gateway) - p99(direct) of each CHUNK of requests a side, in order."""
    return [
        pct(g[at : at + CHUNK], 99) - pct(d[at : at + CHUNK], 99)
        for at in range(0, min(len(d), len(g)) - CHUNK + 1, CHUNK)
    ]


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def report(label: str, d: list[float], g: list[float], i: list[float]) -> bool:
    d50, d99, g50, g99 = pct(d, 50), pct(d, 99), pct(g, 50), pct(g, 99)
    i50, i99 = pct(i, 50), pct(i, 99)
    over50, over99 = g50 - d50, g99 - d99
    met50 = over50 <= TARGET_OVERHEAD_MS
    met99 = over99 <= TARGET_OVERHEAD_P99_MS
    ingress_met = i50 - g50 <= TARGET_INGRESS_MS
    print(f"{label} ({len(g)} requests each)")
    print("             direct      gateway     ingress + gateway")
    print(f"  p50  {d50:9.3f} ms {g50:9.3f} ms {i50:9.3f} ms")
    print(f"  p99  {d99:9.3f} ms {g99:9.3f} ms {i99:9.3f} ms")
    print(
        f"  gateway overhead p50 {over50:6.3f} ms ({g50:.3f} - direct {d50:.3f})   "
        f"[target <= {TARGET_OVERHEAD_MS} ms: {verdict(met50)}]"
    )
    print(
        f"  gateway overhead p99 {over99:6.3f} ms ({g99:.3f} - direct {d99:.3f})   "
        f"[target <= {TARGET_OVERHEAD_P99_MS} ms: {verdict(met99)}]"
    )
    chunks = chunked_p99_overheads(d, g)
    if chunks:
        print(
            f"    by chunks of {CHUNK}: median {statistics.median(chunks):6.3f} ms, "
            f"from {min(chunks):.3f} to {max(chunks):.3f} ms over {len(chunks)} chunks"
        )
    print(
        f"  ingress overhead p50 {i50 - g50:6.3f} ms   p99 {i99 - g99:6.3f} ms   "
        f"[target p50 <= {TARGET_INGRESS_MS} ms: {verdict(ingress_met)}]"
    )
    return met50 and met99 and ingress_met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="per side and mode")
    parser.add_argument("--max-seconds", type=float, default=200.0, help="overall bound")
    args = parser.parse_args()
    deadline = time.monotonic() + args.max_seconds
    upstream, upstream_port = start_upstream()
    with tempfile.TemporaryDirectory() as tmp:
        gateway_proc, port, key = start_gateway(Path(tmp), upstream_port)
        ingress_proc, ingress_port = start_ingress(Path(tmp))
        try:
            time.sleep(1.0)  # let start-up allocations settle before reading "idle"
            idle = rss_mb(gateway_proc.pid)
            # The ingress with the profile's own key, `model` naming the profile.
            targets = (Target(upstream_port, None), Target(port, key), Target(ingress_port, key))
            ok = True
            for label, stream in (("non-streaming", False), ("streaming", True)):
                body = json.dumps(
                    {
                        "model": "default",
                        "stream": stream,
                        "messages": [{"role": "user", "content": "hello from the benchmark"}],
                    }
                ).encode()
                # The first mode may use half of the time left, the second all of it.
                left = deadline - time.monotonic()
                until = time.monotonic() + (left if stream else left / 2)
                cpu_before = cpu_seconds(gateway_proc.pid)
                ingress_cpu_before = cpu_seconds(ingress_proc.pid)
                d, g, i = measure(targets, body, args.requests, until)
                served = len(g) + len(i) + 400  # the gateway serves both, warm-up included
                cpu_ms = (cpu_seconds(gateway_proc.pid) - cpu_before) * 1000 / served
                ingress_cpu_ms = (
                    (cpu_seconds(ingress_proc.pid) - ingress_cpu_before) * 1000 / (len(i) + 200)
                )
                ok = report(label, d, g, i) and ok
                print(f"  gateway CPU per request {cpu_ms:.3f} ms (user+system)")
                print(f"  ingress CPU per request {ingress_cpu_ms:.3f} ms (user+system)")
            loaded = rss_mb(gateway_proc.pid)
            rss_met = idle <= TARGET_RSS_MB
            print(
                f"idle RSS {idle:5.1f} MB (after load {loaded:5.1f} MB)   "
                f"[target <= {TARGET_RSS_MB:.0f} MB: {'met' if rss_met else 'MISSED'}]"
            )
            ok = ok and rss_met
        finally:
            ingress_proc.terminate()
            ingress_proc.wait(30)
            gateway_proc.terminate()
            gateway_proc.wait(30)
            upstream.terminate()
            upstream.wait(10)
    print("all targets met" if ok else "SOME TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
