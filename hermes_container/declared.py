"""Declarative profiles: the YAML file HERMES_PROFILES_FILE names, parsed, planned, applied.

    prune: false                    # true: delete every named profile not listed here
    profiles:
      - name: coder
        base_url: https://api.example.com/v1
        model: gpt-4o-mini
        persona: |                  # or persona_file: coder.md (relative to this file)
          You write code.
        api_key_env: OPENAI_API_KEY # or api_key_file: /run/secrets/openai
        state: running              # or stopped
        config:                     # any other config.yaml key (config_schema)
          model.read_timeout_s: 60

Every field but `name` is optional: what is not listed is left as it is. The key never
sits in this file: `api_key_env` names a variable (its `_FILE` form works too) and
`api_key_file` a file, both read when the file is applied, into the profile's .env.

Three steps, each usable alone (`hermes profiles apply --dry-run` stops after two):

- `load`: read and check everything, the key sources and persona files included, before
  anything changes; any problem is one UsageError line naming the file and the profile;
- `make_plan`: compare with the home: what each profile would get (names of keys only);
- `apply`: create missing profiles (profiles.create_profile), set what differs
  (config_edit: comments kept, checked as the gateway checks; SOUL.md atomically),
  set desired states (events.desired), and with `prune: true` delete the profiles the
  file does not list, the way `profile delete` does. A profile whose change fails is
  reported and the others still apply. Nothing that is already as declared is written,
  so applying an unchanged file twice writes no file and records no event.

The boot reconciler calls `apply_at_boot` before it restores states: an invalid file
stops nothing, it is reported in container-boot.log, as a `profiles.rejected` event
and by `gateway status` (declared_result.py).
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hermes_container.config_schema import (
    FLOAT,
    INT,
    KEYS,
    PORT,
    check_key_chars,
    check_value,
    dig,
    leaves,
    lookup,
)
from hermes_container.errors import ConfigError, HermesError, UsageError
from hermes_container.fsutil import UnreadableText, read_small_text
from hermes_container.home import DEFAULT_PROFILE, ENV_FILE, SOUL_FILE, SOUL_MAX_BYTES, HermesHome
from hermes_container.names import validate_profile_name
from hermes_container.secret_env import file_variable, read_secret_file, secret_from_env

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from hermes_container.supervision.s6 import S6Manager

log = logging.getLogger("hermes.declared")

PROFILES_FILE_ENV = "HERMES_PROFILES_FILE"
MODEL_KEY_NAME = "HERMES_MODEL_API_KEY"
MAX_FILE = 1024 * 1024
STATES = ("running", "stopped")
TOP_FIELDS = ("profiles", "prune")
PROFILE_FIELDS = (
    "name",
    "base_url",
    "model",
    "persona",
    "persona_file",
    "api_key_env",
    "api_key_file",
    "state",
    "config",
)
# The fields that are config.yaml keys, and which.
FIELD_KEYS = {"base_url": "model.base_url", "model": "model.name"}
INLINE_KEY_FIELDS = ("api_key", "key", "model_api_key")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

CREATE, UPDATE, DELETE, KEEP = "create", "update", "delete", "keep"
SOUL_CHANGE = "soul"
KEY_CHANGE = f"env.{MODEL_KEY_NAME}"
DESIRED_CHANGE = "desired_state"


# -- the declaration -------------------------------------------------------------------


@dataclass(frozen=True)
class DeclaredProfile:
    name: str
    values: dict[str, Any]  # dotted config.yaml key -> value, checked
    soul: str | None = None
    state: str | None = None
    key_source: str | None = None  # "env NAME" / "file PATH": where the key was read
    api_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Declaration:
    path: Path
    profiles: list[DeclaredProfile]
    prune: bool = False

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.profiles]


def declared_path(env: Mapping[str, str] | None = None) -> Path | None:
    """The file HERMES_PROFILES_FILE names, or None when it is unset."""
    raw = (os.environ if env is None else env).get(PROFILES_FILE_ENV, "").strip()
    return Path(raw).expanduser().absolute() if raw else None


class _Problem(Exception):
    """One thing wrong with the file; `load` turns it into the UsageError line."""


def _unknown(kind: str, name: object, allowed: tuple[str, ...]) -> _Problem:
    close = difflib.get_close_matches(str(name), allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(allowed)})"
    return _Problem(f"unknown {kind} {str(name)[:60]!r}{hint}")


def load(path: Path, env: Mapping[str, str] | None = None) -> Declaration:
    """The declaration in `path`, every value checked and every key and persona file
    read; UsageError "<path>: [profile 'x': ]<problem>" on the first problem."""
    environ = os.environ if env is None else env
    where = str(path)
    try:
        data = _parse(_read_text(path))
        if not isinstance(data, dict):
            raise _Problem("expected a mapping with a `profiles:` list at the top level")
        for key in data:
            if key not in TOP_FIELDS:
                raise _unknown("top-level key", key, TOP_FIELDS)
        prune = data.get("prune", False)
        if not isinstance(prune, bool):
            raise _Problem(f"prune must be true or false, not {prune!r}")
        entries = data.get("profiles")
        if not isinstance(entries, list):
            raise _Problem("`profiles:` must be a list of profiles (- name: ...)")
    except _Problem as exc:
        raise UsageError(f"{where}: {exc}") from None
    profiles: list[DeclaredProfile] = []
    ports: dict[object, str] = {}
    for index, entry in enumerate(entries, 1):
        label = f"profiles entry {index}"
        try:
            if not isinstance(entry, dict):
                raise _Problem("must be a mapping (name: ..., model: ...)")
            name = entry.get("name")
            if not isinstance(name, str):
                raise _Problem("needs a `name:`")
            label = f"profile {name[:40]!r}"
            profile = _profile(entry, path.parent, environ)
            if profile.name in (p.name for p in profiles):
                raise _Problem("is listed twice")
            port = profile.values.get("gateway.port")
            if port is not None:
                if port in ports:
                    raise _Problem(f"gateway.port {port} is also declared for {ports[port]!r}")
                ports[port] = profile.name
        except (_Problem, HermesError) as exc:
            text = exc.message if isinstance(exc, HermesError) else str(exc)
            raise UsageError(f"{where}: {label}: {text}") from None
        profiles.append(profile)
    return Declaration(path, profiles, prune)


def _read_text(path: Path) -> str:
    try:
        return read_small_text(path, MAX_FILE)
    except UnreadableText as exc:
        raise _Problem(str(exc)) from None


def _parse(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise _Problem(f"malformed YAML{line}") from None


def _profile(entry: dict[Any, Any], base: Path, env: Mapping[str, str]) -> DeclaredProfile:
    for key in entry:
        if key in INLINE_KEY_FIELDS:
            raise _Problem(
                f"{key}: a key never goes in this file; name where it is with api_key_env "
                "(a variable) or api_key_file (a file)"
            )
        if key not in PROFILE_FIELDS:
            raise _unknown("field", key, PROFILE_FIELDS)
    name = validate_profile_name(entry["name"])
    values: dict[str, Any] = {}
    for fld, dotted in FIELD_KEYS.items():
        if fld in entry:
            values[dotted] = _checked(dotted, entry[fld], fld)
    config = entry.get("config")
    if config is not None:
        if not isinstance(config, dict):
            raise _Problem("config must be a mapping of config.yaml keys")
        for dotted, value in leaves(config):
            try:
                key = lookup(dotted, profile_is_default=name == DEFAULT_PROFILE)
            except ConfigError as exc:
                raise _Problem(f"config: {exc.message}") from None
            if key.secret:
                raise _Problem(
                    f"config: {dotted} is a secret: give api_key_env or api_key_file instead"
                )
            if dotted in values:
                field_name = next(f for f, k in FIELD_KEYS.items() if k == dotted)
                raise _Problem(f"config: {dotted} is already given as {field_name}")
            if value is None:
                raise _Problem(f"config: {dotted} needs a value")
            values[dotted] = _checked(dotted, value, f"config: {dotted}")
    state = entry.get("state")
    if state is not None and state not in STATES:
        raise _Problem(f"state must be running or stopped, not {state!r}")
    soul = _persona(entry, base)
    key_source, api_key = _model_key(entry, base, env)
    return DeclaredProfile(name, values, soul, state, key_source, api_key)


def _checked(dotted: str, value: object, label: str) -> Any:
    key = KEYS[dotted]
    try:
        normal = check_value(key, value)
    except ConfigError as exc:
        raise _Problem(exc.message.replace(dotted, label, 1)) from None
    # Numbers as written (5 stays 5, not 5.0): what `config set` would store.
    return value if key.kind in (INT, FLOAT, PORT) else normal


def _persona(entry: dict[Any, Any], base: Path) -> str | None:
    if "persona" in entry and "persona_file" in entry:
        raise _Problem("give persona or persona_file, not both")
    if "persona" in entry:
        text = entry["persona"]
        if not isinstance(text, str) or not text.strip():
            raise _Problem("persona must be non-empty text")
    elif "persona_file" in entry:
        path = _path(entry["persona_file"], "persona_file", base)
        try:
            text = read_small_text(path, SOUL_MAX_BYTES)
        except UnreadableText as exc:
            raise _Problem(f"persona_file {path}: {exc}") from None
        if not text.strip():
            raise _Problem(f"persona_file {path} is empty")
    else:
        return None
    return text if text.endswith("\n") else text + "\n"  # as `profile create` writes it


def _path(value: object, label: str, base: Path) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise _Problem(f"{label} must be a path")
    return base / Path(value.strip()).expanduser()  # an absolute path stays as it is


def _model_key(
    entry: dict[Any, Any], base: Path, env: Mapping[str, str]
) -> tuple[str | None, str | None]:
    if "api_key_env" in entry and "api_key_file" in entry:
        raise _Problem("give api_key_env or api_key_file, not both")
    if "api_key_env" in entry:
        variable = entry["api_key_env"]
        if not isinstance(variable, str) or not _VARIABLE.fullmatch(variable):
            raise _Problem(f"api_key_env must name an environment variable, not {variable!r}")
        try:
            key = secret_from_env(variable, env)
        except ConfigError as exc:
            raise _Problem(f"api_key_env: {exc.message}") from None
        if key is None:
            raise _Problem(f"api_key_env: {variable} is not set (nor {file_variable(variable)})")
        source = f"env {variable}"
    elif "api_key_file" in entry:
        path = _path(entry["api_key_file"], "api_key_file", base)
        try:
            key = read_secret_file("api_key_file", path).strip()
        except ConfigError as exc:
            raise _Problem(exc.message) from None
        source = f"file {path}"
    else:
        return None, None
    try:
        check_key_chars(key, f"the key from {source}")
    except ConfigError as exc:
        raise _Problem(exc.message) from None
    return source, key


# -- the plan ----------------------------------------------------------------------------


@dataclass
class ProfilePlan:
    """What applying the declaration does to one profile; `changes` names what is
    written (dotted config keys, `soul`, `env.HERMES_MODEL_API_KEY`, `desired_state`)."""

    name: str
    action: str  # create | update | delete | keep
    values: dict[str, Any] = field(default_factory=dict)
    soul: str | None = None
    api_key: str | None = field(default=None, repr=False)
    desired: str | None = None
    problem: str | None = None  # known before applying: this profile will fail

    @property
    def changes(self) -> list[str]:
        found = list(self.values)
        if self.soul is not None:
            found.append(SOUL_CHANGE)
        if self.api_key is not None:
            found.append(KEY_CHANGE)
        if self.desired is not None:
            found.append(f"{DESIRED_CHANGE}={self.desired}")
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "action": self.action,
            "changes": self.changes,
            "desired": self.desired,
            "problem": self.problem,
        }


@dataclass
class Plan:
    declaration: Declaration
    profiles: list[ProfilePlan]

    @property
    def changed(self) -> bool:
        return any(p.action != KEEP for p in self.profiles)


def _same(a: object, b: object) -> bool:
    """Equal as config values: 60 and 60.0 are (a number is a number), 1 and true not."""
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers):
        if isinstance(a, bool) or isinstance(b, bool):
            return type(a) is type(b) and a == b
        return a == b
    return type(a) is type(b) and a == b


def make_plan(home: HermesHome, declaration: Declaration) -> Plan:
    """Compare the declaration with the home. Reads only."""
    from hermes_container.profiles import list_profiles, profile_exists

    plans: list[ProfilePlan] = []
    declared = set(declaration.names)
    if declaration.prune:
        for name in list_profiles(home):
            if name != DEFAULT_PROFILE and name not in declared:
                plans.append(ProfilePlan(name, DELETE))
    for profile in declaration.profiles:
        if profile_exists(home, profile.name):
            plans.append(_update_plan(home, profile))
        else:
            plans.append(
                ProfilePlan(
                    profile.name,
                    CREATE,
                    dict(profile.values),
                    profile.soul,
                    profile.api_key,
                    profile.state,
                )
            )
    return Plan(declaration, plans)


def _update_plan(home: HermesHome, profile: DeclaredProfile) -> ProfilePlan:
    from hermes_container.config import load_config
    from hermes_container.envfile import read_env
    from hermes_container.state import read_state

    directory = home.profile_dir(profile.name)
    plan = ProfilePlan(profile.name, KEEP)
    try:
        raw = load_config(directory).raw
    except HermesError as exc:
        raw = {}
        plan.problem = exc.message
    for dotted, value in profile.values.items():
        present, current = dig(raw, dotted)
        if not present or not _same(current, value):
            plan.values[dotted] = value
    if profile.soul is not None and _read_soul(directory) != profile.soul:
        plan.soul = profile.soul
    if profile.api_key is not None:
        dotenv = read_env(directory / ENV_FILE)
        if dotenv.get(MODEL_KEY_NAME, "").strip() != profile.api_key:
            plan.api_key = profile.api_key
        if dotenv.get(file_variable(MODEL_KEY_NAME), "").strip():
            plan.problem = (
                f"its .env sets {file_variable(MODEL_KEY_NAME)}, which the declared key "
                f"would clash with: remove it from {directory / ENV_FILE}"
            )
    desired_now = read_state(directory, warn=False).desired_state
    if profile.state is not None and desired_now != profile.state:
        plan.desired = profile.state
    if plan.changes or plan.problem:
        plan.action = UPDATE
    return plan


def _read_soul(directory: Path) -> str | None:
    try:
        return (directory / SOUL_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


# -- applying ----------------------------------------------------------------------------


@dataclass
class ApplyResult:
    created: list[str] = field(default_factory=list)
    updated: dict[str, list[str]] = field(default_factory=dict)  # name -> what changed
    deleted: list[str] = field(default_factory=list)
    desired: dict[str, str] = field(default_factory=dict)
    reloaded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # e.g. a change that needs a restart

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted or self.desired)

    def event_data(self, path: Path) -> dict[str, Any]:
        """For the ledger: names of profiles and keys, never a value."""
        return {
            "file": str(path),
            "created": self.created,
            "updated": self.updated,
            "deleted": self.deleted,
            "desired": self.desired,
            "reloaded": self.reloaded,
            "failed": self.failed,
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.event_data(Path()), "notes": self.notes, "changed": self.changed}


def apply(
    home: HermesHome, plan: Plan, *, manager: S6Manager | None = None, boot: bool = False
) -> ApplyResult:
    """Carry out `plan`. With a live tree (`manager`), deleted profiles lose their slot
    first, and a running gateway whose settings changed is reloaded; outside boot
    (`boot` False: the reconciler registers and starts by itself afterwards) new
    profiles get their slot and desired states are acted on at once."""
    from hermes_container.profiles import ensure_default_profile

    result = ApplyResult()
    if plan.changed:
        ensure_default_profile(home)  # the home itself may be new (`profiles apply`)
    for item in plan.profiles:
        if item.action == KEEP:
            continue
        try:
            if item.problem is not None:
                raise HermesError(item.problem)
            if item.action == DELETE:
                _delete(home, item.name, manager)
                result.deleted.append(item.name)
            elif item.action == CREATE:
                _create(home, item, manager, boot, result)
            else:
                _update(home, item, manager, boot, result)
        except (HermesError, OSError) as exc:
            reason = exc.message if isinstance(exc, HermesError) else str(exc)
            result.failed[item.name] = reason
            log.error("profiles file: profile %s not applied: %s", item.name, reason)
    return result


def _delete(home: HermesHome, name: str, manager: S6Manager | None) -> None:
    from hermes_container.supervision.profile_slots import remove

    remove(home, manager, name)  # as `hermes profile delete`: the slot first, then the files


def _create(
    home: HermesHome,
    item: ProfilePlan,
    manager: S6Manager | None,
    boot: bool,
    result: ApplyResult,
) -> None:
    from hermes_container.config_edit import set_values
    from hermes_container.profiles import create_profile

    rest = dict(item.values)
    create_profile(
        home,
        item.name,
        base_url=rest.pop("model.base_url", None),
        model=rest.pop("model.name", None),
        model_api_key=item.api_key,
        soul=item.soul,
    )
    result.created.append(item.name)
    if rest:
        set_values(home, item.name, rest)
    if manager is not None and not boot:
        error = manager.register([item.name])[item.name]
        if error is not None:
            raise HermesError(error)
    if item.desired is not None:
        _set_desired(home, item.name, item.desired, manager, boot)
        result.desired[item.name] = item.desired


def _update(
    home: HermesHome,
    item: ProfilePlan,
    manager: S6Manager | None,
    boot: bool,
    result: ApplyResult,
) -> None:
    from hermes_container.config_edit import set_values
    from hermes_container.fsutil import atomic_write_text

    changed: list[str] = []
    needs_reload = False
    if item.values or item.api_key is not None:
        secrets = {MODEL_KEY_NAME: item.api_key} if item.api_key is not None else None
        change = set_values(home, item.name, item.values, secrets=secrets)
        changed += change.changed
        needs_reload = change.reload
        for key in change.restart:
            result.notes.append(f"{item.name}: {key} takes effect after a gateway restart")
    if item.soul is not None:
        path = home.profile_dir(item.name) / SOUL_FILE
        try:
            mode = os.lstat(path).st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o600
        atomic_write_text(path, item.soul, mode)
        changed.append(SOUL_CHANGE)
        needs_reload = True
    if changed:
        result.updated[item.name] = changed
    # Before the desired state is acted on: a gateway serving now gets the new settings
    # by a reload; one that is down reads them when it starts.
    if needs_reload and manager is not None and item.desired != "stopped":
        _reload_if_live(home, item.name, manager, result)
    if item.desired is not None:
        _set_desired(home, item.name, item.desired, manager, boot)
        result.desired[item.name] = item.desired


def _set_desired(
    home: HermesHome, name: str, desired: str, manager: S6Manager | None, boot: bool
) -> None:
    """Record the desired state, and in a live tree act on it: stop at once; start at
    once too, except at boot, where the reconciler starts every running profile next."""
    from hermes_container.events.desired import set_desired

    if manager is not None and desired == "stopped" and manager.is_registered(name):
        manager.stop(name)  # records the desired state itself
    elif manager is not None and desired == "running" and not boot:
        manager.start(name)  # the same, and registers the slot if it has none
    else:
        set_desired(home, name, desired)


def _reload_if_live(home: HermesHome, name: str, manager: S6Manager, result: ApplyResult) -> None:
    from hermes_container.supervision.reload import reload_and_wait

    status = manager.status(name)
    if not (status.up and status.ready):
        return  # not serving: it reads the new files when it starts
    answer = reload_and_wait(home, name)
    if answer.applied:
        result.reloaded.append(name)
    else:
        result.notes.append(f"{name}: {answer.detail}")


# -- reporting ---------------------------------------------------------------------------


def record_applied(home: HermesHome, path: Path, result: ApplyResult) -> None:
    """The ledger event and the status file of an applied declaration. An apply that
    changed nothing and failed nowhere records no event."""
    from hermes_container.declared_result import APPLIED, save_result
    from hermes_container.events.append import record

    if result.changed or result.failed:
        record(home.root, "profiles.applied", data=result.event_data(path))
    save_result(home, str(path), APPLIED, failed=result.failed)


def record_rejected(home: HermesHome, path: Path, reason: str) -> None:
    from hermes_container.declared_result import REJECTED, save_result
    from hermes_container.events.append import record

    record(home.root, "profiles.rejected", data={"file": str(path), "reason": reason})
    save_result(home, str(path), REJECTED, reason=reason)


def apply_at_boot(
    home: HermesHome, manager: S6Manager | None, env: Mapping[str, str] | None = None
) -> str | None:
    """The reconciler's step: apply HERMES_PROFILES_FILE if set. Never raises for the
    file's sake: a rejected file is logged, recorded and reported, and boot goes on.
    Returns the boot log's line about it (None without a file)."""
    from hermes_container.declared_result import clear_result

    path = declared_path(env)
    if path is None:
        clear_result(home)
        return None
    head = f"profiles_file={path}"
    try:
        declaration = load(path, env)
    except HermesError as exc:
        log.error("profiles file rejected, nothing applied: %s", exc.message)
        record_rejected(home, path, exc.message)
        return f"{head} result=rejected reason={exc.message}"
    result = apply(home, make_plan(home, declaration), manager=manager, boot=True)
    record_applied(home, path, result)
    return f"{head} {boot_summary(result)}"


def boot_summary(result: ApplyResult) -> str:
    """The boot log's words for an apply: `result=applied created=a,b updated=- ...`."""

    def names(items: Iterable[str]) -> str:
        return ",".join(items) or "-"

    outcome = "failed" if result.failed else ("applied" if result.changed else "unchanged")
    desired = ",".join(f"{k}:{v}" for k, v in result.desired.items()) or "-"
    parts = [
        f"result={outcome}",
        f"created={names(result.created)}",
        f"updated={names(result.updated)}",
        f"deleted={names(result.deleted)}",
        f"desired={desired}",
        f"reloaded={names(result.reloaded)}",
    ]
    if result.failed:
        first, reason = next(iter(result.failed.items()))
        parts.append(f"failed={names(result.failed)} reason={first}: {reason}")
    return " ".join(parts)


__all__ = [
    "PROFILES_FILE_ENV",
    "ApplyResult",
    "Declaration",
    "DeclaredProfile",
    "Plan",
    "ProfilePlan",
    "apply",
    "apply_at_boot",
    "declared_path",
    "load",
    "make_plan",
    "record_applied",
    "record_rejected",
]
