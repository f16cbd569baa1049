"""Where one idle gateway's memory goes: smaps, what each import kept, import times.

Starts a real `hermes gateway run` (one profile in a fresh home, as bench_memory.py
builds them) three times and lets each settle once ready:

1. plain: /proc/PID/smaps grouped by mapping, beside a bare `python -c` that imports
   nothing (the interpreter's own share);
2. with an import hook: the memory each imported module kept, measured with
   tracemalloc as the net allocation of its import (what it allocated and did not free,
   its own imports excluded), summed by top-level package and shown as the import tree
   of the chains that cost the most (who pulled what in);
3. with `-X importtime`: the slowest top-level imports.

    .venv/bin/python bench/memory_breakdown.py [--tree-kb 150]

bench_memory.py prints this with --why or when a target is missed, under its compiled
bytecode cache (see there); run alone it measures the checkout as it is.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench_memory import HERMES, build_home, mem, tree_env, wait_http

# Runs inside the gateway process, before the CLI: records what every import on the main
# thread kept (tracemalloc's traced total after minus before, children subtracted), and
# once the state file says `running` (and SETTLE_S more) writes the rows to OUT and
# stops the gateway. The watcher thread imports nothing: it would skew the attribution.
HOOK = r"""
import os, sys, threading, tracemalloc
import importlib._bootstrap as bootstrap
OUT, STATE, SETTLE_S = sys.argv[1], sys.argv[2], float(sys.argv[3])
tracemalloc.start(1)
original, main_thread, stack, rows = bootstrap._load_unlocked, threading.get_ident(), [], []

def load(spec):
    if threading.get_ident() != main_thread:
        return original(spec)
    stack.append([spec.name, tracemalloc.get_traced_memory()[0], 0])
    try:
        return original(spec)
    finally:
        name, start, children = stack.pop()
        kept = tracemalloc.get_traced_memory()[0] - start
        parent = stack[-1][0] if stack else ""
        rows.append([name, kept, kept - children, parent, str(getattr(spec, "origin", ""))])
        if stack:
            stack[-1][2] += kept

bootstrap._load_unlocked = load

def report():
    ready = threading.Event()
    while not ready.wait(0.1):
        try:
            with open(STATE) as f:
                if '"gateway_state": "running"' in f.read():
                    break
        except OSError:
            pass
    ready.wait(SETTLE_S)
    import json, signal
    traced = tracemalloc.get_traced_memory()[0]
    with open(OUT, "w") as f:
        json.dump({"rows": rows, "traced": traced, "modules": len(sys.modules)}, f)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=report, daemon=True).start()
sys.argv = ["hermes", *sys.argv[4:]]
from hermes_container.cli import main
sys.exit(main())
"""
SETTLE_S = 2.0
KB = 1024


@contextlib.contextmanager
def one_profile_home() -> Iterator[tuple[Path, dict[str, str], int]]:
    """A fresh home with the default profile (bench_memory's settings); its env and port."""
    base = Path(tempfile.mkdtemp(prefix="hermes-bench-why-"))
    try:
        home = build_home(base, 1)
        env = tree_env(base, home)
        del env["HERMES_S6_SCANDIR"]  # no tree: `gateway run` serves in the foreground
        env["HERMES_ALLOW_ROOT_GATEWAY"] = "1"
        port = next(
            int(line.split()[1])
            for line in (home.root / "config.yaml").read_text().splitlines()
            if line.startswith("  port:")
        )
        yield home.root, env, port
    finally:
        shutil.rmtree(base, ignore_errors=True)


def smaps_groups(pid: int) -> dict[str, tuple[float, float]]:
    """Mapping name -> (Pss, Anonymous) in KB, from /proc/PID/smaps."""
    groups: dict[str, list[float]] = {}
    current = "[anon]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if not head:
            continue
        if "-" in head[0] and not head[0].endswith(":"):
            current = head[5] if len(head) > 5 else "[anon]"
            if "/run/metrics/" in current or current.endswith("-shm"):
                current = "mapped data files (metrics, sqlite -shm)"
            continue
        if head[0] in ("Pss:", "Anonymous:"):
            sums = groups.setdefault(current, [0.0, 0.0])
            sums[0 if head[0] == "Pss:" else 1] += int(head[1])
    return {name: (pss, anon) for name, (pss, anon) in groups.items()}


def describe(name: str) -> str:
    return {
        "[anon]": "[anon] (pymalloc arenas, large blocks, thread stacks)",
        "[heap]": "[heap] (malloc: objects > 512 B, C libraries)",
    }.get(name, name.replace(str(Path(sys.prefix)), "<venv>"))


def plain_run() -> list[str]:
    """smaps of an idle gateway, beside a bare python measured at the same time."""
    with one_profile_home() as (home, env, port):
        gateway = subprocess.Popen(
            [HERMES, "gateway", "run"], env=env, stderr=subprocess.DEVNULL, cwd=home
        )
        bare = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.read()"],
            stdin=subprocess.PIPE,
            env=env,
        )
        try:
            wait_http(port, "/health", {})
            time.sleep(SETTLE_S)
            g, b = mem(gateway.pid), mem(bare.pid)
            groups = smaps_groups(gateway.pid)
        finally:
            gateway.terminate()
            bare.kill()
            gateway.wait(15)
            bare.wait(5)
    lines = [
        f"one idle gateway: RSS {g.rss:.1f} MB, anon {g.anon:.1f}, PSS {g.pss:.1f}; "
        f"bare python (imports nothing): RSS {b.rss:.1f}, anon {b.anon:.1f}, PSS {b.pss:.1f}",
        "  smaps by mapping (KB):      PSS    anon",
    ]
    for name, (pss, anon) in sorted(groups.items(), key=lambda kv: -kv[1][0])[:8]:
        lines.append(f"    {pss:8.0f} {anon:7.0f}  {describe(name)}")
    return lines


