"""compose.yaml: the one service README's main-job command runs, as the issue specifies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]


def _service() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "compose.yaml").read_text())
    services = data["services"]
    assert list(services) == ["hermes"]
    service = services["hermes"]
    assert isinstance(service, dict)
    return service


def test_volume_ports_and_restart_policy() -> None:
    s = _service()
    assert "./data:/opt/data" in s["volumes"]
    ports = [str(p).split("#")[0].strip() for p in s["ports"]]
    assert {"8640:8640", "8642:8642", "9119:9119"} <= set(ports)  # ingress, default, dashboard
    assert s["restart"] in ("unless-stopped", "always", "on-failure")
    assert s.get("init") in (None, False), "s6-overlay must be PID 1"
    assert s["build"]["context"] == "."
    assert s["container_name"] == "hermes"  # the docs' `docker exec hermes ...`


def test_dashboard_enabled_and_healthcheck() -> None:
    s = _service()
    assert str(s["environment"]["HERMES_DASHBOARD"]) == "1"
    # A first run needs no identity provider: token login (issue 18).
    assert s["environment"]["HERMES_DASHBOARD_AUTH"] == "token"
    assert s["healthcheck"]["test"] == ["CMD", "hermes", "healthcheck"]


def test_oidc_settings_are_documented_but_commented() -> None:
    text = (REPO / "compose.yaml").read_text()
    for name in (
        "HERMES_DASHBOARD_OIDC_ISSUER",
        "HERMES_DASHBOARD_OIDC_CLIENT_ID",
        "HERMES_DASHBOARD_OIDC_CLIENT_SECRET",
        "HERMES_DASHBOARD_GITHUB_CLIENT_ID",
    ):
        assert f"# {name}:" in text
        assert name not in _service()["environment"]
