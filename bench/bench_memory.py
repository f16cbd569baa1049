"""Idle memory: PSS per gateway, of s6, of the dashboard, and totals for 1, 10 and 50 profiles.

For each size: a fresh home with N profiles all desired `running` (their provider an
https URL, as real providers are; an idle gateway never connects to it), a real
s6-svscan, `hermes reconcile` (stagger 0), wait until every gateway is up and ready,
let it settle, then read /proc/<pid>/status (VmRSS, RssAnon) and /proc/<pid>/smaps_rollup
(Pss) of:
- every gateway (`hermes gateway run`, the slot's process);
- the s6 overhead, reported separately: s6-svscan, 2 s6-supervise per slot (gateway and
  its logger) and one s6-log per slot;
- a real `hermes dashboard` on loopback against the same tree, after a few requests;
- the baseline: a bare `python -c` that imports nothing, started beside them.

Every process loads compiled bytecode, as in the image (its venv is byte-compiled when
it is built): the run first compiles the standard library, the venv and this checkout
into a private PYTHONPYCACHEPREFIX, so a checkout edited since its last compile (or run
with PYTHONDONTWRITEBYTECODE) does not make every gateway compile from source, which
leaves ~0.8 MB more in each.

VmRSS counts shared pages (the interpreter, shared libraries) in every process, so the
sum of VmRSS overstates the real total; the Pss sum is the honest total and is printed
next to it. Targets: everything (gateways + s6 + dashboard) at N=50 <= 800 MB of PSS
(issue 21), printed beside the bare python's PSS; <= 45 MB VmRSS per gateway (median),
<= 70 MB for the dashboard.

The same run measures a second configuration at N=50, "zygote" (HERMES_GATEWAY_ZYGOTE, the
image's default; docs/architecture.md): the same profiles and s6 tree, every slot's process
a thin launcher and every gateway forked from one `hermes gateway zygote`. Its total is the
PSS of the gateways + launchers + zygote + s6 + dashboard. The 800 MB target is judged on
it, printed beside the own-process configuration's total (HERMES_GATEWAY_ZYGOTE=0, and
`hermes supervise`) from the same run.

`--why` (or a missed target) adds where one gateway's memory goes (memory_breakdown.py:
smaps, what each import kept by package and import chain, -X importtime).
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
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _ports import free_port as any_free_port
from _zygote import start_zygote, stop_zygote

from hermes_container.home import HermesHome
from hermes_container.profiles import create_profile, ensure_default_profile, list_profiles
from hermes_container.state import read_state, write_desired

HERMES = str(Path(sys.executable).parent / "hermes")
SIZES = tuple(int(s) for s in os.environ.get("BENCH_MEMORY_SIZES", "1,10,50").split(","))
GATEWAY_TARGET_MB = 45.0
DASHBOARD_TARGET_MB = 70.0
TOTAL_TARGET_MB = 800.0  # PSS of everything at TOTAL_AT profiles
TOTAL_AT = 50
SETTLE_S = 3.0
READY_TIMEOUT_S = 180.0
TOKEN = "bench-memory-token-0123456789abcdef"
PYCACHE_ENV = "PYTHONPYCACHEPREFIX"
BARE_PYTHON = "import sys; sys.stdin.read()"  # imports nothing, waits for its stdin


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
        # https, as real providers are (ssl stays loaded); nothing listens on port 9.
        text = config.read_text().replace("https://api.openai.com/v1", "https://127.0.0.1:9/v1")
        lines = [
            f"  port: {free_port()}" if line.startswith("  port:") else line
            for line in text.splitlines()
        ]
        config.write_text("\n".join(lines) + "\n")
        write_desired(profile_dir, "running")
    return home


def compile_bytecode(prefix: Path) -> None:
    """Byte-compile what the processes import into `prefix` (see the module docstring).

    With PYTHONPYCACHEPREFIX set, Python reads bytecode only from there, so the standard
    library and the venv go there too, not only this checkout."""
    trees = [sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"]]
    trees.append(str(Path(__file__).resolve().parent.parent / "hermes_container"))
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(prefix)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", *trees],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # a file that does not compile (a test fixture, say) is never imported either


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
    if PYCACHE_ENV in os.environ:  # set by main() once the bytecode is compiled
        env[PYCACHE_ENV] = os.environ[PYCACHE_ENV]
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
    bare: Mem  # a bare python beside them: the baseline
    launchers: list[Mem] = field(default_factory=list)  # zygote configuration only
    zygote: Mem | None = None

    @property
    def total_pss(self) -> float:
        s6 = sum(m.pss for ms in self.s6.values() for m in ms)
        extra = sum(m.pss for m in self.launchers) + (self.zygote.pss if self.zygote else 0.0)
        return sum(m.pss for m in self.gateways) + s6 + self.dashboard.pss + extra


def measure(n: int, *, with_zygote: bool = False) -> SizeResult:
    base = Path(tempfile.mkdtemp(prefix="hermes-bench-mem-"))
    base.chmod(0o755)
    home = build_home(base, n)
    env = tree_env(base, home)
    (base / "service").mkdir()
    zygote = start_zygote(base, env) if with_zygote else None
    svscan = subprocess.Popen(
        ["s6-svscan", str(base / "service")],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    dashboard: subprocess.Popen[bytes] | None = None
    bare: subprocess.Popen[bytes] | None = None
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
        bare = subprocess.Popen([sys.executable, "-c", BARE_PYTHON], env=env, stdin=subprocess.PIPE)
        time.sleep(SETTLE_S)
        launchers: list[Mem] = []
        if zygote is not None:  # the slots' processes are launchers; gateways are forked
            launchers = [mem(pid) for pid in pids if pid]
            pids = [
                read_state(home.profile_dir(name), warn=False).pid for name in list_profiles(home)
            ]
        gateways = [mem(pid) for pid in pids if pid]
        s6: dict[str, list[Mem]] = {"s6-svscan": [], "s6-supervise": [], "s6-log": []}
        for pid, argv in processes_under(base).items():
            name = os.path.basename(argv[0]) if argv else ""
            if name in s6:
                s6[name].append(mem(pid))
        forked = mem(zygote.pid) if zygote is not None else None
        return SizeResult(n, gateways, s6, mem(dashboard.pid), mem(bare.pid), launchers, forked)
    finally:
        if zygote is not None:
            stop_zygote(zygote)
        if bare is not None:
            bare.kill()
            bare.wait(10)
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
    """Where one gateway's memory goes (memory_breakdown.py)."""
    from memory_breakdown import report

    print("where one idle gateway's memory goes (bench/memory_breakdown.py):")
    for line in report():
        print("  " + line)


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):6.1f}" if values else "     -"


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # run the `finally` cleanups: no tree is left behind


