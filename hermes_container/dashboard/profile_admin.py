"""What the dashboard's profile management does, without HTTP (profiles_api.py serves it):
create a profile, list a provider's models, delete a profile, edit its settings and
persona with a diff before saving, rotate its gateway key, and the client snippets.

Every change goes through the library the CLI uses: profiles.create_profile /
delete_profile, config_edit (comments kept, validated as the gateway validates, atomic),
profile_keys.rotate_api_key, supervision.reload.reload_gateway. Bad input is reported
per field, one line each, before anything is written. Nothing returned here carries a
secret, except the key `rotate` hands back for the page to show once.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hermes_container.config_schema import (
    EVERY_PROFILE,
    KEYS,
    PROXY,
    URL,
    Key,
    check_key_chars,
    check_value,
    dig,
    display,
    keys_for,
    mask_userinfo,
    parse_text,
)
from hermes_container.errors import ConfigError, HermesError, UsageError
from hermes_container.home import (
    CONFIG_FILE,
    DEFAULT_PROFILE,
    SOUL_FILE,
    SOUL_MAX_BYTES,
    HermesHome,
)
from hermes_container.names import validate_profile_name
from hermes_container.supervision.profile_slots import bring_up, remove
from hermes_container.supervision.protocol import ServiceManager
from hermes_container.supervision.reload import ReloadAnswer, reload_and_wait

MAX_FIELD_CHARS = 2_000  # a name, a URL, a model: anything longer is a paste gone wrong
MAX_ERROR_CHARS = 300
PERSONA_FIELD = "persona"


class FieldErrors(Exception):
    """Bad input: one line per form field (`fields`), nothing written."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__(next(iter(fields.values())))
        self.fields = fields


class Stale(Exception):
    """The file changed since the form was loaded (another tab, the CLI): refused."""


def one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def _text(data: Mapping[str, Any], name: str, errors: dict[str, str]) -> str:
    """Field `name` of a JSON form as text (missing: empty); a non-string is an error."""
    value = data.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        errors[name] = f"{name} must be text"
        return ""
    if len(value) > MAX_FIELD_CHARS:
        errors[name] = f"{name} is longer than {MAX_FIELD_CHARS} characters"
        return ""
    return value.strip()


def _persona(value: object, errors: dict[str, str]) -> str | None:
    """SOUL.md text from a textarea (None when not given): the browser's line ends made
    Unix ones, ending in a newline as a file should."""
    if value is None:
        return None
    if not isinstance(value, str):
        errors[PERSONA_FIELD] = "the persona must be text"
        return None
    text = value.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        errors[PERSONA_FIELD] = "the persona is empty: write at least one line"
        return None
    if len(text.encode("utf-8", "replace")) > SOUL_MAX_BYTES:
        errors[PERSONA_FIELD] = f"the persona is larger than {SOUL_MAX_BYTES} bytes"
        return None
    if "\x00" in text:
        errors[PERSONA_FIELD] = "the persona contains a NUL character"
        return None
    return text if text.endswith("\n") else text + "\n"


# -- the provider's models ---------------------------------------------------------------


def provider_models(base_url: str, api_key: str | None) -> list[str]:
    """The model ids `GET <base_url>/models` lists (maybe none), asked from here with the
    key the form holds; FieldErrors for a bad URL or key, HermesError when the provider
    cannot be reached or refuses (its message never carries the key)."""
    from hermes_container.provider import list_models

    errors: dict[str, str] = {}
    try:
        url = check_value(KEYS["model.base_url"], base_url)
    except ConfigError as exc:
        errors["base_url"] = one_line(exc.message)
    if api_key:
        try:
            check_key_chars(api_key, "the provider's API key")
        except ConfigError as exc:
            errors["api_key"] = exc.message
    if errors:
        raise FieldErrors(errors)
    return list_models(url, api_key or None)


def stored_model_key(home: HermesHome, profile: str) -> str | None:
    """The provider key a profile already has in its .env (for listing models from its
    page without typing the key again); None when it has none."""
    from hermes_container.envfile import read_env
    from hermes_container.home import ENV_FILE
    from hermes_container.profiles import require_profile
    from hermes_container.secret_env import secret_from_env

    profile_dir = require_profile(home, profile)
    try:  # the gateway's own rule: the key, or the file HERMES_MODEL_API_KEY_FILE names
        return secret_from_env(
            "HERMES_MODEL_API_KEY", read_env(profile_dir / ENV_FILE), base=profile_dir
        )
    except ConfigError:
        return None


# -- creating ----------------------------------------------------------------------------


@dataclass(frozen=True)
class NewProfile:
    name: str
    base_url: str
    model: str
    api_key: str | None  # the provider's key, into .env; never shown again
    persona: str | None  # None: the default persona
    start: bool


