"""The deny list: what gateways never see, the same from Python and from the slot's sh."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hermes_container.errors import ConfigError
from hermes_container.gateway.environment import (
    dashboard_variables,
    filtered,
    operator_patterns,
    render_sh,
)
from hermes_container.home import HermesHome
from hermes_container.profiles import ensure_default_profile
from tests.conftest import run_hermes

SECRETS = {
    "HERMES_DASHBOARD_OIDC_CLIENT_SECRET": "oidc-secret",
    "HERMES_DASHBOARD_SECRET_KEY": "signing-key",
    "HERMES_DASHBOARD_GITHUB_CLIENT_SECRET": "gh-secret",
}
# The ingress slot gets these back through its own env/ (supervision/host.py).
INGRESS_SECRETS = {
    "HERMES_INGRESS_KEY": "ingress-key-opens-every-profile",
    "HERMES_INGRESS_KEY_FILE": "/run/secrets/ingress",
}
NEEDED = {
    "PATH": "/usr/bin:/bin",
    "HERMES_HOME": "/opt/data",
    "HERMES_GATEWAY_HOST": "0.0.0.0",
    "HERMES_MODEL_API_KEY": "sk-provider",  # a gateway's own key: never on the fixed list
    "HTTPS_PROXY": "http://proxy:3128",
    "HERMES_DASHBOARD": "1",  # the on/off switch is no secret (no underscore after it)
}


def test_fixed_list_drops_the_dashboards_settings_and_the_ingress_key() -> None:
    assert filtered({**NEEDED, **SECRETS, **INGRESS_SECRETS}) == NEEDED


@pytest.mark.parametrize(
    ("deny", "dropped"),
    [
        ("MY_SECRET", {"MY_SECRET"}),
        ("MY_SECRET,AWS_*", {"MY_SECRET", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}),
        (" AWS_*  MY_SECRET ,, ", {"MY_SECRET", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}),
        ("MY_*", {"MY_SECRET", "MY_SECRETS"}),
        ("AWS_ACCESS_KEY_ID\tMY_SECRETS", {"AWS_ACCESS_KEY_ID", "MY_SECRETS"}),
        ("", set()),
    ],
)
def test_operator_names_and_prefixes(deny: str, dropped: set[str]) -> None:
    extra = {n: "x" for n in ("MY_SECRET", "MY_SECRETS", "AWS_ACCESS_KEY_ID")}
    extra["AWS_SECRET_ACCESS_KEY"] = "y"
    environ = {**NEEDED, **SECRETS, **extra, "HERMES_GATEWAY_ENV_DENY": deny}
    kept = filtered(environ)
    assert set(environ) - set(kept) == set(SECRETS) | dropped
    assert kept["HERMES_GATEWAY_ENV_DENY"] == deny  # kept: `gateway run` checks it


@pytest.mark.parametrize("bad", ["*", "MY-SECRET", "1ABC", "A*B", "MY_SECRET;rm", "A**", "É"])
def test_a_bad_operator_entry_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"HERMES_GATEWAY_ENV_DENY: .* neither a variable"):
        operator_patterns({"HERMES_GATEWAY_ENV_DENY": f"OK_NAME,{bad}"})
    with pytest.raises(ConfigError):
        filtered({"HERMES_GATEWAY_ENV_DENY": bad})


def test_dashboard_variables_are_exactly_what_the_fixed_list_takes() -> None:
    environ = {**NEEDED, **SECRETS}
    assert dashboard_variables(environ) == SECRETS
    assert filtered(environ) | dashboard_variables(environ) == environ


def _run_sh(tmp_path: Path, environ: dict[str, str], *args: str) -> tuple[dict[str, str], str]:
    """Run render_sh() under /bin/sh with exactly `environ`; returns the environment it
    would exec with (NUL-separated, so multi-line values survive) and "$@" afterwards."""
    script = tmp_path / "deny.sh"
    # Files a pattern would match if the shell globbed it: it must not.
    for name in ("MY_FILE", "HERMES_DASHBOARD_FILE", "AWS_FILE"):
        (tmp_path / name).touch()
    script.write_text("#!/bin/sh\n" + render_sh() + 'printf "%s|" "$@" > "$0.args"\nexec env -0\n')
    out = subprocess.run(
        ["/bin/sh", str(script), *args], env=environ, cwd=tmp_path, capture_output=True, check=True
    ).stdout
    seen = dict(item.split("=", 1) for item in out.decode().split("\0") if item)
    # What the shell itself adds on the way, whatever the environment was.
    for name in ("PWD", "OLDPWD", "SHLVL", "_"):
        seen.pop(name, None)
    return seen, (tmp_path / "deny.sh.args").read_text()


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"HERMES_GATEWAY_ENV_DENY": "MY_SECRET"},
        {"HERMES_GATEWAY_ENV_DENY": "MY_*, AWS_*", "AWS_KEY": "k", "MYSELF": "kept"},
        {"HERMES_GATEWAY_ENV_DENY": "MY_SECRET", "MY_SECRETS": "kept", "XMY_SECRET": "kept"},
        # A value that looks like more variables, over several lines: changes nothing.
        {"NOTE": "a\nMY_SECRET=1\nexport PATH=x\nHERMES_DASHBOARD_-=y", "MY_SECRET": "s"},
        {"QUOTES": 'it\'s "quoted" $HOME `id` *', "HERMES_GATEWAY_ENV_DENY": "QUOTES"},
    ],
)
def test_the_slot_shell_drops_exactly_what_python_drops(
    tmp_path: Path, extra: dict[str, str]
) -> None:
    environ = {**NEEDED, **SECRETS, "MY_SECRET": "s", **extra}
    seen, args = _run_sh(tmp_path, environ, "256", "9")
    assert seen == filtered(environ)
    assert args == "256|9|", "a finish script's exit code and signal are left alone"


def test_the_slot_shell_skips_bad_entries_and_never_fails(tmp_path: Path) -> None:
    """`*` would empty the environment, `A-B` cannot be unset by sh (and would end the
    script): both are skipped; the valid entries still apply; `gateway run` reports."""
    environ = {**NEEDED, "MY_SECRET": "s", "HERMES_GATEWAY_ENV_DENY": "* A-B MY_SECRET [A-Z]*"}
    seen, _ = _run_sh(tmp_path, environ)
    assert seen == {**NEEDED, "HERMES_GATEWAY_ENV_DENY": environ["HERMES_GATEWAY_ENV_DENY"]}


def test_gateway_run_refuses_a_bad_deny_list(hermes_home: HermesHome) -> None:
    ensure_default_profile(hermes_home)
    proc = run_hermes(
        "gateway",
        "run",
        env={"HERMES_ALLOW_ROOT_GATEWAY": "1", "HERMES_GATEWAY_ENV_DENY": "MY-SECRET"},
    )
    assert proc.returncode == 78, proc.stderr
    assert proc.stderr.count("\n") == 1
    assert "HERMES_GATEWAY_ENV_DENY: 'MY-SECRET' is neither a variable name" in proc.stderr
