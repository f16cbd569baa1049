"""A `hermes gateway zygote` for the benchmarks' live trees (not a benchmark itself).

The image's default (Dockerfile: HERMES_GATEWAY_ZYGOTE=1; docs/architecture.md, "Gateway
zygote"): every slot's process is a thin launcher and every gateway a child forked from
one zygote, which listens before the first slot starts and stops after the last.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time
from pathlib import Path

HERMES = str(Path(sys.executable).parent / "hermes")


def start_zygote(
    base: Path, env: dict[str, str], *, log: Path | None = None, timeout: float = 60.0
) -> subprocess.Popen[bytes]:
    """`hermes gateway zygote` on <base>/z/sock, returned once it listens (its readiness
    newline, as s6 waits for it in the image). Sets HERMES_GATEWAY_ZYGOTE in `env`: start
    s6-svscan with that env afterwards, the slots read it from there."""
    path = base / "z" / "sock"
    env["HERMES_GATEWAY_ZYGOTE"] = str(path)
    ready_r, ready_w = os.pipe()
    try:
        with contextlib.ExitStack() as stack:
            err = stack.enter_context(log.open("ab")) if log else subprocess.DEVNULL
            zygote = subprocess.Popen(
                [HERMES, "gateway", "zygote", "--notify-fd", str(ready_w)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                pass_fds=(ready_w,),
                start_new_session=True,
            )
        os.close(ready_w)
        ready_w = -1
        readable, _, _ = select.select([ready_r], [], [], timeout)
        if not readable or os.read(ready_r, 1) != b"\n" or zygote.poll() is not None:
            stop_zygote(zygote)
            raise SystemExit(f"the gateway zygote did not start within {timeout:g}s")
    finally:
        os.close(ready_r)
        if ready_w >= 0:
            os.close(ready_w)
    return zygote


def stop_zygote(zygote: subprocess.Popen[bytes]) -> None:
    """SIGKILL and reap it: call once s6-svscan has stopped every slot."""
    if zygote.poll() is None:
        zygote.kill()
    zygote.wait(10)


def parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