def parse_new_profile(home: HermesHome, data: Mapping[str, Any]) -> NewProfile:
    """The create form, every field checked (FieldErrors lists each bad one)."""
    from hermes_container.profiles import profile_exists

    errors: dict[str, str] = {}
    name = _text(data, "name", errors)
    if "name" not in errors:
        try:
            validate_profile_name(name)
            if profile_exists(home, name):
                errors["name"] = f"profile {name!r} already exists"
        except UsageError as exc:
            errors["name"] = exc.message
    values: dict[str, str] = {}
    for field_name, key in (("base_url", "model.base_url"), ("model", "model.name")):
        text = _text(data, field_name, errors)
        if field_name in errors:
            continue
        if not text:
            errors[field_name] = f"{key} is required"
            continue
        try:
            values[field_name] = check_value(KEYS[key], text)
        except ConfigError as exc:
            errors[field_name] = one_line(exc.message)
    api_key = _text(data, "api_key", errors) or None
    if api_key is not None:
        try:
            check_key_chars(api_key, "the provider's API key")
        except ConfigError as exc:
            errors["api_key"] = exc.message
    raw_persona = data.get(PERSONA_FIELD)
    blank = isinstance(raw_persona, str) and not raw_persona.strip()
    persona = None if blank else _persona(raw_persona, errors)
    start = data.get("start", False)
    if not isinstance(start, bool):
        errors["start"] = "start must be true or false"
    if errors:
        raise FieldErrors(errors)
    return NewProfile(name, values["base_url"], values["model"], api_key, persona, start is True)


@dataclass(frozen=True)
class Created:
    name: str
    port: int | None
    started: bool
    detail: str  # one line for the page: running, registered, or why not


def create(home: HermesHome, manager: ServiceManager | None, new: NewProfile) -> Created:
    """`hermes profile create NAME --base-url --model --api-key-stdin --persona-file
    [--start]`, as the CLI does it: the files, then the slot (started or down)."""
    from hermes_container.config import read_port
    from hermes_container.profiles import create_profile

    try:
        path = create_profile(
            home,
            new.name,
            base_url=new.base_url,
            model=new.model,
            model_api_key=new.api_key,
            soul=new.persona,
        )
    except UsageError as exc:
        raise FieldErrors({"name": exc.message}) from None
    try:
        port = read_port(path)
    except HermesError:
        port = None
    up = bring_up(home, manager, new.name, start=new.start)
    detail = {
        "files_only": "created; no supervisor runs to start it",
        "deferred": "created; no supervisor is running, so its gateway starts with the next "
        "`hermes supervise` or container start",
        "registered": "created; its gateway is stopped",
        "running": f"running on port {up.port}",
        "register_failed": f"created, but its slot failed: {up.problem}",
        "start_failed": f"created, but it did not start: {up.problem}",
        "not_ready": f"created, but not ready yet: {up.problem or 'see its gateway log'}",
    }[up.outcome]
    return Created(new.name, up.port or port, up.running, detail)


# -- deleting ----------------------------------------------------------------------------


def check_delete(name: str, confirm: object) -> None:
    """The name typed to confirm must be the profile's, exactly (FieldErrors)."""
    if name == DEFAULT_PROFILE:
        raise FieldErrors({"confirm": "the 'default' profile cannot be deleted"})
    if not isinstance(confirm, str) or confirm != name:
        raise FieldErrors({"confirm": f"type the profile's name, {name!r}, to confirm"})


def delete(home: HermesHome, manager: ServiceManager | None, name: str) -> None:
    """`hermes profile delete NAME --yes`: its slot down and gone, then its files."""
    remove(home, manager, name)


# -- the settings form -------------------------------------------------------------------


def editable_keys(profile: str) -> list[Key]:
    """What the settings form offers: the keys the profile's gateway reads, without the
    secrets (.env holds those) and the proxy (its URL may carry a password): `hermes
    config set` covers the rest."""
    return [
        key
        for key in keys_for(profile == DEFAULT_PROFILE)
        if key.scope == EVERY_PROFILE and not key.secret and key.kind != PROXY
    ]


def version(data: bytes) -> str:
    """What a form sends back to prove it saw the file as it is now."""
    return hashlib.sha256(data).hexdigest()


def _read(path: Path) -> bytes:
    """The file's bytes (b"" when missing), never through a symlink."""
    from hermes_container.config_edit import read_config_bytes

    return read_config_bytes(path)


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{name} is not UTF-8 text; fix it with `hermes config edit`") from None


def _shown(key: Key, present: bool, value: object) -> str:
    """A value in the form: as the file has it (a URL's password masked); "" if unset."""
    if not present or value is None:
        return ""
    if isinstance(value, str):
        return mask_userinfo(value) if key.kind == URL else value
    return str(value)


def _default_text(key: Key) -> str | None:
    return None if key.default is None else display(key, key.default)


