"""The last result of the declarative profiles file, for `gateway status`.

`$HERMES_HOME/run/profiles-file.json` (0600, written atomically) holds what the last
apply of HERMES_PROFILES_FILE came to: applied, partly applied (the profiles that
failed and why) or rejected (why). `gateway status` reads it on its fast path, so this
module loads nothing the status path lacks: json only when there is a file to read
(usually there is none), the writers' helpers only to write; no YAML, no typing.

It is rewritten only when the result differs from the one it holds: applying an
unchanged file again writes nothing.
"""

from __future__ import annotations

import contextlib  # loaded anyway on the status path (profiles, scandir)
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from hermes_container.home import HermesHome

RESULT_FILE = "profiles-file.json"
MAX_RESULT = 64 * 1024  # a result is a few lines; a bigger file is not ours
APPLIED = "applied"
REJECTED = "rejected"
_COMPARED = ("file", "result", "reason", "failed")


def result_path(home: HermesHome) -> Path:
    return home.run_dir / RESULT_FILE


def read_result(home: HermesHome) -> dict[str, Any] | None:
    """The recorded result, or None (none yet, or unreadable: it is only a report).
    Never through a symlink: `gateway status` may read it as root."""
    try:
        fd = os.open(result_path(home), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh:
            import json

            data = json.loads(fh.read(MAX_RESULT))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def save_result(
    home: HermesHome,
    file: str,
    result: str,
    *,
    reason: str | None = None,
    failed: dict[str, str] | None = None,
) -> bool:
    """Record a result; True when the file was (re)written, False when it already said so."""
    new: dict[str, Any] = {"file": file, "result": result, "reason": reason, "failed": failed or {}}
    old = read_result(home)
    if old is not None and all(old.get(key) == new[key] for key in _COMPARED):
        return False
    from hermes_container.fsutil import atomic_write_json
    from hermes_container.timeutil import utc_now_iso

    home.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write_json(result_path(home), {**new, "at": utc_now_iso()})
    return True


def clear_result(home: HermesHome) -> None:
    """No profiles file any more: nothing to report."""
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        result_path(home).unlink()


def status_line(home: HermesHome) -> str | None:
    """The one line `gateway status` prints about the profiles file, or None when the
    last apply went through."""
    data = read_result(home)
    if data is None:
        return None
    if data.get("result") == REJECTED:
        return f"profiles file rejected: {data.get('reason') or 'see container-boot.log'}"
    failed = data.get("failed")
    if isinstance(failed, dict) and failed:
        name, reason = next(iter(failed.items()))
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        return f"profiles file partly applied: profile {name!r}: {reason}{more}"
    return None


__all__ = ["clear_result", "read_result", "result_path", "save_result", "status_line"]
