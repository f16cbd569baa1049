"""Live reload vs restart: how soon a persona change serves, under a real s6-svscan.

One profile runs in a slot against the fake provider (tests/fake_upstream.py, in this
process so every request's system message can be read back). Each round writes a new
SOUL.md, then either
  - reload: sends SIGHUP through the slot's supervisor (`s6-svc -h`, what `hermes
    gateway reload` sends), or
  - restart (the baseline, same run): `S6Manager.restart`, what `hermes gateway
    restart` does (`s6-svc -t -u` and its bookkeeping),
and polls with a chat request about every millisecond until one is served with the new
persona. The figure is the time from the signal to that response. Reload p50/p95 over
BENCH_RELOADS (>= 30) rounds, restart over BENCH_RESTARTS; also `hermes gateway reload`
end to end (CLI start, SIGHUP, the gateway's recorded answer).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _ports import free_port  # noqa: E402
from _s6tree import kill_leftovers, running_svscan  # noqa: E402

from hermes_container.envfile import read_env  # noqa: E402
from hermes_container.home import SOUL_FILE, HermesHome  # noqa: E402
from hermes_container.profiles import ensure_default_profile  # noqa: E402
from hermes_container.state import write_desired  # noqa: E402
from tests.fake_upstream import FakeUpstream  # noqa: E402

HERMES = str(Path(sys.executable).parent / "hermes")
RELOADS = max(30, int(os.environ.get("BENCH_RELOADS", "40")))
RESTARTS = int(os.environ.get("BENCH_RESTARTS", "10"))
CLI_ROUNDS = 5
POLL_S = 0.001
ROUND_TIMEOUT_S = 30.0
TARGET_P95_MS = 50.0  # a reload must serve the new persona within this, p95
TARGET_SPEEDUP = 5.0  # ... and beat a restart's p50 at least this many times over


class Poller:
    """Chat requests on one keep-alive connection; which persona served each one."""

    def __init__(self, port: int, key: str, upstream: FakeUpstream) -> None:
        self.port, self.upstream = port, upstream
        self.headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
        self.body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        self.conn: http.client.HTTPConnection | None = None

    def persona(self) -> str | None:
        """The system message the provider got for one chat served now; None if none was
        (the gateway is restarting)."""
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            self.conn.request("POST", "/v1/chat/completions", self.body, self.headers)
            response = self.conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            return None
        if response.status != 200:
            return None
        return str(self.upstream.requests[-1].body["messages"][0]["content"])

    def until(self, wanted: str, started: float) -> float:
        """Milliseconds from `started` (perf_counter) to the first answer on `wanted`."""
        deadline = time.monotonic() + ROUND_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.persona() == wanted:
                return (time.perf_counter() - started) * 1000
            time.sleep(POLL_S)
        raise SystemExit(f"persona {wanted!r} not served within {ROUND_TIMEOUT_S:g}s")


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def uptime(slot: Path) -> float:
    out = subprocess.run(
        ["s6-svstat", "-o", "updownfor", str(slot)], capture_output=True, text=True, check=True
    )
    return float(out.stdout)


def main() -> int:
    if shutil.which("s6-svscan") is None:
        print("s6-svscan not found: install s6 to run this benchmark")
        return 1
    from hermes_container.supervision.s6 import S6Manager, send_control

    base = Path(tempfile.mkdtemp(prefix="bench-reload-"))
    scandir, home = base / "service", HermesHome(base / "home")
    env = {
        **os.environ,
        "HERMES_HOME": str(home.root),
        "HERMES_S6_SCANDIR": str(scandir),
        "HERMES_CRASH_LOOP_MAX": "1000",
        "HERMES_ALLOW_ROOT_GATEWAY": "1",
        "HERMES_GATEWAY_PORT_BASE": str(free_port()),
    }
    os.environ.update({k: env[k] for k in ("HERMES_HOME", "HERMES_S6_SCANDIR")})
    reloads: list[float] = []
    restarts: list[float] = []
    cli: list[float] = []
    polls: list[float] = []
    try:
        with FakeUpstream() as upstream, running_svscan(scandir, env):
            ensure_default_profile(home)
            port = free_port()
            (home.root / "config.yaml").write_text(
                f"model:\n  base_url: {upstream.base_url}\n  name: bench-model\n"
                f"gateway:\n  port: {port}\n"
            )
            soul = home.root / SOUL_FILE
            soul.write_text("persona 0\n")
            write_desired(home.root, "running")
            subprocess.run([HERMES, "reconcile"], env=env, check=True, stdout=subprocess.DEVNULL)
            manager = S6Manager(home, scandir)
            slot = manager.slot_dir("default")
            poller = Poller(port, read_env(home.root / ".env")["API_SERVER_KEY"], upstream)
            poller.until("persona 0", time.perf_counter())
            pid = manager.status("default").pid
            for _ in range(200):  # the poll's own cost: the resolution of every figure
                started = time.perf_counter()
                poller.persona()
                polls.append((time.perf_counter() - started) * 1000)

            for n in range(1, RELOADS + 1):
                soul.write_text(f"persona {n}\n")
                started = time.perf_counter()
                send_control(slot, "h")
                reloads.append(poller.until(f"persona {n}", started))
            if manager.status("default").pid != pid:
                raise SystemExit("the gateway restarted during the reloads")

            for n in range(1, CLI_ROUNDS + 1):
                soul.write_text(f"cli persona {n}\n")
                started = time.perf_counter()
                subprocess.run(
                    [HERMES, "gateway", "reload"], env=env, check=True, stdout=subprocess.DEVNULL
                )
                cli.append((time.perf_counter() - started) * 1000)
                poller.until(f"cli persona {n}", started)

            for n in range(1, RESTARTS + 1):
                while uptime(slot) < 1.0:  # s6 delays respawning a younger process by 1 s
                    time.sleep(0.05)
                soul.write_text(f"restarted persona {n}\n")
                started = time.perf_counter()
                manager.restart("default")
                restarts.append(poller.until(f"restarted persona {n}", started))
    finally:
        kill_leftovers([home.root])
        shutil.rmtree(base, ignore_errors=True)

    print(
        f"one poll (chat request, steady state, n={len(polls)})         "
        f"p50 {statistics.median(polls):8.2f} ms  (+ {POLL_S * 1000:g} ms sleep between polls)"
    )
    p50, p95 = statistics.median(reloads), percentile(reloads, 95)
    base50, base95 = statistics.median(restarts), percentile(restarts, 95)
    print(
        f"restart -> new persona served (baseline, n={len(restarts)})  "
        f"p50 {base50:8.1f} ms  p95 {base95:8.1f} ms"
    )
    fast = p95 <= TARGET_P95_MS
    print(
        f"SIGHUP -> new persona served (n={len(reloads)})            "
        f"p50 {p50:8.1f} ms  p95 {p95:8.1f} ms  (min {min(reloads):.1f}, max {max(reloads):.1f})  "
        f"[target p95 <= {TARGET_P95_MS:g} ms: {'met' if fast else 'MISSED'}]"
    )
    speedup = base50 / p50
    ahead = speedup >= TARGET_SPEEDUP
    print(
        f"reload vs restart, p50                              {speedup:8.1f}x faster  "
        f"[target >= {TARGET_SPEEDUP:g}x: {'met' if ahead else 'MISSED'}]"
    )
    print(
        f"`hermes gateway reload` end to end (n={len(cli)})          "
        f"p50 {statistics.median(cli):8.1f} ms  (CLI start, SIGHUP, the recorded answer)"
    )
    return 0 if fast and ahead else 1


if __name__ == "__main__":
    raise SystemExit(main())