def by_size(item: tuple[str, int]) -> int:
    return -item[1]


def kind_of(origin: str, name: str) -> str:
    if name.startswith("hermes_container"):
        return "hermes_container"
    if "site-packages" in origin:
        return "third-party"
    return "stdlib"


def traced_run(tree_kb: int) -> list[str]:
    """What each import kept, by package and as the tree of the costliest chains."""
    with one_profile_home() as (home, env, _port), tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "imports.json"
        state = home / "gateway_state.json"
        argv = [sys.executable, "-c", HOOK, str(out), str(state), str(SETTLE_S)]
        subprocess.run(
            [*argv, "gateway", "run"], env=env, stderr=subprocess.DEVNULL, timeout=120, cwd=home
        )
        data = json.loads(out.read_text())
    rows = data["rows"]
    kept = sum(row[2] for row in rows)
    by_kind: dict[str, int] = {}
    by_top: dict[str, list[int]] = {}
    for name, _inclusive, own, _parent, origin in rows:
        kind = kind_of(origin, name)
        by_kind[kind] = by_kind.get(kind, 0) + own
        top = by_top.setdefault(f"{name.split('.')[0]} ({kind})", [0, 0])
        top[0] += own
        top[1] += 1
    lines = [
        f"what the gateway's imports kept (tracemalloc, net per import): {kept / KB:.0f} KB "
        f"in {len(rows)} modules ({data['modules']} loaded in all; traced total when idle "
        f"{data['traced'] / KB:.0f} KB)",
        "  by kind: "
        + ", ".join(f"{k} {v / KB:.0f} KB" for k, v in sorted(by_kind.items(), key=by_size)),
        "  by top-level package (KB, modules):",
    ]
    for package, (own, count) in sorted(by_top.items(), key=lambda kv: -kv[1][0])[:16]:
        lines.append(f"    {own / KB:7.0f} {count:4d}  {package}")
    lines.append(f"  import tree, chains keeping >= {tree_kb} KB (kept with imports, own):")
    children: dict[str, list[list[object]]] = {}
    for row in rows:
        children.setdefault(str(row[3]), []).append(row)

    def walk(parent: str, depth: int) -> None:
        for row in sorted(children.get(parent, []), key=lambda r: -int(str(r[1]))):
            inclusive, own = int(str(row[1])), int(str(row[2]))
            if inclusive < tree_kb * KB or depth > 5:
                continue
            lines.append(f"    {inclusive / KB:6.0f} {own / KB:6.0f}  {'  ' * depth}{row[0]}")
            walk(str(row[0]), depth + 1)

    walk("", 0)
    return lines


def importtime_run() -> list[str]:
    """The slowest top-level imports of a real start (-X importtime, cumulative)."""
    with one_profile_home() as (home, env, port):
        gateway = subprocess.Popen(
            [sys.executable, "-X", "importtime", HERMES, "gateway", "run"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
            cwd=home,
        )
        try:
            wait_http(port, "/health", {})
        finally:
            gateway.send_signal(signal.SIGTERM)
            _, err = gateway.communicate(timeout=15)
    rows = []
    for line in err.splitlines():
        parts = line.split("|")
        if line.startswith("import time:") and len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].rstrip()
            if len(name) - len(name.lstrip()) <= 1:  # top-level imports only
                rows.append((int(parts[1]), name.strip()))
    rows.sort(reverse=True)
    lines = ["slowest top-level imports of a gateway start (-X importtime, cumulative):"]
    lines += [f"    {micros / 1000:7.1f} ms  {name}" for micros, name in rows[:8]]
    return lines


def report(tree_kb: int = 150) -> list[str]:
    return [*plain_run(), *traced_run(tree_kb), *importtime_run()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree-kb", type=int, default=150, help="smallest chain shown")
    args = parser.parse_args()
    print("\n".join(report(args.tree_kb)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
