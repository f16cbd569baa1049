"""The Kubernetes probes against a real tree (`hermes supervise --dashboard`: s6-svscan,
the gateways, the ingress and the dashboard, as in the image).

Liveness restarts a pod, readiness only takes it out of its Services: a parked profile
must fail readiness and never liveness, or Kubernetes would restart every profile of
the pod, in a loop, over one bad configuration.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.s6.conftest import WAIT, Tree, host_mode_tree, processes_of, wait_for


@pytest.fixture
def host() -> Iterator[Tree]:
    env = {
        "HERMES_DASHBOARD": "1",
        "HERMES_DASHBOARD_HOST": "127.0.0.1",
        "HERMES_DASHBOARD_PORT": str(free_port()),
    }
    with host_mode_tree(extra_env=env) as tree:
        yield tree


def probe(tree: Tree, flag: str) -> tuple[int, dict[str, bool], str]:
    """Run `hermes healthcheck FLAG --json` as the home owner (as kubelet's exec does
    through the image's shim): its exit code and each check's verdict by name."""
    proc = tree.hermes("healthcheck", flag, "--json", "--timeout", "2")
    report = json.loads(proc.stdout)
    return proc.returncode, {c["name"]: c["ok"] for c in report["checks"]}, proc.stdout


def _svscan_pid(tree: Tree) -> int:
    for pid in processes_of(tree.base):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if Path(argv[0].decode()).name == "s6-svscan":
            return pid
    raise AssertionError("no s6-svscan in the tree")


def test_parked_profile_is_live_but_not_ready_and_a_dead_svscan_is_not_live(host: Tree) -> None:
    supervisor = host.spawn("supervise", "--dashboard")
    try:
        host.wait_ready("default")
        # Everything up: both probes pass, each checking only its own things.
        code, checks, out = wait_for(
            lambda: (r := probe(host, "--readiness"))[0] == 0 and r, what="the tree to be ready"
        )
        assert checks == {"ingress": True, "gateway default": True}, out
        code, checks, out = wait_for(
            lambda: (r := probe(host, "--liveness"))[0] == 0 and r, what="the tree to be live"
        )
        assert checks == {"supervision": True, "dashboard": True}, out

        # One profile parked after a crash loop (its port is taken, every start dies at
        # once): not ready, and still live.
        broken = host.create("broken")
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", host.set_port(broken)))
            squatter.listen()
            started = host.hermes("-p", "broken", "gateway", "start", "--timeout", "15")
            assert started.returncode == 1
            wait_for(lambda: host.status("broken")["parked"], what="broken to be parked")
        code, checks, out = probe(host, "--readiness")
        assert code == 1
        assert checks == {"ingress": True, "gateway default": True, "gateway broken": False}
        assert "not ready: crashed: crash loop" in out
        code, checks, out = probe(host, "--liveness")
        assert (code, checks) == (0, {"supervision": True, "dashboard": True}), out
        # The Docker HEALTHCHECK keeps its meaning: the parked profile makes it fail.
        plain = host.hermes("healthcheck", "--timeout", "1")
        assert plain.returncode == 1 and "FAIL gateway broken" in plain.stdout

        # Stopped on purpose, it no longer counts: ready again.
        host.ok("-p", "broken", "gateway", "stop")
        assert probe(host, "--readiness")[0] == 0

        # The dashboard down: the pod is not live (a restart brings it back).
        dashboard = host.home.run_dir / "service" / "dashboard"
        subprocess.run(["s6-svc", "-d", str(dashboard)], check=True, timeout=WAIT)
        code, checks, out = wait_for(
            lambda: (r := probe(host, "--liveness"))[0] == 1 and r, what="the dashboard down"
        )
        assert checks == {"supervision": True, "dashboard": False}, out
        subprocess.run(["s6-svc", "-u", str(dashboard)], check=True, timeout=WAIT)
        wait_for(lambda: probe(host, "--liveness")[0] == 0, what="the dashboard back")

        # s6-svscan gone: the gateways may still serve, but nothing supervises them.
        os.kill(_svscan_pid(host), signal.SIGKILL)
        code, checks, out = wait_for(
            lambda: (r := probe(host, "--liveness"))[0] == 1 and r, what="liveness to fail"
        )
        assert checks["supervision"] is False, out
        assert "no s6-svscan runs on it" in out
        assert supervisor.wait(timeout=WAIT) == 1, "hermes supervise saw it die too"
    finally:
        if supervisor.poll() is None:
            supervisor.send_signal(signal.SIGTERM)
        else:
            # Its orphaned s6-supervise processes still hold the output pipes open.
            host.kill_everything()
        supervisor.communicate(timeout=WAIT + 40)
