"""Idle memory: RSS per gateway, of the dashboard, and totals for 1, 10 and 50 profiles.

For each size: a fresh home with N profiles all desired `running`, a real s6-svscan,
`hermes reconcile` (stagger 0), wait until every gateway is up and ready, let it settle,
then read /proc/<pid>/status (VmRSS, RssAnon) and /proc/<pid>/smaps_rollup (Pss) of:
- every gateway (`hermes gateway run`, the slot's process);
- the s6 overhead, reported separately: s6-svscan, 2 s6-supervise per slot (gateway and
  its logger) and one s6-log per slot;
- a real `hermes dashboard` on loopback against the same tree, after a few requests.

VmRSS counts shared pages (the interpreter, shared libraries) in every process, so the
sum of VmRSS overstates the real total; the Pss sum is the honest total and is printed
next to it. Targets: <= 45 MB VmRSS per gateway (median), <= 70 MB for the dashboard.

`--why` (or a missed target) adds where the memory goes: the modules one gateway has
imported, grouped by top-level package, with `python -X importtime` cumulative times.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _ports import free_port as any_free_port

from hermes_container.home import HermesHome
from hermes_container.profiles import create_profile, ensure_default_profile, list_profiles
from hermes_container.state import write_desired

HERMES = str(Path(sys.executable).parent / "hermes")
SIZES = tuple(int(s) for s in os.environ.get("BENCH_MEMORY_SIZES", "1,10,50").split(","))
GATEWAY_TARGET_MB = 45.0
DASHBOARD_TARGET_MB = 70.0
SETTLE_S = 3.0
READY_TIMEOUT_S = 180.0
TOKEN = "bench-memory-token-0123456789abcdef"


@dataclass(frozen=True)
class Mem:
    rss: float  # MB
    anon: float  # MB, private to the process (heap, Python objects)
    pss: float  # MB, shared pages split between their users


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free right now, never one handed out before in this run."""
    while True:
        port = any_free_port()
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def mem(pid: int) -> Mem:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon"):
            values[key] = int(rest.split()[0]) / 1024
    pss = 0.0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1]) / 1024
    return Mem(values.get("VmRSS", 0.0), values.get("RssAnon", 0.0), pss)


def processes_under(base: Path) -> dict[int, list[str]]:
    """pid -> argv of every process whose cwd or HERMES_HOME lies under `base`."""
    marker = f"HERMES_HOME={base}".encode()
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            cwd = os.readlink(f"/proc/{pid}/cwd")
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in environ or cwd.startswith(str(base)):
            found[pid] = [a.decode("utf-8", "replace") for a in argv if a]
    return found


def svstat_ready(slot: Path) -> int | None:
    out = subprocess.run(
        ["s6-svstat", "-o", "up,ready,pid", str(slot)], capture_output=True, text=True
    ).stdout.split()
    if len(out) == 3 and out[0] == "true" and out[1] == "true":
        return int(out[2])
    return None


def build_home(base: Path, n: int) -> HermesHome:
    home = HermesHome(base / "home")
    os.environ["HERMES_GATEWAY_PORT_BASE"] = str(free_port())
    ensure_default_profile(home)
    for i in range(1, n):
        create_profile(home, f"p{i:02d}")
    for name in list_profiles(home):
        profile_dir = home.profile_dir(name)
        config = profile_dir / "config.yaml"
        text = config.read_text().replace("https://api.openai.com/v1", "http://127.0.0.1:9/v1")
        lines = [
            f"  port: {free_port()}" if line.startswith("  port:") else line
            for line in text.splitlines()
        ]
        config.write_text("\n".join(lines) + "\n")
        write_desired(profile_dir, "running")
    return home


def tree_env(base: Path, home: HermesHome) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HERMES_HOME": str(home.root),
        "HERMES_S6_SCANDIR": str(base / "service"),
        "HERMES_GATEWAY_STAGGER": "0",
        "HERMES_BIN": HERMES,
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    if os.geteuid() == 0:
        env["HERMES_ALLOW_ROOT_GATEWAY"] = "1"
    return env


