"""The dispatcher's settings: the `kanban:` section of the default profile's config.yaml.

Re-read on every tick (cheaply: the file's bytes are read and parsed again only when
they differ from the last ones), so an operator changes a cap or the default assignee
without restarting anything. A value that cannot be used falls back to its default with
a warning naming the key, and so does a key that is not one of these (a typo would
otherwise do nothing, silently); the dispatcher never stops over its own configuration.

    kanban:
      default_assignee: coder          # empty or whitespace: off
      max_in_progress: 8               # running tasks on a board; unset: 8
      max_in_progress_per_profile: 2   # positive integer; 0, negative, null: no cap
      failure_limit: 2                 # counted failures before a task is blocked
      dispatch_interval_seconds: 60    # the longest sleep between ticks
      claim_ttl_seconds: 900           # a claim not renewed for this long is reclaimed
      retry_backoff_seconds: 30        # first retry delay; doubles per failure
      retry_backoff_max_seconds: 3600  # ... up to this
      rate_limit_cooldown_seconds: 60  # after a 429 without Retry-After
      request_timeout_seconds: 1800    # one task's request, unless its max_runtime says
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hermes_container.errors import ConfigError, UsageError
from hermes_container.home import CONFIG_FILE, HermesHome
from hermes_container.kanban.jobs import settings as jobs_settings
from hermes_container.kanban.jobs.settings import JobsSettings
from hermes_container.kanban.model import ClaimLimits, RetryPolicy
from hermes_container.names import validate_profile_name

SECTION = "kanban"
DEFAULT_MAX_IN_PROGRESS = 8


@dataclass(frozen=True)
class KanbanSettings:
    default_assignee: str | None = None
    max_in_progress: int | None = DEFAULT_MAX_IN_PROGRESS
    max_in_progress_per_profile: int | None = None
    failure_limit: int = 2
    dispatch_interval_seconds: float = 60.0
    claim_ttl_seconds: float = 900.0
    retry_backoff_seconds: float = 30.0
    retry_backoff_max_seconds: float = 3600.0
    rate_limit_cooldown_seconds: float = 60.0
    request_timeout_seconds: float = 1800.0
    jobs: JobsSettings = field(default_factory=JobsSettings)  # the `jobs:` section
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def limits(self) -> ClaimLimits:
        return ClaimLimits(
            max_in_progress=self.max_in_progress,
            max_in_progress_per_profile=self.max_in_progress_per_profile,
            claim_ttl_seconds=self.claim_ttl_seconds,
        )

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            failure_limit=self.failure_limit,
            backoff_seconds=self.retry_backoff_seconds,
            backoff_max_seconds=self.retry_backoff_max_seconds,
        )


_SECONDS = (
    "dispatch_interval_seconds",
    "claim_ttl_seconds",
    "retry_backoff_seconds",
    "retry_backoff_max_seconds",
    "rate_limit_cooldown_seconds",
    "request_timeout_seconds",
)
# Below these a value would spin the dispatcher, reclaim live claims, or fail every task.
_MINIMUM_SECONDS = {
    "dispatch_interval_seconds": 0.1,
    "claim_ttl_seconds": 5.0,
    "request_timeout_seconds": 0.1,  # 0 would be a non-blocking socket: instant failure
}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse(section: Any, where: str = f"{CONFIG_FILE} kanban") -> KanbanSettings:
    """Settings from a `kanban:` mapping; unusable values become defaults plus a warning."""
    defaults = KanbanSettings()
    if section is None:
        return defaults
    if not isinstance(section, dict):
        return KanbanSettings(warnings=(f"{where}: expected a mapping, using the defaults",))
    warnings: list[str] = [
        f"{where}.{key}: not a kanban setting; ignored"
        for key in sorted(map(str, section))
        if key not in _KNOWN
    ]
    values: dict[str, Any] = {}

    raw = section.get("default_assignee")
    if raw is not None:
        text = str(raw).strip() if isinstance(raw, str | int) else None
        if text is None:
            warnings.append(f"{where}.default_assignee: expected a profile name; ignored")
        elif text:
            try:
                values["default_assignee"] = validate_profile_name(text)
            except UsageError as exc:
                warnings.append(f"{where}.default_assignee: {exc}; ignored")

    for key in ("max_in_progress", "max_in_progress_per_profile"):
        if key not in section:
            continue
        raw = section[key]
        if _is_int(raw) and raw > 0:
            values[key] = raw
        else:
            # Upstream's rule: anything but a positive integer means no cap, said once.
            values[key] = None
            warnings.append(f"{where}.{key}: {raw!r} is not a positive integer, so there is no cap")

    if "failure_limit" in section:
        raw = section["failure_limit"]
        if _is_int(raw) and raw >= 1:
            values["failure_limit"] = raw
        else:
            warnings.append(
                f"{where}.failure_limit: {raw!r} is not a positive integer; "
                f"using {defaults.failure_limit}"
            )

    for key in _SECONDS:
        if key not in section:
            continue
        raw = section[key]
        number = float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else None
        minimum = _MINIMUM_SECONDS.get(key, 0.0)
        if number is None or not math.isfinite(number) or number < minimum:
            warnings.append(
                f"{where}.{key}: {raw!r} is not a number of seconds >= {minimum:g}; "
                f"using {getattr(defaults, key):g}"
            )
            continue
        values[key] = number
    if values.get("retry_backoff_max_seconds", defaults.retry_backoff_max_seconds) < values.get(
        "retry_backoff_seconds", defaults.retry_backoff_seconds
    ):
        warnings.append(f"{where}.retry_backoff_max_seconds is below retry_backoff_seconds")
    return KanbanSettings(**values, warnings=tuple(warnings))


class SettingsFile:
    """The default profile's config.yaml, parsed again only when its bytes changed.

    The bytes, not the mtime: two saves within one clock tick of the file system (a
    few milliseconds on Linux) with the same size would look unchanged by mtime and
    size, and the second edit would be missed until the next one. Reading a small
    file costs microseconds; parsing YAML is what is worth skipping."""

    def __init__(self, home: HermesHome) -> None:
        self.path: Path = home.root / CONFIG_FILE
        self._content: bytes | None = None
        self._settings = KanbanSettings()

    def read(self) -> KanbanSettings:
        from hermes_container.config import load_yaml

        try:
            content = self.path.read_bytes()
        except FileNotFoundError:
            content = b""
        except OSError as exc:
            return KanbanSettings(warnings=(f"{self.path}: cannot be read ({exc}); defaults",))
        if content == self._content:
            return self._settings
        try:
            raw = load_yaml(self.path) if content else {}
        except ConfigError as exc:
            # Keep what worked last: a half-saved edit must not drop every cap.
            return KanbanSettings(
                **{k: getattr(self._settings, k) for k in _FIELDS},
                warnings=(f"{exc}; keeping the kanban settings read before",),
            )
        settings = parse(raw.get(SECTION), f"{self.path.name} {SECTION}")
        jobs, jobs_warnings = jobs_settings.parse(raw.get(jobs_settings.SECTION), self.path.name)
        self._settings = replace(settings, jobs=jobs, warnings=(*settings.warnings, *jobs_warnings))
        self._content = content
        return self._settings


_FIELDS = tuple(f for f in KanbanSettings.__dataclass_fields__ if f != "warnings")
_KNOWN = frozenset(_FIELDS) - {"jobs"}  # `jobs:` is a section of its own
