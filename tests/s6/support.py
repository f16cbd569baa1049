"""Talking to a tree's gateways: wire a profile to the fake provider, chat through it.

Apart from tests/s6/conftest.py so that other tiers (the browser's) can use these
without that module's import-time probe of the unprivileged uid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import yaml

from hermes_container.envfile import read_env
from tests.fake_upstream import FakeUpstream

WAIT = 20.0  # upper bound of every wait in this tier


def use_upstream(profile_dir: Path, upstream: FakeUpstream, **model: Any) -> None:
    """Point the profile's model at the fake provider; `model` sets more of its fields."""
    config = profile_dir / "config.yaml"
    data: dict[str, Any] = yaml.safe_load(config.read_text())
    data["model"].update(base_url=upstream.base_url, **model)
    config.write_text(yaml.safe_dump(data))  # rewritten in place: owner and mode stay


def gateway_key(profile_dir: Path) -> str:
    """The key the profile's gateway accepts."""
    return read_env(profile_dir / ".env")["API_SERVER_KEY"]


def chat(port: int, key: str, message: str = "hi", timeout: float = WAIT) -> httpx.Response:
    """One chat completion (`message` from the user) through the gateway on
    127.0.0.1:`port`."""
    return httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": message}]},
        headers={"authorization": f"Bearer {key}"},
        trust_env=False,
        timeout=timeout,
    )
