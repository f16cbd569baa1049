"""What a gateway's environment never carries: the deny list, in one place.

A container's environment configures every service in it, secrets included: the
dashboard's OIDC and GitHub client secrets and its cookie signing key. A gateway needs
none of them, and whatever its process holds can leak through it (a child process, an
error report, anything that reads /proc/self/environ). So every slot drops:

- FIXED_DENY: `HERMES_DASHBOARD_*`, the dashboard's whole configuration,
  `HERMES_METRICS_TOKEN*`, the scrape endpoint's secret (or the path to it), and
  `HERMES_INGRESS_KEY*`, the key that opens every profile at the ingress;
- HERMES_GATEWAY_ENV_DENY: the operator's own list of names (`MY_SECRET`) and
  prefixes (`AWS_*`), separated by commas or blanks.

Two places apply these rules. The preamble of every slot script runs `render_sh()`'s
POSIX sh before it execs (under s6-overlay a service starts from the container's whole
environment, imported by s6-envdir). `hermes supervise` starts s6-svscan with
`filtered(os.environ)`, so on a host not even the supervisors hold the secrets. The
shell skips operator entries it cannot use; `gateway run` checks the list with
`operator_patterns`, so a typo parks the gateway (exit 78) instead of letting the
secret it meant to hide through unnoticed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from hermes_container.errors import ConfigError

DASHBOARD_PREFIX = "HERMES_DASHBOARD_"
# The token and HERMES_METRICS_TOKEN_FILE: names of variables, not a secret.
METRICS_TOKEN_PREFIX = "HERMES_METRICS_TOKEN"  # noqa: S105
INGRESS_KEY_PREFIX = "HERMES_INGRESS_KEY"
FIXED_DENY = (f"{DASHBOARD_PREFIX}*", f"{METRICS_TOKEN_PREFIX}*", f"{INGRESS_KEY_PREFIX}*")
DENY_VARIABLE = "HERMES_GATEWAY_ENV_DENY"

# A variable name, or a name prefix ending in `*`: the only shapes the shell side can
# match the same way (a case pattern without other glob characters).
_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\*?")
# The shell splits the list with IFS=", <tab><newline>"; Python must split the same way.
_SEPARATORS = re.compile(r"[, \t\n]+")


def operator_patterns(environ: Mapping[str, str]) -> tuple[str, ...]:
    """HERMES_GATEWAY_ENV_DENY's entries, or a ConfigError naming the first bad one."""
    entries = [e for e in _SEPARATORS.split(environ.get(DENY_VARIABLE, "")) if e]
    for entry in entries:
        if not _PATTERN.fullmatch(entry):
            raise ConfigError(
                f"{DENY_VARIABLE}: {entry!r} is neither a variable name nor a NAME_* prefix "
                "(separate entries with commas or spaces)"
            )
    return tuple(entries)


def deny_patterns(environ: Mapping[str, str]) -> tuple[str, ...]:
    return FIXED_DENY + operator_patterns(environ)


def is_denied(name: str, patterns: Iterable[str]) -> bool:
    for pattern in patterns:
        if pattern.endswith("*"):
            if name.startswith(pattern[:-1]):
                return True
        elif name == pattern:
            return True
    return False


def filtered(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` without what gateways must not see (ConfigError on a bad operator list)."""
    patterns = deny_patterns(environ)
    return {name: value for name, value in environ.items() if not is_denied(name, patterns)}


def dashboard_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """The dashboard's own configuration, which FIXED_DENY takes from the tree: under
    `hermes supervise` the dashboard's slot gets it back through an envdir of its own."""
    return {
        name: value
        for name, value in environ.items()
        if name.startswith((DASHBOARD_PREFIX, METRICS_TOKEN_PREFIX))
    }


def render_sh() -> str:
    """POSIX sh that unsets every denied variable of the running script before it execs.

    FIXED_DENY is rendered in; the operator's list is read when the script runs, from
    the environment the slot really has. One fork (`export -p`, a builtin) and no exec,
    so a gateway start costs a fraction of a millisecond more. A function, so that the
    script's own "$@" (a finish script's exit code and signal) is left alone.
    """
    fixed = " ".join(FIXED_DENY)  # validated shapes: safe unquoted while globbing is off
    return f"""# Drop what a gateway must not see (hermes_container.gateway.environment):
# {fixed} and the names or NAME_* prefixes in {DENY_VARIABLE}.
hermes_deny_env() {{
  IFS=', \t
'
  set -f # before the next line expands: patterns, never file names
  # shellcheck disable=SC2086 # split on purpose: one pattern per word
  set -- {fixed} ${{{DENY_VARIABLE}:-}}
  IFS='
'
  # `export -p` prints one `export NAME=...` per variable (bash: `declare -x`); the
  # continuation lines of a multi-line value can only ever add a name that is denied.
  for hermes_var in $(export -p); do
    hermes_var=${{hermes_var#export }}
    hermes_var=${{hermes_var#declare -x }}
    hermes_var=${{hermes_var%%=*}}
    case $hermes_var in
      '' | [!A-Za-z_]* | *[!A-Za-z0-9_]*) continue ;;
    esac
    for hermes_pattern do
      case $hermes_pattern in
        '' | [!A-Za-z_]* | *[!A-Za-z0-9_*]* | *'*'?*) continue ;; # gateway run reports it
      esac
      # shellcheck disable=SC2254 # the entry is a pattern: NAME or NAME_*
      case $hermes_var in
        $hermes_pattern) unset "$hermes_var" ;;
      esac
    done
  done
  unset IFS hermes_var hermes_pattern
  set +f
}}
hermes_deny_env
"""
