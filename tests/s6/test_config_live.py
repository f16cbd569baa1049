"""`hermes setup` and `hermes config set` inside a live s6 tree: setup starts the gateway
the way `gateway start` does, and a config change reaches the running gateway through
its slot (a reload, not a restart)."""

from __future__ import annotations

from pathlib import Path

import httpx
import yaml

from hermes_container.envfile import read_env
from tests.fake_upstream import FakeUpstream
from tests.s6.conftest import WAIT, Tree, wait_for


def _chat(profile_dir: Path) -> httpx.Response:
    port = yaml.safe_load((profile_dir / "config.yaml").read_text())["gateway"]["port"]
    key = read_env(profile_dir / ".env")["API_SERVER_KEY"]
    return httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {key}"},
        trust_env=False,
        timeout=WAIT,
    )


def test_setup_starts_the_gateway_and_config_set_reloads_it(tree: Tree) -> None:
    with FakeUpstream() as upstream:
        out = tree.ok(
            "-p",
            "fresh",
            "setup",
            "--non-interactive",
            "--base-url",
            upstream.base_url,
            "--model",
            "fake-model",
        )
        assert "Profile 'fresh' does not exist yet" in out
        assert "Gateway 'fresh' is running" in out
        profile_dir = tree.home.profile_dir("fresh")
        before = tree.wait_ready("fresh")
        assert _chat(profile_dir).json()["model"] == "fake-model"
        chats = [r for r in upstream.requests if r.path.endswith("/chat/completions")]
        assert chats[0].body["max_tokens"] == 1  # setup's one check, before the start

        out = tree.ok("-p", "fresh", "config", "set", "model.name", "second-model")
        assert "Gateway 'fresh' reloaded" in out
        answer = wait_for(
            lambda: (r := _chat(profile_dir)).json()["model"] == "second-model" and r,
            what="the reloaded model",
        )
        assert answer.status_code == 200
        after = tree.status("fresh")
        assert after["pid"] == before["pid"] and after["restarts"] == before["restarts"]

        out = tree.ok("-p", "fresh", "config", "set", "gateway.port", str(before["port"] + 1))
        assert "`hermes -p fresh gateway restart`" in out
        assert tree.status("fresh")["pid"] == before["pid"]  # not restarted behind our back
