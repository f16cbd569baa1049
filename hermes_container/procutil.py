"""Process liveness by signal 0, shared by the dashboard and the boot reconciler."""

from __future__ import annotations

import os


def signal_zero(pid: int) -> bool | None:
    """Probe `pid` with signal 0: True if delivered, False if no such process,
    None if the process exists but is not ours to signal."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return None
    return True


def pid_alive(pid: int | None) -> bool:
    """True when a process `pid` (a positive pid) exists, ours or not."""
    if not pid or pid <= 0:
        return False
    return signal_zero(pid) is not False
