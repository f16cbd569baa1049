"""`hermes events [export] [--follow] [--since ID|TIME] [--profile] [--kind] [--json]
[--limit]` and `hermes gateway status --at TIME`, through the real CLI in a subprocess,
on a ledger written beforehand with known times."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hermes_container.events.ledger import Ledger, make_pending
from hermes_container.home import HermesHome
from tests.conftest import run_hermes

# Reset by the `home` fixture: relative windows ("15m") are measured from when the
# events were written, not from when pytest imported this module.
NOW = time.time()
HOUR = 3600.0
# (kind, profile, seconds ago, data)
ROWS: list[tuple[str, str | None, float, dict[str, Any]]] = [
    ("slot.registered", "alpha", 3 * HOUR, {}),
    ("gateway.starting", "alpha", 3 * HOUR - 1, {"pid": 11, "port": 9001}),
    ("gateway.ready", "alpha", 3 * HOUR - 2, {"pid": 11, "port": 9001}),
    ("slot.registered", "beta", 2 * HOUR, {}),
    ("desired.changed", "beta", 2 * HOUR - 1, {"from": None, "to": "running"}),
    ("gateway.exited", "alpha", 600, {"code": 137, "signal": 9, "expected": False, "how": "k"}),
    ("gateway.restarted", "alpha", 599, {"restarts": 1}),
    ("profile.created", None, 120, {}),
]


@pytest.fixture
def home(hermes_home: HermesHome, monkeypatch: pytest.MonkeyPatch) -> Iterator[HermesHome]:
    global NOW
    NOW = time.time()
    monkeypatch.delenv("HERMES_EVENTS", raising=False)
    hermes_home.root.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(hermes_home.root)
    try:
        ledger.write(
            make_pending(kind, profile=profile, actor="cli", at=NOW - ago, data=data)
            for kind, profile, ago, data in ROWS
        )
    finally:
        ledger.close()
    yield hermes_home


def _ok(*args: str) -> str:
    proc = run_hermes(*args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout


def _json(*args: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _ok("events", "--json", *args).splitlines()]


def _usage_error(*args: str) -> str:
    proc = run_hermes(*args)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hermes: error: "), proc.stderr
    assert proc.stdout == ""
    return lines[0]


def _iso(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


def test_json_lines_are_every_event_in_id_order(home: HermesHome) -> None:
    events = _json()
    assert [e["id"] for e in events] == list(range(1, len(ROWS) + 1))
    for event, (kind, profile, ago, data) in zip(events, ROWS, strict=True):
        assert set(event) == {"id", "at", "kind", "profile", "actor", "data"}
        assert (event["kind"], event["profile"], event["actor"], event["data"]) == (
            kind,
            profile,
            "cli",
            data,
        )
        assert abs(event["at"] - (NOW - ago)) < 1e-3


def test_plain_lines_say_id_time_kind_profile_actor_and_data(home: HermesHome) -> None:
    lines = _ok("events").splitlines()
    assert len(lines) == len(ROWS)
    stamp = _iso(NOW - 600)
    assert (
        lines[5]
        == f"6 {stamp} gateway.exited [alpha] by cli code=137 expected=False how=k signal=9"
    )
    assert lines[7] == f"8 {_iso(NOW - 120)} profile.created by cli"


def test_export_is_json_lines_too(home: HermesHome) -> None:
    exported = _ok("events", "export")
    assert exported == _ok("events", "--json")
    assert [
        json.loads(line)["id"] for line in _ok("events", "export", "--since", "7").splitlines()
    ] == [7, 8]


def test_since_an_id_a_moment_or_a_time_ago(home: HermesHome) -> None:
    assert [e["id"] for e in _json("--since", "6")] == [6, 7, 8]  # the id itself included
    assert [e["id"] for e in _json("--since", "1")] == list(range(1, 9))
    assert _json("--since", "99") == []
    assert [e["id"] for e in _json("--since", _iso(NOW - 2 * HOUR))] == [4, 5, 6, 7, 8]
    assert [e["id"] for e in _json("--since", "15m")] == [6, 7, 8]
    assert [e["id"] for e in _json("--since", "5m")] == [8]
    assert [e["id"] for e in _json("--since", "1d")] == list(range(1, 9))


def test_profile_kind_and_limit_filters(home: HermesHome) -> None:
    assert [e["id"] for e in _json("--profile", "alpha")] == [1, 2, 3, 6, 7]
    assert [e["id"] for e in _json("--profile", "beta")] == [4, 5]
    assert _json("--profile", "gamma") == []
    assert [e["id"] for e in _json("--kind", "slot.registered")] == [1, 4]
    assert [e["id"] for e in _json("--kind", "gateway.")] == [2, 3, 6, 7]
    assert [
        e["id"] for e in _json("--kind", "gateway.", "--profile", "alpha", "--since", "15m")
    ] == [6, 7]
    assert [e["id"] for e in _json("--limit", "3")] == [1, 2, 3]
    assert [e["id"] for e in _json("--limit", "2", "--since", "5")] == [5, 6]


def test_bad_arguments_are_one_line_and_exit_2(home: HermesHome) -> None:
    assert "--since" in _usage_error("events", "--since", "yesterday-ish")
    assert "--since" in _usage_error("events", "export", "--since", "15x")
    assert "profile" in _usage_error("events", "--profile", "Not/A/Name").lower()
    _usage_error("events", "--profile", "UPPER")
    _usage_error("events", "--limit", "0")
    _usage_error("events", "export", "--follow")
    assert "--at" in _usage_error("gateway", "status", "--all", "--at", "half past")
    assert "--at" in _usage_error("-p", "alpha", "gateway", "status", "--at", "not-a-time")


def test_gateway_status_at_answers_from_the_ledger(home: HermesHome) -> None:
    before = {
        s["profile"]: s
        for s in json.loads(_ok("gateway", "status", "--all", "--json", "--at", "30m"))
    }
    assert sorted(before) == ["alpha", "beta"]
    alpha = before["alpha"]
    assert (alpha["up"], alpha["ready"], alpha["pid"], alpha["restarts"]) == (True, True, 11, 0)
    assert before["beta"]["desired_state"] == "running" and not before["beta"]["up"]
    alpha_now = json.loads(_ok("-p", "alpha", "gateway", "status", "--json", "--at", _iso(NOW)))
    assert (alpha_now["up"], alpha_now["restarts"], alpha_now["exit_code"]) == (False, 1, 137)
    assert alpha_now["gateway_state"] == "crashed"
    assert alpha_now["manager"].startswith("event ledger replay at ")
    text = _ok("-p", "alpha", "gateway", "status", "--at", "4h")
    assert "event ledger replay at" in text


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Lines:
    """Lines from a pipe with a timeout (select on the raw fd; no buffered reader to
    hide lines that already arrived)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.pending = b""

    def next(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.pending:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.fd], [], [], max(0.0, left))
            assert ready, f"no line from `hermes events --follow` within {timeout}s"
            chunk = os.read(self.fd, 65536)
            assert chunk, "`hermes events --follow` closed its output"
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return line.decode()


