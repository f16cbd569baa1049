"""The jobs' board-wide settings: the `jobs:` section beside `kanban:` in the default
profile's config.yaml, read with it (kanban/settings.py) on every tick.

    jobs:
      max_concurrent: 4             # job runs active on one board; unset or < 1: no cap
      gateway_grace_seconds: 300    # a job step whose gateway stays down this long fails
      delivery_max_attempts: 8      # POSTs of one result before it is dead-lettered
      delivery_timeout_seconds: 10  # one POST
      delivery_retry_delay_seconds: 10       # first wait after a failed POST; doubles
      delivery_retry_max_delay_seconds: 600  # ... up to this
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

SECTION = "jobs"


@dataclass(frozen=True, slots=True)
class JobsSettings:
    max_concurrent: int | None = None
    gateway_grace_seconds: float = 300.0
    delivery_max_attempts: int = 8
    delivery_timeout_seconds: float = 10.0
    delivery_retry_delay_seconds: float = 10.0
    delivery_retry_max_delay_seconds: float = 600.0


_MINIMUM = {
    "gateway_grace_seconds": 1.0,
    "delivery_timeout_seconds": 0.5,
    "delivery_retry_delay_seconds": 0.1,
    "delivery_retry_max_delay_seconds": 0.1,
}


def parse(section: Any, where: str) -> tuple[JobsSettings, list[str]]:
    """Settings from a `jobs:` mapping; an unusable value keeps its default, with a warning."""
    defaults = JobsSettings()
    if section is None:
        return defaults, []
    if not isinstance(section, dict):
        return defaults, [f"{where}: expected a mapping, using the defaults"]
    known = {f.name for f in fields(JobsSettings)}
    warnings = [
        f"{where}.{key}: not a jobs setting; ignored"
        for key in sorted(map(str, section))
        if key not in known
    ]
    values: dict[str, Any] = {}
    raw = section.get("max_concurrent")
    if "max_concurrent" in section:
        if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0:
            values["max_concurrent"] = raw
        else:
            warnings.append(f"{where}.max_concurrent: {raw!r} is not a positive integer: no cap")
    raw = section.get("delivery_max_attempts")
    if "delivery_max_attempts" in section:
        if isinstance(raw, int) and not isinstance(raw, bool) and 1 <= raw <= 100:
            values["delivery_max_attempts"] = raw
        else:
            warnings.append(
                f"{where}.delivery_max_attempts: {raw!r} is not 1 to 100; "
                f"using {defaults.delivery_max_attempts}"
            )
    for key, minimum in _MINIMUM.items():
        if key not in section:
            continue
        raw = section[key]
        number = float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else None
        if number is None or not math.isfinite(number) or number < minimum:
            warnings.append(
                f"{where}.{key}: {raw!r} is not a number of seconds >= {minimum:g}; "
                f"using {getattr(defaults, key):g}"
            )
            continue
        values[key] = number
    return JobsSettings(**values), warnings
