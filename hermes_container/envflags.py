"""On/off environment variables: one rule for every HERMES_* switch.

`1`, `true` or `yes`, in any case and with blanks around, turn a switch on; anything
else, the empty string and typos included, leaves it off (a typo must never enable
something). The image's shell scripts apply the same rule (`is_truthy` in
root/opt/hermes/libexec/lib.sh).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

TRUE_VALUES = frozenset({"1", "true", "yes"})


def is_truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in TRUE_VALUES


def env_flag(name: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether switch `name` is on in `env` (default: this process's environment)."""
    import os

    return is_truthy((os.environ if env is None else env).get(name))
