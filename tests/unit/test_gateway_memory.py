"""What a running gateway keeps in memory: `gateway run` without argparse (cli.run_args),
and none of the import chains a gateway never uses (bench/bench_memory.py, issue 21)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.unit.conftest import GatewayProfile

# Each is loaded by a library's package __init__ or by the CLI's parser, never used by a
# serving gateway: uvicorn's command line (click, multiprocessing), prometheus-client's
# exposition servers (http.server, urllib.request, wsgiref), argparse with gettext.
NEVER_IN_A_GATEWAY = (
    "argparse",
    "gettext",
    "click",
    "uvicorn.main",
    "uvicorn.supervisors",
    "multiprocessing",
    "prometheus_client.exposition",
    "http.server",
    "urllib.request",
    "wsgiref",
)

# Runs the real CLI in this process; once the state file says `running`, asks /health,
# prints the verdict and the modules found, then stops the gateway with SIGTERM.
_PROBE = """
import os, signal, sys, threading
STATE, PORT, NEVER = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")

def probe():
    tick = threading.Event()
    while not tick.wait(0.05):
        try:
            with open(STATE) as f:
                if '"gateway_state": "running"' in f.read():
                    break
        except OSError:
            pass
    import socket
    with socket.create_connection(("127.0.0.1", PORT)) as s:
        s.sendall(b"GET /health HTTP/1.1\\r\\nhost: x\\r\\nconnection: close\\r\\n\\r\\n")
        head = s.recv(100).split(b"\\r\\n")[0].decode()
    tick.wait(1.0)  # the metrics writer starts right after readiness
    found = sorted(m for m in NEVER if m in sys.modules)
    print(head, "|", ",".join(found), "|", "ssl" in sys.modules, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=probe, daemon=True).start()
sys.argv = ["hermes", *sys.argv[4:]]
from hermes_container.cli import main
sys.exit(main())
"""


@pytest.mark.parametrize("argv", [["gateway", "run"], ["gateway", "run", "--supervised"]])
def test_a_serving_gateway_loads_none_of_the_unused_chains(
    profile: GatewayProfile, argv: list[str]
) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _PROBE,
            str(profile.dir / "gateway_state.json"),
            str(profile.port),
            ",".join(NEVER_IN_A_GATEWAY),
            "-p",
            profile.name,
            *argv,
        ],
        env={**os.environ, "HERMES_ALLOW_ROOT_GATEWAY": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    # Served, loaded nothing on the list, and ssl is there for https providers.
    assert proc.stdout.strip() == "HTTP/1.1 200 OK |  | True", proc.stderr
    assert "stopped (received SIGTERM)" in proc.stderr
    assert (profile.dir / "gateway_state.json").read_text().count('"stopped"') == 1


# What the fast path parses by hand, and what argparse must answer the same way.
_RUN_ARGVS = [
    ["gateway", "run"],
    ["gateway", "run", "--supervised", "--notify-fd", "5"],
    ["-p", "coder", "gateway", "run", "--supervised", "--notify-fd", "3"],
    ["--profile", "coder", "gateway", "run", "--replace"],
    ["--profile=coder", "gateway", "run", "--no-supervise", "--notify-fd=7"],
    ["-v", "gateway", "run", "--notify-fd", "05", "--notify-fd", "9", "--supervised"],
    ["-p", "gateway", "gateway", "run"],  # the profile named "gateway"
    ["gateway", "run", "--supervised", "--supervised", "--replace", "--no-supervise"],
]


@pytest.mark.parametrize("argv", _RUN_ARGVS)
@pytest.mark.parametrize("env_profile", [None, "fromenv"])
def test_run_fast_path_matches_argparse(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], env_profile: str | None
) -> None:
    from hermes_container.cli import build_parser, run_args

    if env_profile is None:
        monkeypatch.delenv("HERMES_PROFILE", raising=False)
    else:
        monkeypatch.setenv("HERMES_PROFILE", env_profile)
    fast = run_args(argv)
    assert fast is not None, argv
    assert vars(fast) == vars(build_parser(argv).parse_args(argv))


@pytest.mark.parametrize(
    "argv",
    [
        ["gateway"],
        ["gateway", "run", "--help"],
        ["gateway", "run", "--notify-fd"],
        ["gateway", "run", "--notify-fd", "-1"],
        ["gateway", "run", "--notify-fd", "x"],
        ["gateway", "run", "--notify-fd", "\u0663"],  # a digit, but not an ASCII one
        ["gateway", "run", "--notify-fd="],
        ["gateway", "run", "--super"],  # an abbreviation: argparse's business
        ["gateway", "run", "extra"],
        ["gateway", "start"],
        ["-pcoder", "gateway", "run"],
        ["--", "gateway", "run"],
        ["run", "gateway"],
    ],
)
def test_run_fast_path_leaves_everything_else_to_argparse(argv: list[str]) -> None:
    from hermes_container.cli import run_args

    assert run_args(argv) is None


def test_bad_run_arguments_still_get_argparse_errors(profile: GatewayProfile) -> None:
    from tests.conftest import run_hermes

    proc = run_hermes("gateway", "run", "--notify-fd", "x")
    assert proc.returncode == 2
    assert proc.stderr.startswith("hermes: error: argument --notify-fd: invalid int value")