def settings_form(home: HermesHome, profile: str) -> dict[str, Any]:
    """The form's fields (value, default, what is expected), the persona, and the
    versions of both files that a review and a save must send back."""
    from hermes_container.config_edit import parse_config_text
    from hermes_container.profiles import require_profile

    profile_dir = require_profile(home, profile)
    config_bytes = _read(profile_dir / CONFIG_FILE)
    soul_bytes = _read(profile_dir / SOUL_FILE)
    text = _decode(config_bytes, CONFIG_FILE)
    raw = parse_config_text(text, CONFIG_FILE) if text.strip() else {}
    fields = []
    for key in editable_keys(profile):
        present, value = dig(raw, key.name)
        fields.append(
            {
                "key": key.name,
                "value": _shown(key, present, value),
                "default": _default_text(key),
                "expects": key.expects(),
                "help": key.help,
                "choices": list(key.choices) or None,
                "required": key.required,
                "restart": key.restart,
            }
        )
    return {
        "profile": profile,
        "fields": fields,
        "persona": _decode(soul_bytes, SOUL_FILE),
        "config_version": version(config_bytes),
        "persona_version": version(soul_bytes),
    }


# -- reviewing and saving an edit --------------------------------------------------------

# userinfo in a URL (`scheme://user:password@`): the password becomes ***.
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/@\s:]*):[^/@\s]*@")
_SECRET_LEAVES = "|".join(sorted({re.escape(k.leaf) for k in KEYS.values() if k.secret}))
_SECRET_LINE = re.compile(rf"^([-+ ]\s*(?:{_SECRET_LEAVES})\s*:).*$")


def _redact(line: str) -> str:
    """A diff line as it may be shown: a secret key's value and a URL's password hidden
    (an old file may hold model.api_key, or a proxy with a password, beside the change)."""
    end = "\n" if line.endswith("\n") else ""
    body = _SECRET_LINE.sub(r"\1 ***", line.rstrip("\n"))
    return _USERINFO.sub(r"\1:***@", body) + end


def unified_diff(before: str, after: str, name: str) -> str:
    lines = difflib.unified_diff(
        before.splitlines(keepends=True),
        after.splitlines(keepends=True),
        fromfile=f"{name} (now)",
        tofile=f"{name} (after saving)",
    )
    out = []
    for line in lines:
        if not line.endswith("\n"):
            line += "\n\\ No newline at end of file\n"
        out.append(_redact(line) if line[:1] in "+- " else line)
    return "".join(out)


@dataclass
class EditPlan:
    """An edit checked against the files as they are: what a save would write."""

    profile: str
    config_before: bytes
    config_after: str | None  # None: config.yaml unchanged
    persona_before: bytes
    persona_after: str | None  # None: SOUL.md unchanged
    changed: list[str] = field(default_factory=list)  # dotted keys, then SOUL.md
    restart: list[str] = field(default_factory=list)  # changed keys that need a restart
    config_diff: str = ""
    persona_diff: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "changed": self.changed,
            "restart": self.restart,
            "config_diff": self.config_diff,
            "persona_diff": self.persona_diff,
        }


def _stale_check(shown: object, data: bytes, name: str) -> None:
    if not isinstance(shown, str) or shown != version(data):
        raise Stale(
            f"{name} has changed since this form was loaded (another tab, the CLI or an "
            "editor); nothing was saved: reload the page to see it as it is now"
        )


def _edited_values(
    profile: str, raw: Mapping[str, Any], values: object, errors: dict[str, str]
) -> dict[str, object]:
    """The typed values of the keys whose text differs from what the form showed."""
    if values is None:
        return {}
    if not isinstance(values, dict):
        errors["values"] = "values must be an object of key: text"
        return {}
    offered = {key.name: key for key in editable_keys(profile)}
    changes: dict[str, object] = {}
    for name, text in values.items():
        key = offered.get(name)
        if key is None:
            errors[str(name)[:60]] = f"{str(name)[:60]!r} is not a setting this form edits"
            continue
        if not isinstance(text, str):
            errors[name] = f"{name} must be text"
            continue
        present, current = dig(raw, name)
        text = text.strip()
        if text == _shown(key, present, current):
            continue  # as shown: untouched, whatever form the file has it in
        if not text:
            default = _default_text(key)
            hint = f" (its default is {default})" if default is not None else ""
            errors[name] = f"{name} cannot be left empty here; type a value{hint}"
            continue
        try:
            typed = parse_text(key, text)
        except ConfigError as exc:
            errors[name] = one_line(exc.message)
            continue
        if not (present and type(typed) is type(current) and typed == current):
            changes[name] = typed
    return changes