def main() -> int:
    signal.signal(signal.SIGTERM, _terminated)
    print(f"idle memory (MB; {os.cpu_count()} cpus); sizes {', '.join(map(str, SIZES))}")
    with tempfile.TemporaryDirectory(prefix="hermes-bench-pycache-") as pycache:
        compile_bytecode(Path(pycache))
        os.environ[PYCACHE_ENV] = pycache
        try:
            results = [report_size(n) for n in SIZES]
            forked = report_size(TOTAL_AT, with_zygote=True)
            met = judge(results, forked)
        finally:
            del os.environ[PYCACHE_ENV]
    return 0 if met else 1


def judge(results: list[SizeResult], forked: SizeResult | None = None) -> bool:
    """Print the targets' verdicts (and where the memory goes if one is missed)."""
    per_gateway = max(statistics.median([m.rss for m in r.gateways]) for r in results)
    dash = max(r.dashboard.rss for r in results)
    gateway_met = per_gateway <= GATEWAY_TARGET_MB
    dashboard_met = dash <= DASHBOARD_TARGET_MB
    at = [r for r in results if r.n == TOTAL_AT]
    own = at[0] if at else None
    if own is not None:
        pss = statistics.median([m.pss for m in own.gateways])
        print(
            f"everything at N={TOTAL_AT}, gateways in their own processes "
            f"(HERMES_GATEWAY_ZYGOTE=0, hermes supervise), PSS {own.total_pss:6.1f} MB  "
            "(reported)  per gateway PSS "
            f"{pss:.1f} MB = {pss / own.bare.pss:.1f}x bare python's {own.bare.pss:.1f} MB "
            f"(same run: {TOTAL_AT} bare pythons {TOTAL_AT * own.bare.pss:.0f} MB)"
        )
    if forked is not None:
        # Judged: the image's default (Dockerfile: HERMES_GATEWAY_ZYGOTE=1).
        total_met = forked.total_pss <= TOTAL_TARGET_MB
        pss = statistics.median([m.pss for m in forked.gateways])
        print(
            f"everything at N={TOTAL_AT}, the image's default (gateway zygote), PSS "
            f"{forked.total_pss:6.1f} MB  [target <= {TOTAL_TARGET_MB:g} MB: "
            f"{'met' if total_met else 'MISSED'}]  per gateway PSS {pss:.1f} MB (+ its launcher); "
            f"baseline, same run: own processes "
            f"{own.total_pss if own is not None else float('nan'):.1f} MB"
        )
    else:
        total_met = False
        print(f"everything at N={TOTAL_AT}: not measured  [target: MISSED]")
    print(
        f"per gateway idle RSS     {per_gateway:6.1f} MB  [target <= {GATEWAY_TARGET_MB:g} MB: "
        f"{'met' if gateway_met else 'MISSED'}]"
    )
    print(
        f"dashboard idle RSS       {dash:6.1f} MB  [target <= {DASHBOARD_TARGET_MB:g} MB: "
        f"{'met' if dashboard_met else 'MISSED'}]"
    )
    met = gateway_met and dashboard_met and total_met
    if "--why" in sys.argv or not met:
        why_gateway()  # under the same bytecode cache
    return met


