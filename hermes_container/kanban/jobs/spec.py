"""What a job is: its name, its steps (profile + prompt), its schedule and its policies.

One validated value built from CLI options, a YAML file (`jobs add --file`) or the stored
JSON, with every rule in `check`, so the CLI, the dashboard and the store refuse the
same things with the same one-line message.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from hermes_container.errors import UsageError
from hermes_container.kanban.jobs.schedule import AT, CRON, EVERY, Schedule
from hermes_container.names import validate_profile_name

OVERLAP = ("skip", "queue")
CATCHUP = ("none", "latest", "all")
CATCHUP_ALL_LIMIT = 100  # catchup: all runs at most this many missed slots
MAX_STEPS = 20
MAX_PROMPT = 32_000
MAX_RETRIES = 100
MAX_DELAY_SECONDS = 7 * 86400.0
MAX_TIMEOUT_SECONDS = 86400.0
MAX_URL = 2000


@dataclass(frozen=True, slots=True)
class Step:
    profile: str
    prompt: str


@dataclass(frozen=True, slots=True)
class JobSpec:
    name: str
    steps: tuple[Step, ...]
    schedule: Schedule
    board: str = "default"
    max_retries: int = 3
    retry_delay: float = 30.0
    retry_max_delay: float = 600.0
    timeout: float | None = None  # seconds per attempt; None: kanban's request timeout
    overlap: str = "skip"
    catchup: str = "latest"
    deliver: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def check(self) -> JobSpec:
        validate_job_name(self.name)
        if not 1 <= len(self.steps) <= MAX_STEPS:
            raise UsageError(f"a job has 1 to {MAX_STEPS} steps, not {len(self.steps)}")
        for step in self.steps:
            validate_profile_name(step.profile)
            if not step.prompt.strip():
                raise UsageError(f"the step for {step.profile!r} has an empty prompt")
            if len(step.prompt) > MAX_PROMPT:
                raise UsageError(f"a step's prompt is at most {MAX_PROMPT} characters")
        self.schedule.check()
        if not 0 <= self.max_retries <= MAX_RETRIES:
            raise UsageError(f"--max-retries must be between 0 and {MAX_RETRIES}")
        _delay(self.retry_delay, "--retry-delay")
        _delay(self.retry_max_delay, "--retry-max-delay")
        if self.retry_max_delay < self.retry_delay:
            raise UsageError("--retry-max-delay must not be shorter than --retry-delay")
        if self.timeout is not None and not (
            math.isfinite(self.timeout) and 1.0 <= self.timeout <= MAX_TIMEOUT_SECONDS
        ):
            raise UsageError("--timeout must be between 1s and 1d")
        if self.overlap not in OVERLAP:
            raise UsageError(f"--overlap must be one of {', '.join(OVERLAP)}")
        if self.catchup not in CATCHUP:
            raise UsageError(f"--catchup must be one of {', '.join(CATCHUP)}")
        if self.deliver is not None:
            check_url(self.deliver)
        return self

    @property
    def profiles(self) -> list[str]:
        return list(dict.fromkeys(step.profile for step in self.steps))

    def to_json(self) -> dict[str, Any]:
        sched = self.schedule
        return {
            "name": self.name,
            "board": self.board,
            "steps": [{"profile": s.profile, "prompt": s.prompt} for s in self.steps],
            "schedule": {
                "kind": sched.kind,
                "cron": sched.cron,
                "every": sched.every,
                "at": sched.at,
                "timezone": sched.timezone,
            },
            "max_retries": self.max_retries,
            "retry_delay": self.retry_delay,
            "retry_max_delay": self.retry_max_delay,
            "timeout": self.timeout,
            "overlap": self.overlap,
            "catchup": self.catchup,
            "deliver": self.deliver,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> JobSpec:
        """The stored form back (written by to_json; not re-checked: it was at add)."""
        sched = obj["schedule"]
        return cls(
            name=obj["name"],
            board=obj.get("board", "default"),
            steps=tuple(Step(s["profile"], s["prompt"]) for s in obj["steps"]),
            schedule=Schedule(
                kind=sched["kind"],
                cron=sched.get("cron"),
                every=sched.get("every"),
                at=sched.get("at"),
                timezone=sched.get("timezone") or "UTC",
            ),
            max_retries=int(obj["max_retries"]),
            retry_delay=float(obj["retry_delay"]),
            retry_max_delay=float(obj["retry_max_delay"]),
            timeout=None if obj.get("timeout") is None else float(obj["timeout"]),
            overlap=obj["overlap"],
            catchup=obj["catchup"],
            deliver=obj.get("deliver"),
        )

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)


def validate_job_name(name: object) -> str:
    """Job names follow the profile name rules (they name a directory and a key)."""
    if not isinstance(name, str):
        raise UsageError("a job name must be text")
    try:
        return validate_profile_name(name)
    except UsageError as exc:
        raise UsageError(str(exc).replace("invalid profile name", "invalid job name")) from None


def _delay(value: float, option: str) -> None:
    if not (math.isfinite(value) and 1.0 <= value <= MAX_DELAY_SECONDS):
        raise UsageError(f"{option} must be between 1s and 7d")


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > MAX_URL:
        raise UsageError(f"--deliver must be an http or https URL, not {url[:80]!r}")
    return url


def duration(text: object, option: str) -> float:
    """A duration option (`90s`, `5m`, `1h30m`) or a number of seconds from YAML."""
    from hermes_container.timeutil import duration_seconds

    if isinstance(text, bool):
        raise UsageError(f"{option}: expected a duration such as 90s or 5m")
    if isinstance(text, int | float):
        seconds: float | None = float(text)
    else:
        seconds = duration_seconds(str(text))
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise UsageError(f"{option} {text!r}: expected a duration such as 90s, 5m or 1h30m")
    return seconds


def parse_step(text: str) -> Step:
    """`PROFILE:PROMPT` from `--step`."""
    profile, sep, prompt = text.partition(":")
    if not sep:
        raise UsageError(f"--step {text[:40]!r}: expected PROFILE:PROMPT")
    return Step(validate_profile_name(profile.strip()), prompt.strip())


def schedule_from(
    *, cron: str | None, every: object, at: str | None, timezone: str | None
) -> Schedule:
    chosen = [name for name, value in (("cron", cron), ("every", every), ("at", at)) if value]
    if len(chosen) != 1:
        raise UsageError("give exactly one schedule: --cron EXPR, --every DURATION or --at TIME")
    zone_name = (timezone or "UTC").strip() or "UTC"
    if cron:
        return Schedule(CRON, cron=" ".join(cron.split()), timezone=zone_name).check()
    if every:
        return Schedule(EVERY, every=duration(every, "--every"), timezone=zone_name).check()
    from hermes_container.kanban.jobs.schedule import zone
    from hermes_container.timeutil import parse_iso

    assert at is not None
    moment = parse_iso(str(at))
    if moment is None:
        raise UsageError(f"--at {at!r}: expected an ISO time such as 2026-12-03T03:00:00Z")
    if parse_naive(str(at)):  # no offset given: the job's zone (UTC unless --timezone)
        moment = moment.replace(tzinfo=zone(zone_name))
    return Schedule(AT, at=moment.timestamp(), timezone=zone_name).check()


def parse_naive(text: str) -> bool:
    """Whether an ISO time names no offset (then --timezone says where it is)."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00")).tzinfo is None
    except ValueError:
        return False


