"""Locate and run the s6 command-line tools (on PATH, or under s6-overlay's /command).

Tools are started with `os.posix_spawn` rather than the subprocess module: importing
subprocess (threading, selectors, signal, locale) costs about 10 ms, a tenth of a
`hermes gateway status` on a small machine, and these tools only need a pipe or two.
"""

from __future__ import annotations

import os
import select
import time
from functools import cache

from hermes_container.errors import HermesError

S6_OVERLAY_BIN = "/command"


def which(name: str, path: str | None = None) -> str | None:
    """The first executable `name` on `path` (default $PATH), like `command -v`."""
    search = os.environ.get("PATH", os.defpath) if path is None else path
    for directory in search.split(os.pathsep):
        candidate = os.path.join(directory or ".", name)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None


@cache
def find_tool(name: str) -> str | None:
    """Absolute path of an s6/execline tool, or None when it is not installed."""
    found = which(name)
    if found:
        return os.path.abspath(found)
    candidate = os.path.join(S6_OVERLAY_BIN, name)
    return candidate if os.access(candidate, os.X_OK) else None


def require_tool(name: str) -> str:
    path = find_tool(name)
    if path is None:
        raise HermesError(f"{name} not found on PATH or in {S6_OVERLAY_BIN} (install s6)")
    return path


class ToolResult:
    """What a finished tool left: its exit status and its decoded output."""

    __slots__ = ("returncode", "stderr", "stdout")

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


def run_tool(name: str, *args: str, timeout: float = 10.0, check: bool = True) -> ToolResult:
    """Run an s6 tool; a non-zero exit becomes a one-line HermesError when `check`."""
    argv = [require_tool(name), *args]
    result = spawn_capture(argv, timeout)
    if result is None:
        raise HermesError(f"{name} did not answer within {timeout:g}s")
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        reason = detail[-1] if detail else f"exit {result.returncode}"
        raise HermesError(f"{name} {' '.join(args)} failed: {reason}")
    return result


def spawn_capture(argv: list[str], timeout: float) -> ToolResult | None:
    """Run `argv` with stdin from /dev/null, collecting stdout and stderr.

    None when it has not finished within `timeout` seconds; it is then killed and reaped.
    """
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        pid = os.posix_spawn(
            argv[0],
            argv,
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out_w, 1),
                (os.POSIX_SPAWN_DUP2, err_w, 2),
            ],
        )
    except BaseException:
        os.close(out_r)
        os.close(err_r)
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
    try:
        chunks = _drain({out_r: [], err_r: []}, time.monotonic() + timeout)
    finally:
        os.close(out_r)
        os.close(err_r)
    if chunks is None:
        import signal

        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return None
    _, wait_status = os.waitpid(pid, 0)
    return ToolResult(
        os.waitstatus_to_exitcode(wait_status),
        b"".join(chunks[out_r]).decode(errors="replace"),
        b"".join(chunks[err_r]).decode(errors="replace"),
    )


def _drain(chunks: dict[int, list[bytes]], deadline: float) -> dict[int, list[bytes]] | None:
    """Read every fd in `chunks` to end of file; None if the deadline passes first."""
    poller = select.poll()
    for fd in chunks:
        poller.register(fd, select.POLLIN)
    open_fds = len(chunks)
    while open_fds:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        for fd, _event in poller.poll(remaining * 1000):
            data = os.read(fd, 65536)
            if data:
                chunks[fd].append(data)
            else:
                poller.unregister(fd)
                open_fds -= 1
    return chunks