def test_follow_prints_new_events_through_a_pipe_and_idles_behind_a_filter(
    home: HermesHome,
) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hermes_container",
            "events",
            "--follow",
            "--json",
            "--profile",
            "beta",
            "--since",
            "4",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # block-buffered stdout, as into `| grep`: each batch must be flushed
        env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
    )
    lines = Lines(proc)
    ledger = Ledger(home.root)
    try:
        assert json.loads(lines.next(20))["id"] == 4
        assert json.loads(lines.next(5))["id"] == 5
        # Events the filter hides arrive: the follower must go on sleeping, not spin.
        ledger.write(make_pending("gateway.ready", profile="alpha", actor="t") for _ in range(50))
        time.sleep(0.8)
        cpu_before = _cpu_seconds(proc.pid)
        time.sleep(2.0)
        spent = _cpu_seconds(proc.pid) - cpu_before
        assert spent < 0.3, f"the follower burnt {spent:.2f}s of CPU in 2s with nothing to print"
        ledger.write([make_pending("gateway.starting", profile="beta", actor="t", data={"pid": 3})])
        line = json.loads(lines.next(5))  # reaches a pipe at once, not at exit
        assert (line["id"], line["kind"], line["data"]) == (59, "gateway.starting", {"pid": 3})
    finally:
        ledger.close()
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    assert code == 0
    assert proc.stderr is not None and proc.stderr.read() == b""


def test_a_profile_named_like_a_command_word_is_still_the_cli_actor(
    hermes_home: HermesHome,
) -> None:
    """The actor comes from the parsed command: `-p run gateway stop` is someone at the
    CLI, not the gateway process (whose own command is `gateway run`)."""
    assert run_hermes("profile", "create", "run").returncode == 0
    assert run_hermes("-p", "run", "gateway", "stop").returncode == 0
    desired = [e for e in _json("--profile", "run") if e["kind"] == "desired.changed"]
    assert desired and desired[-1]["actor"] == "cli"