def plan_edit(home: HermesHome, profile: str, body: Mapping[str, Any]) -> EditPlan:
    """Check an edit (`values`: key -> text, `persona`: SOUL.md text, and the versions the
    form was loaded with) against the files now: Stale, FieldErrors, or the plan with
    its diffs. Nothing is written."""
    from hermes_container.config_edit import edited_text, parse_config_text, validate
    from hermes_container.profiles import require_profile

    profile_dir = require_profile(home, profile)
    config_before = _read(profile_dir / CONFIG_FILE)
    persona_before = _read(profile_dir / SOUL_FILE)
    _stale_check(body.get("config_version"), config_before, CONFIG_FILE)
    _stale_check(body.get("persona_version"), persona_before, SOUL_FILE)
    text = _decode(config_before, CONFIG_FILE)
    before = parse_config_text(text, CONFIG_FILE) if text.strip() else {}
    errors: dict[str, str] = {}
    changes = _edited_values(profile, before, body.get("values"), errors)
    persona = _persona(body.get(PERSONA_FIELD), errors)
    if errors:
        raise FieldErrors(errors)
    plan = EditPlan(profile, config_before, None, persona_before, None)
    if changes:
        new_text = edited_text(text, changes, CONFIG_FILE)
        after = parse_config_text(new_text, CONFIG_FILE)
        try:
            validate(profile, profile_dir, after, before)
        except ConfigError as exc:
            raise FieldErrors(_blame(exc.message, list(changes))) from None
        plan.config_after = new_text
        plan.changed = sorted(changes)
        plan.restart = [name for name in plan.changed if KEYS[name].restart]
        plan.config_diff = unified_diff(text, new_text, CONFIG_FILE)
    persona_text = _decode(persona_before, SOUL_FILE)
    if persona is not None and persona != persona_text:
        plan.persona_after = persona
        plan.changed.append(SOUL_FILE)
        plan.persona_diff = unified_diff(persona_text, persona, SOUL_FILE)
    return plan


def _blame(message: str, changed: list[str]) -> dict[str, str]:
    """A whole-file complaint, put on the field it names (else on the form)."""
    named = next((name for name in changed if name in message), "form")
    return {named: one_line(message)}


def _write_persona(target: Path, text: str, expected: bytes) -> None:
    """SOUL.md replaced atomically, keeping its mode (and owner when root writes), only
    if it still holds what the plan was made from."""
    from hermes_container.fsutil import atomic_write_text

    _stale_check(version(expected), _read(target), SOUL_FILE)
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        atomic_write_text(target, text, 0o600)
        return
    atomic_write_text(target, text, st.st_mode & 0o7777)
    if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (0, 0):
        os.chown(target, st.st_uid, st.st_gid, follow_symlinks=False)


@dataclass(frozen=True)
class Saved:
    changed: list[str]
    restart: list[str]
    outcome: ReloadAnswer | None  # None: nothing the running gateway reads changed

    def to_json(self) -> dict[str, Any]:
        return {
            "changed": self.changed,
            "restart": self.restart,
            "reload": None if self.outcome is None else self.outcome.to_json(),
        }


def save(home: HermesHome, plan: EditPlan) -> Saved:
    """Write what `plan` checked (config.yaml through config_edit, comments kept; SOUL.md
    atomically), each only if unchanged since; then ask the gateway to reload."""
    from hermes_container.config_edit import replace_text
    from hermes_container.profiles import require_profile

    profile_dir = require_profile(home, plan.profile)
    config = profile_dir / CONFIG_FILE
    reload = plan.persona_after is not None
    if plan.config_after is not None:
        try:
            change = replace_text(home, plan.profile, plan.config_after, plan.config_before)
        except UsageError as exc:
            raise FieldErrors(_blame(exc.message, plan.changed)) from None
        except HermesError:
            # config_edit refuses a file that changed since it was read: a race with
            # another writer after the plan's own check.
            _stale_check(version(plan.config_before), _read(config), CONFIG_FILE)
            raise
        reload = reload or change.reload
    if plan.persona_after is not None:
        _write_persona(profile_dir / SOUL_FILE, plan.persona_after, plan.persona_before)
    outcome = reload_and_wait(home, plan.profile) if reload else None
    return Saved(plan.changed, plan.restart, outcome)


# -- the gateway key ---------------------------------------------------------------------


def rotate(home: HermesHome, profile: str) -> tuple[str, ReloadAnswer]:
    """A new API_SERVER_KEY, then a reload so the old key is refused at once."""
    from hermes_container.profile_keys import rotate_api_key

    key = rotate_api_key(home, profile)
    return key, reload_and_wait(home, profile)


__all__ = [
    "Created",
    "EditPlan",
    "FieldErrors",
    "NewProfile",
    "Saved",
    "Stale",
    "check_delete",
    "create",
    "delete",
    "editable_keys",
    "parse_new_profile",
    "plan_edit",
    "provider_models",
    "rotate",
    "save",
    "settings_form",
]
