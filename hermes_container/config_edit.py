"""Change a profile's config.yaml, and the keys in its .env, without breaking either.

- Round trip: ruamel.yaml edits the file keeping its comments, key order and quoting.
  Comments that follow a removed or appended key are moved so they stay where they were
  in the text (ruamel ties a comment to the entry before it). Then every line the change
  does not touch is taken from the original byte for byte (`_keep_untouched`), even
  where ruamel would respace it.
- What is checked is what the gateway will read: the new text is parsed by PyYAML (the
  gateway's parser) and validated by `settings_from_raw`, the code a gateway runs at
  start and on reload; on the default profile the dispatcher's own parsers must accept
  any kanban:/jobs: value that changed. A candidate that fails raises UsageError (exit 2)
  and changes nothing.
- Written atomically (fsutil), keeping the file's mode (and its owner when root writes),
  under an flock on the profile directory, and only while the file still holds what was
  read: two edits never lose one another.

ruamel.yaml and PyYAML are imported only when a file is edited.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from hermes_container.config_schema import (
    KEYS,
    SECTIONS,
    check_key_chars,
    check_value,
    dig,
    leaves,
    lookup,
    parse_text,
)
from hermes_container.errors import ConfigError, HermesError, UsageError
from hermes_container.fsutil import atomic_write_bytes
from hermes_container.home import CONFIG_FILE, DEFAULT_PROFILE, ENV_FILE
from hermes_container.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from pathlib import Path
    from typing import Any

    from hermes_container.home import HermesHome

# The .env names `config set-secret` writes: the two secrets something reads from a
# profile's .env (gateway/profile_settings.py). Any other name would be a silent no-op.
SECRET_NAMES: dict[str, str] = {
    "HERMES_MODEL_API_KEY": "the model provider's key",
    "API_SERVER_KEY": "the Bearer token clients send to this profile's gateway",
}
GATEWAY_SECTIONS = ("model", "gateway")


class ConfigChange(Record):
    """What a successful edit changed: dotted keys (`env.NAME` for .env entries)."""

    __slots__ = ("changed", "path", "profile")

    def __init__(self, profile: str, path: Path, changed: list[str]) -> None:
        self.profile = profile
        self.path = path
        self.changed = changed

    @property
    def restart(self) -> list[str]:
        """Changed keys a running gateway applies only when restarted."""
        return [k for k in self.changed if k in KEYS and KEYS[k].restart]

    @property
    def reload(self) -> bool:
        """Whether the profile's gateway reads anything that changed (beyond `restart`)."""
        return any(
            (k.startswith("env.") or k.partition(".")[0] in GATEWAY_SECTIONS)
            and k not in self.restart
            for k in self.changed
        )


# -- reading -----------------------------------------------------------------------------


def config_path(home: HermesHome, profile: str) -> Path:
    from hermes_container.profiles import require_profile  # profiles imports this module

    return require_profile(home, profile) / CONFIG_FILE


def read_config_bytes(path: Path) -> bytes:
    """The file as it is now (empty when missing); never through a symlink."""
    if path.is_symlink():
        raise UsageError(f"{path} is a symlink; refusing to edit through it")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _decode(data: bytes, where: Path) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{where}: not UTF-8 text") from None


def parse_config_text(text: str, where: Path | str) -> dict[str, Any]:
    """`text` as the gateway reads config.yaml; a bad one is a UsageError (exit 2)."""
    from hermes_container.config import parse_yaml

    try:
        return parse_yaml(text, where)
    except ConfigError as exc:
        raise UsageError(exc.message) from None


# -- validation --------------------------------------------------------------------------


def _same(a: object, b: object) -> bool:
    return type(a) is type(b) and a == b  # 1 == True, and YAML knows both