def report_size(n: int, *, with_zygote: bool = False) -> SizeResult:
    started = time.monotonic()
    result = measure(n, with_zygote=with_zygote)
    g = result.gateways
    rss = [m.rss for m in g]
    s6_rss = sum(m.rss for ms in result.s6.values() for m in ms)
    s6_pss = sum(m.pss for ms in result.s6.values() for m in ms)
    b = result.bare
    label = "zygote " if with_zygote else ""
    print(
        f"{label}N={n:<3} gateway median PSS {fmt([m.pss for m in g])} "
        f"(anon {fmt([m.anon for m in g])}, "
        f"RSS {fmt(rss)}, min {min(rss):.1f}, max {max(rss):.1f})  "
        f"[{time.monotonic() - started:.0f}s]"
    )
    print(f"      bare python beside them: PSS {b.pss:.1f} (anon {b.anon:.1f}, RSS {b.rss:.1f})")
    print(f"      gateways total: RSS sum {sum(rss):7.1f}, PSS sum {sum(m.pss for m in g):7.1f}")
    counts = ", ".join(f"{len(ms)} {name}" for name, ms in result.s6.items())
    print(f"      s6 overhead ({counts}): RSS sum {s6_rss:6.1f}, PSS sum {s6_pss:6.1f}")
    d = result.dashboard
    print(f"      dashboard: RSS {d.rss:.1f} (anon {d.anon:.1f}, PSS {d.pss:.1f})")
    if result.zygote is not None:
        la = result.launchers
        z = result.zygote
        print(
            f"      zygote configuration: launchers median PSS {fmt([m.pss for m in la])} "
            f"(anon {fmt([m.anon for m in la])}), PSS sum {sum(m.pss for m in la):.1f}; "
            f"zygote PSS {z.pss:.1f} (anon {z.anon:.1f}, RSS {z.rss:.1f})"
        )
        what = "gateways + launchers + zygote + s6 + dashboard"
    else:
        what = "gateways + s6 + dashboard"
    print(f"      everything ({what}), PSS sum {result.total_pss:.1f}")
    return result


if __name__ == "__main__":
    raise SystemExit(main())
