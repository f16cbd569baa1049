from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hermes_container.fsutil import locked
from hermes_container.home import STATE_FILE
from hermes_container.state import LOCK_NAME, read_state, write_desired, write_observed


def test_missing_file_is_unknown_without_crash(tmp_path: Path) -> None:
    state = read_state(tmp_path)
    assert state.problem == "missing"
    assert not state.known
    assert state.desired_state is None


@pytest.mark.parametrize(
    "content",
    [
        "",
        "{",
        "[]",
        "null",
        '"running"',
        '{"desired_state": "sideways"}',
        '{"gateway_state": "flying"}',
        '{"pid": "12"}',
        '{"pid": true}',
        '{"port": 1.5}',
        '{"started_at": 5}',
        "\x00\x01garbage",
    ],
)
def test_corrupt_file_reads_as_unknown_with_warning(
    tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / STATE_FILE).write_text(content)
    with caplog.at_level(logging.WARNING, logger="hermes.state"):
        state = read_state(tmp_path)
    assert state.problem is not None and state.problem.startswith("corrupt")
    assert state.desired_state is None
    assert "treating the state as unknown" in caplog.text


def test_desired_and_observed_never_clobber_each_other(tmp_path: Path) -> None:
    write_observed(tmp_path, gateway_state="running", pid=42, port=8643)
    write_desired(tmp_path, "running")
    write_observed(tmp_path, gateway_state="stopped", exit_reason="SIGTERM")
    data = json.loads((tmp_path / STATE_FILE).read_text())
    assert data["desired_state"] == "running"
    assert data["desired_updated_at"].endswith("Z")
    assert data["gateway_state"] == "stopped"
    assert data["pid"] == 42 and data["port"] == 8643
    assert data["exit_reason"] == "SIGTERM"


def test_writers_reject_fields_of_the_other_kind(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_observed(tmp_path, desired_state="stopped")
    with pytest.raises(ValueError):
        write_observed(tmp_path, gateway_state="bogus")
    with pytest.raises(ValueError):
        write_desired(tmp_path, "paused")
    assert not (tmp_path / STATE_FILE).exists()


def test_unknown_keys_survive_a_rewrite(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text(json.dumps({"future_field": [1, 2], "pid": 7}))
    write_desired(tmp_path, "stopped")
    data = json.loads((tmp_path / STATE_FILE).read_text())
    assert data["future_field"] == [1, 2]
    assert data["pid"] == 7


def test_corrupt_file_is_replaced_by_next_write(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text("{not json")
    write_desired(tmp_path, "running")
    assert read_state(tmp_path).desired_state == "running"


def _hammer(profile_dir: str, kind: str, rounds: int) -> None:
    for i in range(rounds):
        if kind == "desired":
            write_desired(Path(profile_dir), "running" if i % 2 else "stopped")
        else:
            write_observed(Path(profile_dir), pid=i + 1, gateway_state="running")


def test_concurrent_writers_from_processes_keep_both_kinds(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_hammer, args=(str(tmp_path), kind, 40))
        for kind in ("desired", "observed", "desired", "observed")
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    state = read_state(tmp_path)
    assert state.known
    assert state.desired_state == "running"  # last round of each desired writer: i=39
    assert state.pid == 40 and state.gateway_state == "running"


_PAUSED_WRITER = """
import os, sys, time
from pathlib import Path
from hermes_container import state
real_replace = os.replace
def slow_replace(src, dst):
    print("paused", flush=True)
    time.sleep(60)
    real_replace(src, dst)
os.replace = slow_replace
state.write_desired(Path(sys.argv[1]), "stopped")
"""


def test_kill9_between_write_and_rename_leaves_old_version(tmp_path: Path) -> None:
    write_desired(tmp_path, "running")
    before = (tmp_path / STATE_FILE).read_bytes()
    proc = subprocess.Popen(
        [sys.executable, "-c", _PAUSED_WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "paused"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert (tmp_path / STATE_FILE).read_bytes() == before
    assert read_state(tmp_path).desired_state == "running"
    # The lock died with the writer: nobody holds it any more.
    with locked(tmp_path / LOCK_NAME, blocking=False):
        pass
    write_desired(tmp_path, "stopped")
    assert read_state(tmp_path).desired_state == "stopped"


def test_desired_or_default_reads_without_writing(tmp_path: Path) -> None:
    from hermes_container.state import GatewayState, desired_or_default

    missing = read_state(tmp_path)
    assert desired_or_default("default", missing) == "running"
    assert desired_or_default("alpha", missing) is None
    assert not (tmp_path / "gateway_state.json").exists()
    stopped = GatewayState(desired_state="stopped")
    assert desired_or_default("default", stopped) == "stopped"
    assert desired_or_default("alpha", GatewayState(desired_state="running")) == "running"
