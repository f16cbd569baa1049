"""On/off environment variables: one rule for every HERMES_* switch.

A switch that is off by default is on only for `1`, `true` or `yes` (any case, blanks
around); anything else, the empty string and typos included, leaves it off (a typo
must never enable something). A switch that is on by default (the repairs at boot) is
off only for `0`, `false` or `no`: a typo must never disable a safeguard. The image's
shell scripts apply the same rules (`is_truthy` and `is_falsy` in
root/opt/hermes/libexec/lib.sh).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

TRUE_VALUES = frozenset({"1", "true", "yes"})
FALSE_VALUES = frozenset({"0", "false", "no"})


def is_truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in TRUE_VALUES


def is_falsy(value: str | None) -> bool:
    return (value or "").strip().lower() in FALSE_VALUES


def env_flag(name: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether switch `name` is on in `env` (default: this process's environment)."""
    import os

    return is_truthy((os.environ if env is None else env).get(name))


def env_switch(name: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether on-by-default switch `name` is still on in `env` (default: os.environ)."""
    import os

    return not is_falsy((os.environ if env is None else env).get(name))
