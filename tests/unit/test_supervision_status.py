"""One status model: without a supervisor, the CLI and the dashboard give the same answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from hermes_container.dashboard.app import create_app
from hermes_container.dashboard.settings import DashboardSettings
from hermes_container.home import HermesHome
from hermes_container.profiles import create_profile, ensure_default_profile
from hermes_container.state import write_observed
from hermes_container.supervision.service_status import gateway_status
from hermes_container.timeutil import utc_now_iso
from tests.conftest import run_hermes

TOKEN = "status-model-token"


@pytest.fixture
def no_tree(hermes_home: HermesHome, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HERMES_S6_SCANDIR", str(tmp_path / "service"))
    ensure_default_profile(hermes_home)
    create_profile(hermes_home, "alpha")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_live_recorded_pid_is_a_running_gateway(hermes_home: HermesHome, no_tree: None) -> None:
    write_observed(
        hermes_home.profile_dir("alpha"),
        gateway_state="running",
        pid=os.getpid(),
        port=8650,
        started_at=utc_now_iso(),
    )
    status = gateway_status(hermes_home, None, "alpha")
    assert status.up and status.ready and status.pid == os.getpid()
    assert status.uptime_s is not None and 0 <= status.uptime_s < 60
    assert status.port == 8650 and not status.registered and status.restarts is None


def test_a_starting_gateway_is_up_but_not_ready(hermes_home: HermesHome, no_tree: None) -> None:
    write_observed(hermes_home.profile_dir("alpha"), gateway_state="starting", pid=os.getpid())
    status = gateway_status(hermes_home, None, "alpha")
    assert status.up and not status.ready and status.uptime_s is None


def test_a_dead_or_stale_pid_is_not_running(hermes_home: HermesHome, no_tree: None) -> None:
    alpha = hermes_home.profile_dir("alpha")
    write_observed(alpha, gateway_state="running", pid=_dead_pid(), started_at=utc_now_iso())
    status = gateway_status(hermes_home, None, "alpha")
    assert not status.up and status.pid is None and status.uptime_s is None
    # A pid left in a state that says the gateway is gone is not looked at.
    write_observed(alpha, gateway_state="crashed", pid=os.getpid(), exit_code=1)
    status = gateway_status(hermes_home, None, "alpha")
    assert not status.up and status.pid is None and status.exit_code == 1


def test_cli_and_dashboard_agree_without_a_supervisor(
    hermes_home: HermesHome, no_tree: None
) -> None:
    started = utc_now_iso()
    write_observed(
        hermes_home.profile_dir("alpha"),
        gateway_state="running",
        pid=os.getpid(),
        port=8650,
        started_at=started,
    )
    cli = json.loads(run_hermes("gateway", "status", "--all", "--json").stdout)
    app = create_app(DashboardSettings(session_token=TOKEN), home=hermes_home, manager=None)
    with TestClient(app, base_url="http://127.0.0.1:9119") as tc:
        api = tc.get("/api/profiles", headers={"X-Hermes-Session-Token": TOKEN}).json()
    by_name = {row["name"]: row for row in api["profiles"]}
    for item in cli:
        row = by_name[item["profile"]]
        for key in ("up", "ready", "pid", "port", "registered", "restarts", "desired_state"):
            assert row[key] == item[key], (item["profile"], key)
        # Uptime is read at two moments: equal to within the time between them.
        if item["uptime_s"] is None:
            assert row["uptime_s"] is None
        else:
            assert abs(row["uptime_s"] - item["uptime_s"]) < 30
    assert by_name["alpha"]["pid"] == os.getpid() and by_name["default"]["pid"] is None
    # The page's script shows the server's formatting of the uptime.
    assert (
        by_name["alpha"]["uptime_text"].endswith("s") and by_name["default"]["uptime_text"] == "-"
    )