def wait_http(port: int, path: str, headers: dict[str, str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path, headers=headers)
            if conn.getresponse().status == 200:
                conn.close()
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing answered on 127.0.0.1:{port}{path}")


@dataclass
class SizeResult:
    n: int
    gateways: list[Mem]
    s6: dict[str, list[Mem]]
    dashboard: Mem
    gateway_pid: int


def measure(n: int) -> SizeResult:
    base = Path(tempfile.mkdtemp(prefix="hermes-bench-mem-"))
    base.chmod(0o755)
    home = build_home(base, n)
    env = tree_env(base, home)
    (base / "service").mkdir()
    svscan = subprocess.Popen(
        ["s6-svscan", str(base / "service")],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    dashboard: subprocess.Popen[bytes] | None = None
    try:
        control = base / "service" / ".s6-svscan" / "control"
        deadline = time.monotonic() + 10
        while not control.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        subprocess.run([HERMES, "reconcile"], env=env, check=True, stdout=subprocess.DEVNULL)
        slots = [base / "service" / f"gateway-{name}" for name in list_profiles(home)]
        deadline = time.monotonic() + READY_TIMEOUT_S
        pids: list[int | None] = [None] * len(slots)
        while time.monotonic() < deadline:
            pids = [svstat_ready(slot) for slot in slots]
            if all(pids):
                break
            time.sleep(0.2)
        else:
            for slot, pid in zip(slots, pids, strict=True):
                if pid is None:
                    status = subprocess.run(
                        ["s6-svstat", str(slot)], capture_output=True, text=True
                    )
                    log = home.gateway_log_dir(slot.name.removeprefix("gateway-")) / "current"
                    tail = log.read_text()[-600:] if log.exists() else "(no log)"
                    print(f"{slot.name}: {status.stdout.strip()}\n{tail}", file=sys.stderr)
            raise SystemExit(f"{pids.count(None)} of {n} gateways not ready")
        port = free_port()
        dashboard = subprocess.Popen(
            [HERMES, "dashboard", "--port", str(port)],
            env={**env, "HERMES_DASHBOARD_SESSION_TOKEN": TOKEN},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        auth = {"x-hermes-session-token": TOKEN}
        wait_http(port, "/api/status", {})
        for path in ("/api/status", "/api/profiles", "/", "/api/profiles/default"):
            wait_http(port, path, auth)
        time.sleep(SETTLE_S)
        gateways = [mem(pid) for pid in pids if pid]
        s6: dict[str, list[Mem]] = {"s6-svscan": [], "s6-supervise": [], "s6-log": []}
        for pid, argv in processes_under(base).items():
            name = os.path.basename(argv[0]) if argv else ""
            if name in s6:
                s6[name].append(mem(pid))
        return SizeResult(n, gateways, s6, mem(dashboard.pid), pids[0] or 0)
    finally:
        if dashboard is not None:
            dashboard.terminate()
            try:
                dashboard.wait(10)
            except subprocess.TimeoutExpired:
                dashboard.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(svscan.pid, signal.SIGKILL)
        svscan.wait(10)
        for pid in processes_under(base):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


def why_gateway() -> None:
    """Which top-level packages a gateway imports, and the slowest imports."""
    probe = (
        "import sys, asyncio\n"
        "import hermes_container.gateway.runner as r\n"
        "import hermes_container.gateway.http_api, hermes_container.gateway.relay\n"
        "import hermes_container.gateway.uvicorn_server, hermes_container.gateway.sessions\n"
        "try:\n    import uvloop\nexcept ImportError:\n    pass\n"
        "groups = {}\n"
        "for name in sys.modules:\n"
        "    groups.setdefault(name.split('.')[0], []).append(name)\n"
        "rss = [l for l in open('/proc/self/status') if l.startswith(('VmRSS', 'RssAnon'))]\n"
        "print(len(sys.modules), 'modules;', ' '.join(x.split()[0] + x.split()[1] for x in rss))\n"
        "for top, names in sorted(groups.items(), key=lambda kv: -len(kv[1]))[:14]:\n"
        "    print(f'  {top:<22} {len(names):4d} modules')\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    print("  a gateway's imports (the same modules `gateway run` loads):")
    print("  " + out.stdout.strip().replace("\n", "\n  "))
    imports = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", probe], capture_output=True, text=True
    ).stderr.splitlines()
    rows = []
    for line in imports:
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].rstrip()
            if len(name) - len(name.lstrip()) <= 1:  # top-level imports only
                rows.append((int(parts[1]), name.strip()))
    rows.sort(reverse=True)
    print("  slowest top-level imports (-X importtime, cumulative):")
    for micros, name in rows[:8]:
        print(f"    {micros / 1000:7.1f} ms  {name}")


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):6.1f}" if values else "     -"


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # run the `finally` cleanups: no tree is left behind


def main() -> int:
    signal.signal(signal.SIGTERM, _terminated)
    print(f"idle memory (MB; {os.cpu_count()} cpus); sizes {', '.join(map(str, SIZES))}")
    results = []
    for n in SIZES:
        started = time.monotonic()
        result = measure(n)
        results.append(result)
        g = result.gateways
        rss = [m.rss for m in g]
        s6_rss = sum(m.rss for ms in result.s6.values() for m in ms)
        s6_pss = sum(m.pss for ms in result.s6.values() for m in ms)
        print(
            f"N={n:<3} gateway median RSS {fmt(rss)} (min {min(rss):.1f}, max {max(rss):.1f}; "
            f"anon {fmt([m.anon for m in g])}, PSS {fmt([m.pss for m in g])})  "
            f"[{time.monotonic() - started:.0f}s]"
        )
        print(
            f"      gateways total: RSS sum {sum(rss):7.1f}, PSS sum {sum(m.pss for m in g):7.1f}"
        )
        counts = ", ".join(f"{len(ms)} {name}" for name, ms in result.s6.items())
        print(f"      s6 overhead ({counts}): RSS sum {s6_rss:6.1f}, PSS sum {s6_pss:6.1f}")
        d = result.dashboard
        print(f"      dashboard: RSS {d.rss:.1f} (anon {d.anon:.1f}, PSS {d.pss:.1f})")
        total_pss = sum(m.pss for m in g) + s6_pss + d.pss
        print(f"      everything (gateways + s6 + dashboard), PSS sum {total_pss:.1f}")
    per_gateway = max(statistics.median([m.rss for m in r.gateways]) for r in results)
    dash = max(r.dashboard.rss for r in results)
    gateway_met = per_gateway <= GATEWAY_TARGET_MB
    dashboard_met = dash <= DASHBOARD_TARGET_MB
    print(
        f"per gateway idle RSS     {per_gateway:6.1f} MB  [target <= {GATEWAY_TARGET_MB:g} MB: "
        f"{'met' if gateway_met else 'MISSED'}]"
    )
    print(
        f"dashboard idle RSS       {dash:6.1f} MB  [target <= {DASHBOARD_TARGET_MB:g} MB: "
        f"{'met' if dashboard_met else 'MISSED'}]"
    )
    if "--why" in sys.argv or not gateway_met:
        why_gateway()
    return 0 if gateway_met and dashboard_met else 1


if __name__ == "__main__":
    raise SystemExit(main())