def _new_leaves(raw: Mapping[str, Any], before: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """The (dotted key, value) pairs of `raw` that `before` did not have as they are."""
    old = dict(leaves(before))
    for dotted, value in leaves(raw):
        if dotted not in old or not _same(old[dotted], value):
            yield dotted, value


def _check_leaf(dotted: str, value: object, profile_is_default: bool) -> None:
    if dotted in SECTIONS:  # `model: 3`; an empty `kanban:` is fine
        if value is not None and value != {}:
            raise ConfigError(f"'{dotted}' must be a mapping, not {value!r}")
        return
    # model.name.x: the value of model.name is a mapping.
    holder = next((k for k in KEYS if dotted.startswith(k + ".")), None)
    key = lookup(holder or dotted, profile_is_default=profile_is_default)
    if key.secret:
        raise ConfigError(_secret_hint(key.name))
    if holder is not None:
        raise ConfigError(f"{key.name} must be {key.expects()}, not a mapping")
    if value is not None:
        check_value(key, value)


def _secret_hint(name: str) -> str:
    env = KEYS[name].env
    return (
        f"{name} is a secret and does not belong in config.yaml: store it with "
        f"`hermes config set-secret {env}` (reads it from stdin, into .env)"
    )


def validate(
    profile: str,
    profile_dir: Path,
    raw: Mapping[str, Any],
    before: Mapping[str, Any],
    dotenv: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Refuse (ConfigError) a candidate config mapping `raw` replacing `before`:
    a new or changed key that is unknown, not read from this profile, a secret, or of
    the wrong type or range; then anything the gateway would refuse in the whole file;
    on the default profile, any new complaint of the dispatcher's parsers."""
    from hermes_container.envfile import read_env
    from hermes_container.gateway.profile_settings import settings_from_raw

    is_default = profile == DEFAULT_PROFILE
    for dotted, value in _new_leaves(raw, before):
        _check_leaf(dotted, value, is_default)
    env = os.environ if environ is None else environ
    if dotenv is None:
        dotenv = read_env(profile_dir / ENV_FILE)
    settings_from_raw(profile, profile_dir, raw, dotenv, env)
    if is_default:
        _check_dispatcher(raw, before)


def _check_dispatcher(raw: Mapping[str, Any], before: Mapping[str, Any]) -> None:
    """The dispatcher takes a bad kanban:/jobs: value with a warning and its default;
    an edit must not introduce one, so any warning the old file did not have refuses."""
    from hermes_container.kanban import settings as kanban_settings
    from hermes_container.kanban.jobs import settings as jobs_settings

    def complaints(mapping: Mapping[str, Any]) -> list[str]:
        found = list(kanban_settings.parse(mapping.get("kanban"), "kanban").warnings)
        found += jobs_settings.parse(mapping.get("jobs"), "jobs")[1]
        return found

    old = set(complaints(before))
    for warning in complaints(raw):
        if warning not in old:
            raise ConfigError(warning.replace("; ignored", ""))


# -- the round trip ----------------------------------------------------------------------


class _Document:
    """config.yaml loaded by ruamel.yaml for editing, and how to write it back."""

    def __init__(self, text: str, where: Path) -> None:
        from ruamel.yaml import YAML
        from ruamel.yaml.comments import CommentedMap
        from ruamel.yaml.error import YAMLError as RuamelError
        from ruamel.yaml.util import load_yaml_guess_indent

        self.text = text
        self.yaml = YAML()
        self.yaml.preserve_quotes = True
        self.yaml.width = 4096  # never fold a long value onto a second line
        try:
            _, indent, dash = load_yaml_guess_indent(text) if text.strip() else (None, 2, 0)
            indent = indent or 2
            self.yaml.indent(mapping=indent, sequence=indent + (dash or 0), offset=dash or 0)
            data = self.yaml.load(text)
        except RuamelError as exc:
            problem = " ".join(str(getattr(exc, "problem", "") or "cannot be parsed").split())
            raise UsageError(
                f"{where}: {problem}; `hermes config edit` can fix it by hand"
            ) from None
        # A file of comments only holds no mapping to attach them to: they are kept
        # as they are, and the new keys go after them.
        self.prefix = ""
        if data is None:
            data = CommentedMap()
            self.prefix = text if not text or text.endswith("\n") else text + "\n"
        if not isinstance(data, CommentedMap):
            raise UsageError(f"{where}: expected a mapping at the top level")
        self.data: Any = data
        self.baseline = self.dump()  # the unchanged file as ruamel writes it

    def dump(self) -> str:
        import io

        out = io.StringIO()
        self.yaml.dump(self.data, out)
        return out.getvalue()

    def result(self) -> str:
        if self.prefix or not self.data:
            return self.prefix + (self.dump() if self.data else "")
        return _keep_untouched(self.text, self.baseline, self.dump())


def _scalar(value: object) -> object:
    """A string PyYAML would read as something else (yes, 1:20, 0x1f, null) is quoted:
    ruamel writes YAML 1.2, the gateway reads YAML 1.1."""
    if not isinstance(value, str):
        return value
    import yaml
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    try:
        plain_is_same = yaml.safe_load(value) == value
    except yaml.YAMLError:
        plain_is_same = False
    return value if plain_is_same else DoubleQuotedScalarString(value)


def _token(node: Any, key: object) -> Any:
    item = node.ca.items.get(key)
    return item[2] if item and len(item) > 2 else None


def _last_entry(node: Any) -> tuple[Any, object] | None:
    """(mapping, key) of the entry whose comment token holds the lines that follow the
    block of `node`: its last key's, or deeper when that key's value is a block mapping."""
    from ruamel.yaml.comments import CommentedMap

    if not isinstance(node, CommentedMap) or not node or node.fa.flow_style():
        return None
    key = list(node)[-1]
    return _last_entry(node[key]) or (node, key)


def _split_comment(value: str) -> tuple[str, str]:
    """A token's text: (the rest of its own line, the full lines after it)."""
    cut = value.find("\n") + 1 or len(value)
    return value[:cut], value[cut:]


def _take_trailing(holder: Any, key: object) -> str:
    """Detach the lines after entry `key` (comments, blank lines); its own end-of-line
    comment stays."""
    entry = _last_entry(holder[key]) or (holder, key)
    token = _token(*entry)
    if token is None:
        return ""
    own, rest = _split_comment(token.value)
    token.value = own
    return rest


def _give_trailing(holder: Any, key: object, text: str) -> None:
    """Put `text` (whole lines) after entry `key`'s block."""
    from ruamel.yaml.error import CommentMark
    from ruamel.yaml.tokens import CommentToken

    if not text:
        return
    node, last = _last_entry(holder[key]) or (holder, key)
    token = _token(node, last)
    if token is not None:
        token.value += text
        return
    item = node.ca.items.setdefault(last, [None, None, None, None])
    item[2] = CommentToken("\n" + text, CommentMark(0))


def _give_leading(node: Any, text: str) -> None:
    """Put `text` (whole lines) before the first entry of mapping `node`."""
    from ruamel.yaml.error import CommentMark
    from ruamel.yaml.tokens import CommentToken

    if node.ca.comment is None:
        node.ca.comment = [None, []]
    if node.ca.comment[1] is None:
        node.ca.comment[1] = []
    for line in text.splitlines(keepends=True):
        stripped = line.lstrip(" ")
        if stripped.strip():
            column = len(line) - len(stripped)
            token = CommentToken(stripped.rstrip("\n") + "\n", CommentMark(column))
        else:
            token = CommentToken("\n", CommentMark(0))
        node.ca.comment[1].append(token)


def _append(node: Any, key: str, value: object) -> None:
    """Add a new last entry; the lines that followed the old last one follow the new."""
    rest = _take_trailing(node, list(node)[-1]) if node and not node.fa.flow_style() else ""
    node[key] = value
    _give_trailing(node, key, rest)


def _delete(node: Any, key: object) -> str:
    """Remove entry `key`; the lines that followed it move to the entry before it (or
    before the next one). Returns them when `node` is left empty, for its parent."""
    keys = list(node)
    index = keys.index(key)
    rest = _take_trailing(node, key)
    del node[key]
    node.ca.items.pop(key, None)
    if not rest:
        return ""
    if index > 0:
        _give_trailing(node, keys[index - 1], rest)
    elif node:
        _give_leading(node, rest)
    else:
        return rest
    return ""


def _set_path(doc: _Document, name: str, value: object) -> None:
    from ruamel.yaml.comments import CommentedMap

    parts = name.split(".")
    node = doc.data
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            chain: Any = _scalar(value)
            for inner in reversed(parts[depth + 1 :]):
                chain = CommentedMap([(inner, chain)])
            if part in node:  # `kanban:` with nothing after it
                rest = _take_trailing(node, part)
                node[part] = chain
                _give_trailing(node, part, rest)
            else:
                _append(node, part, chain)
            return
        if not isinstance(child, CommentedMap):
            where = ".".join(parts[: depth + 1])
            raise UsageError(
                f"{where} in config.yaml is not a mapping; fix it with `hermes config edit`"
            )
        node = child
    if parts[-1] in node:
        node[parts[-1]] = _scalar(value)
    else:
        _append(node, parts[-1], _scalar(value))


def _unset_path(doc: _Document, name: str) -> bool:
    parts = name.split(".")
    trail = [doc.data]
    for part in parts[:-1]:
        child = trail[-1].get(part)
        if not hasattr(child, "ca"):
            return False
        trail.append(child)
    if parts[-1] not in trail[-1]:
        return False
    rest = _delete(trail[-1], parts[-1])
    # A section left empty goes too, with the lines that followed it.
    for depth in range(len(parts) - 2, -1, -1):
        if trail[depth + 1]:
            return True  # not empty: nothing was carried out of it
        _give_trailing(trail[depth], parts[depth], rest)
        rest = _delete(trail[depth], parts[depth])
    if rest:
        _give_leading(doc.data, rest)
    return True


def _tight_place(at: dict[int, int], j1: int, j2: int) -> tuple[int, int] | None:
    """The original lines baseline lines j1..j2 stand for, when they are all found there
    (an insertion: where to insert, beside a line that is)."""
    if j1 == j2:
        if j1 - 1 in at:
            return at[j1 - 1] + 1, at[j1 - 1] + 1
        if j1 in at:
            return at[j1], at[j1]
        return None
    if j1 in at and j2 - 1 in at and at[j2 - 1] - at[j1] == j2 - 1 - j1:
        return at[j1], at[j2 - 1] + 1
    return None


def _keep_untouched(original: str, baseline: str, modified: str) -> str:
    """`modified` with every line outside the change taken from `original`.

    `baseline` is `original` as ruamel writes it unchanged, `modified` the same with the
    change: the line diff baseline -> modified is applied to `original`, each hunk placed
    by the unchanged lines around it. When a hunk cannot be placed, or the result would
    not read the same, ruamel's text is used as it is (still comments and order kept).
    """
    if baseline == original:
        return modified
    import difflib

    import yaml

    ours, base, new = (t.splitlines(keepends=True) for t in (original, baseline, modified))
    # baseline line -> the original line it stands for: the same text, or a run of
    # lines ruamel respaced one for one (as many on each side).
    at: dict[int, int] = {}
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(
        None, ours, base, autojunk=False
    ).get_opcodes():
        if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
            for k in range(j2 - j1):
                at[j1 + k] = i1 + k
    result = list(ours)
    limit = len(ours)
    opcodes = difflib.SequenceMatcher(None, base, new, autojunk=False).get_opcodes()
    for tag, j1, j2, k1, k2 in reversed(opcodes):
        if tag == "equal":
            continue
        tight = _tight_place(at, j1, j2)
        if tight is not None:
            (start, end), klo, khi = tight, k1, k2
        else:
            # Widen the hunk to an original line on each side; what it takes in is the
            # same in baseline and modified (only respaced by ruamel).
            lo, hi, klo, khi = j1, j2, k1, k2
            while lo > 0 and lo - 1 not in at:
                lo, klo = lo - 1, klo - 1
            while hi < len(base) and hi not in at:
                hi, khi = hi + 1, khi + 1
            if base[lo:j1] != new[klo:k1] or base[j2:hi] != new[k2:khi]:
                return modified
            start = at[lo - 1] + 1 if lo > 0 else 0
            end = at[hi] if hi < len(base) else len(ours)
        if not start <= end <= limit:
            return modified
        result[start:end] = new[klo:khi]
        limit = start
    merged = "".join(result)
    try:
        same = yaml.safe_load(merged) == yaml.safe_load(modified)
    except yaml.YAMLError:
        same = False
    return merged if same else modified


def edited_text(text: str, values: Mapping[str, object], where: Path | str) -> str:
    """`text` (a config.yaml) with dotted keys set to `values`, comments and untouched
    lines kept; the values are not checked here."""
    from pathlib import Path

    doc = _Document(text, Path(where))
    for name, value in values.items():
        _set_path(doc, name, value)
    return doc.result()


# -- writing -----------------------------------------------------------------------------


@contextlib.contextmanager
def _profile_locked(profile_dir: Path) -> Iterator[None]:
    """One editor of a profile's files at a time: an flock on its directory (no lock
    file, so a refused edit leaves the directory exactly as it was)."""
    fd = os.open(profile_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_keeping_owner(path: Path, data: bytes, default_mode: int = 0o600) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        atomic_write_bytes(path, data, default_mode)
        return
    atomic_write_bytes(path, data, st.st_mode & 0o7777)
    if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (0, 0):
        os.chown(path, st.st_uid, st.st_gid, follow_symlinks=False)


def _as_usage(exc: ConfigError) -> UsageError:
    return UsageError(exc.message)


def _changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    old, new = dict(leaves(before)), dict(leaves(after))
    return sorted(k for k in old.keys() | new.keys() if not _same(old.get(k), new.get(k)))


def _commit(
    home: HermesHome,
    profile: str,
    edit: Callable[[str, Path], str],
    *,
    secrets: Mapping[str, str] | None = None,
    expected: bytes | None = None,
) -> ConfigChange:
    """Under the profile's lock: read config.yaml, `edit(text, path) -> new text`,
    validate, write (.env first when `secrets` change it), or raise and write nothing."""
    from hermes_container.envfile import read_env

    path = config_path(home, profile)
    profile_dir = path.parent
    with _profile_locked(profile_dir):
        data = read_config_bytes(path)
        if expected is not None and data != expected:
            raise HermesError(f"{path} changed while it was being edited; nothing written")
        text = _decode(data, path)
        before = parse_config_text(text, path) if text.strip() else {}
        new_text = edit(text, path)
        after = parse_config_text(new_text, path)
        dotenv = read_env(profile_dir / ENV_FILE)
        new_env = {**dotenv, **(secrets or {})}
        # Secrets alone are checked by check_secret: a key can be stored (or a broken
        # one replaced) while config.yaml still needs fixing.
        if new_text != text or not secrets:
            try:
                validate(profile, profile_dir, after, before, new_env)
            except ConfigError as exc:
                raise _as_usage(exc) from None
        changed = _changed(before, after)
        if "gateway.port" in changed:
            _check_port_free(home, profile, after)
        if new_env != dotenv:
            _write_env(profile_dir, {k: v for k, v in new_env.items() if dotenv.get(k) != v})
            changed += [
                f"env.{name}" for name in sorted(new_env) if new_env[name] != dotenv.get(name)
            ]
        if new_text != text:
            _write_keeping_owner(path, new_text.encode("utf-8"))
    return ConfigChange(profile, path, changed)


def _check_port_free(home: HermesHome, profile: str, raw: Mapping[str, Any]) -> None:
    """Two profiles on one port would fight over it: refuse another profile's port."""
    from hermes_container.config import read_port
    from hermes_container.profiles import list_profiles

    port = dig(raw, "gateway.port")[1]
    for other in list_profiles(home):
        if other == profile:
            continue
        try:
            taken = read_port(home.profile_dir(other))
        except HermesError:
            continue  # a broken profile claims no port
        if taken == port:
            raise UsageError(f"gateway.port {port} is already the port of profile {other!r}")


def _write_env(profile_dir: Path, updates: dict[str, str]) -> None:
    from hermes_container.envfile import update_env
    from hermes_container.profiles import ENV_HEADER

    # The operator's comments and other entries stay; atomic, mode 600.
    update_env(profile_dir / ENV_FILE, updates, header=ENV_HEADER)


# -- the operations ----------------------------------------------------------------------


def get_value(home: HermesHome, profile: str, name: str) -> tuple[bool, Any]:
    """(present, value) of dotted key `name` in the profile's config.yaml."""
    from hermes_container.config import load_config

    try:
        lookup(name, profile_is_default=profile == DEFAULT_PROFILE)
    except ConfigError as exc:
        raise _as_usage(exc) from None
    return dig(load_config(config_path(home, profile).parent).raw, name)


def set_values(
    home: HermesHome,
    profile: str,
    values: Mapping[str, object],
    *,
    secrets: Mapping[str, str] | None = None,
) -> ConfigChange:
    """Set several keys (values already typed), and .env `secrets`, in one checked write."""
    is_default = profile == DEFAULT_PROFILE
    try:
        for name, value in values.items():
            key = lookup(name, profile_is_default=is_default)
            if key.secret:
                raise ConfigError(_secret_hint(name))
            check_value(key, value)
        for name, value in (secrets or {}).items():
            check_secret(name, value)
    except ConfigError as exc:
        raise _as_usage(exc) from None

    def edit(text: str, path: Path) -> str:
        return edited_text(text, values, path) if values else text

    return _commit(home, profile, edit, secrets=secrets)


def set_text(home: HermesHome, profile: str, name: str, text: str) -> ConfigChange:
    """`hermes config set NAME TEXT`: TEXT parsed as the key's type says."""
    try:
        key = lookup(name, profile_is_default=profile == DEFAULT_PROFILE)
        if key.secret:
            raise ConfigError(_secret_hint(name))
        value = parse_text(key, text)
    except ConfigError as exc:
        raise _as_usage(exc) from None
    return set_values(home, profile, {name: value})


def unset(home: HermesHome, profile: str, name: str) -> ConfigChange:
    """Remove dotted key `name` (the key falls back to its default); refused when the
    profile needs it (a required key)."""
    try:
        lookup(name, profile_is_default=profile == DEFAULT_PROFILE)
    except ConfigError as exc:
        raise _as_usage(exc) from None

    def edit(text: str, path: Path) -> str:
        doc = _Document(text, path)
        return doc.result() if _unset_path(doc, name) else text

    return _commit(home, profile, edit)


def replace_text(home: HermesHome, profile: str, new_text: str, expected: bytes) -> ConfigChange:
    """`hermes config edit`: the whole file replaced by `new_text`, if the file still
    holds `expected` and the new text validates."""
    return _commit(home, profile, lambda _text, _path: new_text, expected=expected)


def check_secret(name: str, value: str) -> str:
    """A value for .env entry `name`: a known secret name, one non-empty line that can
    go into an HTTP header (both secrets do)."""
    if name not in SECRET_NAMES:
        allowed = ", ".join(SECRET_NAMES)
        raise ConfigError(f"{name!r} is not a secret this project reads (one of: {allowed})")
    if not value:
        raise ConfigError(f"refusing an empty value for {name}")
    return check_key_chars(value, f"the value of {name}")


def set_secret(home: HermesHome, profile: str, name: str, value: str) -> ConfigChange:
    """Store secret `name` in the profile's .env (atomic, mode 600)."""
    return set_values(home, profile, {}, secrets={name: value})


__all__ = [
    "SECRET_NAMES",
    "ConfigChange",
    "check_secret",
    "edited_text",
    "get_value",
    "parse_config_text",
    "replace_text",
    "set_secret",
    "set_text",
    "set_values",
    "unset",
    "validate",
]