def from_mapping(obj: Any, where: str) -> JobSpec:
    """A job from a YAML document (`jobs add --file`): the CLI's options as keys."""
    if not isinstance(obj, dict):
        raise UsageError(f"{where}: expected a mapping of job settings")
    known = {
        "name", "board", "profile", "prompt", "steps", "cron", "every", "at", "timezone",
        "max_retries", "retry_delay", "retry_max_delay", "timeout", "overlap", "catchup",
        "deliver",
    }  # fmt: skip
    unknown = sorted(set(obj) - known)
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}")
    steps_in = obj.get("steps")
    if steps_in is not None:
        if not isinstance(steps_in, list) or not all(isinstance(s, dict) for s in steps_in):
            raise UsageError(f"{where}: steps must be a list of {{profile, prompt}} mappings")
        steps = tuple(
            Step(str(s.get("profile") or ""), str(s.get("prompt") or "")) for s in steps_in
        )
        if obj.get("profile") or obj.get("prompt"):
            raise UsageError(f"{where}: give either profile + prompt or steps, not both")
    else:
        steps = (Step(str(obj.get("profile") or ""), str(obj.get("prompt") or "")),)
    return build(
        name=obj.get("name"),
        steps=steps,
        cron=obj.get("cron"),
        every=obj.get("every"),
        at=obj.get("at"),
        timezone=obj.get("timezone"),
        board=obj.get("board"),
        max_retries=obj.get("max_retries"),
        retry_delay=obj.get("retry_delay"),
        retry_max_delay=obj.get("retry_max_delay"),
        timeout=obj.get("timeout"),
        overlap=obj.get("overlap"),
        catchup=obj.get("catchup"),
        deliver=obj.get("deliver"),
    )


def build(
    *,
    name: object,
    steps: tuple[Step, ...],
    cron: object = None,
    every: object = None,
    at: object = None,
    timezone: object = None,
    board: object = None,
    max_retries: object = None,
    retry_delay: object = None,
    retry_max_delay: object = None,
    timeout: object = None,
    overlap: object = None,
    catchup: object = None,
    deliver: object = None,
) -> JobSpec:
    """A checked JobSpec from loosely typed input (CLI strings, YAML values, JSON)."""
    spec = JobSpec(
        name=validate_job_name(name),
        steps=steps,
        schedule=schedule_from(
            cron=None if cron is None else str(cron),
            every=every,
            at=None if at is None else str(at),
            timezone=None if timezone is None else str(timezone),
        ),
    )
    changes: dict[str, Any] = {}
    if board is not None:
        changes["board"] = str(board)
    if max_retries is not None:
        if isinstance(max_retries, bool) or not str(max_retries).strip().isdigit():
            raise UsageError(f"--max-retries {max_retries!r}: expected a whole number")
        changes["max_retries"] = int(str(max_retries).strip())
    if retry_delay is not None:
        changes["retry_delay"] = duration(retry_delay, "--retry-delay")
        if retry_max_delay is None:
            changes["retry_max_delay"] = max(spec.retry_max_delay, changes["retry_delay"])
    if retry_max_delay is not None:
        changes["retry_max_delay"] = duration(retry_max_delay, "--retry-max-delay")
    if timeout is not None:
        changes["timeout"] = duration(timeout, "--timeout")
    if overlap is not None:
        changes["overlap"] = str(overlap)
    if catchup is not None:
        changes["catchup"] = str(catchup)
    if deliver is not None and str(deliver).strip():
        changes["deliver"] = str(deliver).strip()
    return replace(spec, **changes).check()
