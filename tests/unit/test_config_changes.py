"""profile.config_changed: a gateway start records which settings keys changed since
the last start, by name, never a value (config_changes.py)."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable

from hermes_container.config_changes import FINGERPRINT_FILE, check, fingerprint
from hermes_container.envfile import read_env, write_env
from hermes_container.events.append import open_ledger
from hermes_container.home import HermesHome
from tests.unit.conftest import GatewayProfile


def test_first_check_keeps_a_fingerprint_and_reports_nothing(
    make_profile: Callable[[str], GatewayProfile],
) -> None:
    alpha = make_profile("alpha")
    assert check(alpha.dir) is None
    kept = alpha.dir / FINGERPRINT_FILE
    assert json.loads(kept.read_text()) == fingerprint(alpha.dir)
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert check(alpha.dir) == []


def test_changed_added_and_removed_keys_are_named_without_values(
    make_profile: Callable[[str], GatewayProfile],
) -> None:
    alpha = make_profile("alpha")
    check(alpha.dir)
    secret = "sk-do-not-log-this-value"
    env = read_env(alpha.dir / ".env")
    write_env(alpha.dir / ".env", {**env, "OPENAI_API_KEY": secret})
    alpha.configure(model={"name": "another-model"}, request_timeout_s=12)
    (alpha.dir / "SOUL.md").write_text("You are terse.\n")
    keys = check(alpha.dir)
    assert keys == sorted(["env.OPENAI_API_KEY", "gateway.request_timeout_s", "model.name", "soul"])
    assert secret not in (alpha.dir / FINGERPRINT_FILE).read_text()
    assert check(alpha.dir) == []


def test_a_gateway_start_after_an_edit_records_profile_config_changed(
    make_profile: Callable[[str], GatewayProfile], hermes_home: HermesHome
) -> None:
    alpha = make_profile("alpha")
    alpha.start().terminate()
    secret = "sk-another-secret-value"
    write_env(alpha.dir / ".env", {**read_env(alpha.dir / ".env"), "PROVIDER_KEY": secret})
    alpha.start().terminate()
    alpha.start().terminate()  # nothing changed since: no second event
    ledger = open_ledger(hermes_home.root)
    changed = ledger.read(0, kind="profile.config_changed")
    assert [(e.profile, e.data) for e in changed] == [
        ("alpha", {"keys": ["env.PROVIDER_KEY"], "count": 1})
    ]
    starts = [e.id for e in ledger.read(0, kind="gateway.starting", profile="alpha")]
    assert starts[0] < changed[0].id < starts[1]  # recorded as the second start began
    everything = json.dumps([e.to_json() for e in ledger.read(0, limit=10_000)])
    assert secret not in everything
