"""Running tools without the subprocess module: spawn_capture, run_tool, which."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hermes_container.errors import HermesError
from hermes_container.supervision import tools


def test_spawn_capture_collects_stdout_stderr_and_exit_code() -> None:
    result = tools.spawn_capture(["/bin/sh", "-c", "echo out; echo err >&2; exit 3"], 10)
    assert result is not None
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")


def test_spawn_capture_reports_a_signal_as_negative_code() -> None:
    result = tools.spawn_capture(["/bin/sh", "-c", "kill -TERM $$"], 10)
    assert result is not None and result.returncode == -15


def test_spawn_capture_reads_more_than_a_pipe_buffer() -> None:
    # 1 MiB on each stream: a reader that drained one pipe only would deadlock here.
    script = "head -c 1048576 /dev/zero; head -c 1048576 /dev/zero >&2"
    result = tools.spawn_capture(["/bin/sh", "-c", script], 30)
    assert result is not None and result.returncode == 0
    assert len(result.stdout) == len(result.stderr) == 1048576


def test_spawn_capture_gives_the_tool_an_empty_stdin() -> None:
    result = tools.spawn_capture(["/bin/sh", "-c", "cat; echo done"], 10)
    assert result is not None and result.stdout == "done\n"


def test_spawn_capture_kills_and_reaps_on_timeout(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    result = tools.spawn_capture(["/bin/sh", "-c", f"echo $$ > {pidfile}; exec sleep 30"], 0.5)
    assert result is None
    assert time.monotonic() - started < 10
    pid = int(pidfile.read_text())
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # already reaped: no zombie left behind
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def _fds_leaked_by(body: str) -> str:
    """Run `body` in a fresh interpreter and report the descriptors it left open or
    closed: threads that earlier tests left in this process (a ledger connection, a
    metrics flusher) open and close descriptors of their own."""
    script = (
        "import os\n"
        "from hermes_container.supervision import tools\n"
        "before = set(os.listdir('/proc/self/fd'))\n"
        f"{body}\n"
        "after = set(os.listdir('/proc/self/fd'))\n"
        "print(sorted(after - before), sorted(before - after))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.strip()


def test_spawn_capture_leaks_no_descriptors() -> None:
    body = "for _ in range(20):\n    tools.spawn_capture(['/bin/true'], 10)"
    assert _fds_leaked_by(body) == "[] []"


def test_spawn_capture_of_a_missing_program_raises_and_leaks_nothing(tmp_path: Path) -> None:
    body = (
        "try:\n"
        f"    tools.spawn_capture([{str(tmp_path / 'absent')!r}], 10)\n"
        "except FileNotFoundError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('no FileNotFoundError')"
    )
    assert _fds_leaked_by(body) == "[] []"


def _tool(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_which_finds_the_first_executable_on_path(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (first / "tool").write_text("not executable")
    found = _tool(second, "tool", "true")
    (first / "dir").mkdir()
    assert tools.which("tool", f"{first}:{second}") == str(found)
    assert tools.which("dir", str(first)) is None
    assert tools.which("absent", f"{first}:{second}") is None


def test_run_tool_turns_failure_into_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tool(tmp_path, "s6-fake", 'echo "s6-fake: fatal: no such service" >&2; exit 111')
    monkeypatch.setenv("PATH", str(tmp_path))
    tools.find_tool.cache_clear()
    try:
        with pytest.raises(HermesError) as caught:
            tools.run_tool("s6-fake", "svc")
        assert caught.value.message == "s6-fake svc failed: s6-fake: fatal: no such service"
        assert tools.run_tool("s6-fake", check=False).returncode == 111
    finally:
        tools.find_tool.cache_clear()


def test_run_tool_timeout_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tool(tmp_path, "s6-slow", "exec sleep 30")
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    tools.find_tool.cache_clear()
    try:
        with pytest.raises(HermesError, match=r"^s6-slow did not answer within 0.3s$"):
            tools.run_tool("s6-slow", timeout=0.3)
    finally:
        tools.find_tool.cache_clear()
