"""`hermes setup` and `hermes config set` inside a live s6 tree: setup starts the gateway
the way `gateway start` does, and a config change reaches the running gateway through
its slot (a reload, not a restart)."""

from __future__ import annotations

from tests.fake_upstream import FakeUpstream
from tests.s6.conftest import Tree, wait_for
from tests.s6.support import chat, gateway_key


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
        port, key = before["port"], gateway_key(profile_dir)
        assert chat(port, key).json()["model"] == "fake-model"
        chats = [r for r in upstream.requests if r.path.endswith("/chat/completions")]
        assert chats[0].body["max_tokens"] == 1  # setup's one check, before the start

        out = tree.ok("-p", "fresh", "config", "set", "model.name", "second-model")
        assert "Gateway 'fresh' reloaded" in out
        answer = wait_for(
            lambda: (r := chat(port, key)).json()["model"] == "second-model" and r,
            what="the reloaded model",
        )
        assert answer.status_code == 200
        after = tree.status("fresh")
        assert after["pid"] == before["pid"] and after["restarts"] == before["restarts"]

        out = tree.ok("-p", "fresh", "config", "set", "gateway.port", str(before["port"] + 1))
        assert "`hermes -p fresh gateway restart`" in out
        assert tree.status("fresh")["pid"] == before["pid"]  # not restarted behind our back
