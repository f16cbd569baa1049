"""One rule for what a port is: environment variables, config.yaml and --port agree."""

from __future__ import annotations

import pytest

from hermes_container.config import ProfileConfig, env_port, is_port, parse_port, scan_port
from hermes_container.errors import ConfigError

PORTS = [1, 80, 8642, 65535]
NOT_PORTS = [0, -1, 65536, 70000, True, False, None, "8642", 8642.0]


@pytest.mark.parametrize("value", PORTS)
def test_ports(value: int) -> None:
    assert is_port(value)
    assert parse_port("X", str(value)) == value
    assert ProfileConfig({"gateway": {"port": value}}).port == value
    assert scan_port(f"gateway:\n  port: {value}\n") == value


@pytest.mark.parametrize("value", NOT_PORTS)
def test_not_ports(value: object) -> None:
    assert not is_port(value)
    assert ProfileConfig({"gateway": {"port": value}}).port is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [("abc", "X='abc' is not a port number"), ("0", "X=0 is outside"), ("70000", "X=70000")],
)
def test_parse_port_names_the_variable(raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_port("X", raw)


def test_env_port_default_when_unset_or_empty() -> None:
    assert env_port("X", 9119, {}) == 9119
    assert env_port("X", 9119, {"X": "  "}) == 9119
    assert env_port("X", 9119, {"X": " 9200 "}) == 9200
    with pytest.raises(ConfigError, match="X='nope' is not a port number"):
        env_port("X", 9119, {"X": "nope"})
