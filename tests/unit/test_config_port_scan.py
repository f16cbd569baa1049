"""The PyYAML-free port scan agrees with a real YAML parse, or defers to it."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from hermes_container.config import UNSURE, load_config, read_port, render_config, scan_port
from hermes_container.errors import ConfigError

AGREE = [
    render_config(8643),
    "gateway:\n  port: 9000\n",
    "gateway:\n    port: 9000   # four-space indent, trailing comment\n",
    "# top comment\nmodel:\n  name: x\n  base_url: https://h/v1#frag\ngateway:\n  host: 0.0.0.0\n"
    "  port: 12345\n  nested:\n    port: 1\n",
    "model:\n  port: 5\n",  # a port that is not the gateway's
    "gateway:\n  host: 127.0.0.1\n",
    "gateway:\n  port: 99999\n",  # out of range: no port, as load_config says
    "",
    "# only a comment\n",
    "gateway:\n\n  # blank line and comment inside the block\n  port: 8700\n",
    "model:\n  name: gpt\ngateway:\n  port: 8001\nextra:\n  port: 7\n",
    "gateway:\n  port:\n",  # null: no port either way
]

UNSURE_CASES = [
    'gateway:\n  port: "9000"\n',  # quoted: a string for YAML
    "gateway: {port: 9000}\n",
    "base: &b\n  port: 1\ngateway:\n  <<: *b\n",
    "gateway:\n  port: 0x2000\n",
    "gateway:\n  port: 8_643\n",
    "gateway:\n  port: 08643\n",
    "gateway:\n  port: 9000\ngateway:\n  port: 9001\n",  # duplicate key: YAML keeps the last
    "gateway:\n  port: 9000\n  port: 9001\n",
    "gateway:\n\tport: 9000\n",
    "gateway:\n  port: !!int 9000\n",
    "---\ngateway:\n  port: 9000\n",
    "gateway:\n   host: a\n  port: 9000\n",  # inconsistent indentation
    "- a\n- b\n",
    "\ufeffgateway:\n  port: 9000\n",
]


@pytest.mark.parametrize("text", AGREE)
def test_scan_agrees_with_yaml(tmp_path: Path, text: str) -> None:
    (tmp_path / "config.yaml").write_text(text)
    scanned = scan_port(text)
    assert scanned is not UNSURE
    assert scanned == load_config(tmp_path).port


@pytest.mark.parametrize("text", UNSURE_CASES)
def test_scan_defers_what_it_does_not_model(tmp_path: Path, text: str) -> None:
    assert scan_port(text) is UNSURE
    (tmp_path / "config.yaml").write_text(text)
    try:
        expected = load_config(tmp_path).port
    except ConfigError:
        with pytest.raises(ConfigError):
            read_port(tmp_path)
        return
    assert read_port(tmp_path) == expected


def test_missing_file_has_no_port(tmp_path: Path) -> None:
    assert read_port(tmp_path) is None


def test_random_mutations_never_disagree(tmp_path: Path) -> None:
    """Whatever the scan answers for a mangled config, a real parse answers the same."""
    rng = random.Random(1234)
    base = render_config(8643) + "extra:\n  port: 1\n"
    alphabet = " \n:#-_0123456789abcport\"'{}[]&*!|>\t"
    checked = 0
    for _ in range(1500):
        chars = list(base)
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(chars))
            op = rng.random()
            if op < 0.4:
                chars[pos] = rng.choice(alphabet)
            elif op < 0.7:
                chars.insert(pos, rng.choice(alphabet))
            else:
                del chars[pos]
        text = "".join(chars)
        scanned = scan_port(text)
        if scanned is UNSURE:
            continue
        (tmp_path / "config.yaml").write_text(text)
        try:
            expected = load_config(tmp_path).port
        except ConfigError:
            pytest.fail(f"scan answered {scanned!r} for malformed YAML:\n{text}")
        assert scanned == expected, text
        checked += 1
    assert checked > 300  # the scan answered for most mutations, and always agreed
