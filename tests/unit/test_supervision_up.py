"""S6Manager.up: `u` written to each slot's control FIFO, failures named per slot.

A reader held open on a slot's supervise/control stands in for its s6-supervise (the
real-s6 tier boots real trees through the same code: tests/s6/test_container_restart.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hermes_container.errors import HermesError
from hermes_container.home import HermesHome
from hermes_container.supervision.history import History, read_history, write_history
from hermes_container.supervision.s6 import S6Manager, send_control


def _slot(scandir: Path, profile: str) -> Path:
    slot = scandir / f"gateway-{profile}"
    (slot / "supervise").mkdir(parents=True)
    (slot / "supervise" / "status").write_bytes(b"")
    os.mkfifo(slot / "supervise" / "control")
    (slot / "data").mkdir()
    (slot / "down").touch()
    (slot / "data" / "parked").write_text("crashed\n")
    write_history(slot, History(restarts=4, deaths=[1.0, 2.0]))
    return slot


def _listen(slot: Path) -> int:
    return os.open(slot / "supervise" / "control", os.O_RDONLY | os.O_NONBLOCK)


@pytest.fixture
def readers() -> Iterator[list[int]]:
    fds: list[int] = []
    yield fds
    for fd in fds:
        os.close(fd)


def test_each_slot_gets_u_and_is_reset(tmp_path: Path, readers: list[int]) -> None:
    scandir = tmp_path / "service"
    slots = {p: _slot(scandir, p) for p in "abc"}
    readers.extend(_listen(slots[p]) for p in "abc")
    manager = S6Manager(HermesHome(tmp_path / "home"), scandir)
    assert manager.up(["a", "b", "c"]) == {"a": None, "b": None, "c": None}
    assert [os.read(fd, 16) for fd in readers] == [b"u", b"u", b"u"]
    for slot in slots.values():
        assert not (slot / "down").exists(), "a restarted supervisor must bring it up too"
        assert not (slot / "data" / "parked").exists()
        assert read_history(slot).deaths == [] and read_history(slot).restarts == 4


def test_an_unsupervised_slot_is_named_and_the_others_still_start(
    tmp_path: Path, readers: list[int]
) -> None:
    scandir = tmp_path / "service"
    slots = {p: _slot(scandir, p) for p in "abc"}
    readers.extend(_listen(slots[p]) for p in "ac")  # nobody supervises b
    manager = S6Manager(HermesHome(tmp_path / "home"), scandir)
    errors = manager.up(["a", "b", "c"])
    assert errors == {
        "a": None,
        "b": f"cannot control {slots['b']}: supervisor not listening",
        "c": None,
    }
    assert [os.read(fd, 16) for fd in readers] == [b"u", b"u"]


def test_send_control_without_a_supervise_dir(tmp_path: Path) -> None:
    with pytest.raises(HermesError, match=r"^cannot control .*: supervisor not listening$"):
        send_control(tmp_path, "u")


def test_nothing_to_start(tmp_path: Path) -> None:
    assert S6Manager(HermesHome(tmp_path), tmp_path).up([]) == {}


def test_prepare_up_resets_and_checks_without_starting_anything(
    tmp_path: Path, readers: list[int]
) -> None:
    """Boot's first half: every slot reset and its supervisor found listening, no `u` yet
    (the reconciler writes its records in between); send_up is the second half."""
    scandir = tmp_path / "service"
    slots = {p: _slot(scandir, p) for p in "ab"}
    readers.append(_listen(slots["a"]))  # nobody supervises b
    manager = S6Manager(HermesHome(tmp_path / "home"), scandir)
    errors = manager.prepare_up(["a", "b"])
    assert errors == {"a": None, "b": f"cannot control {slots['b']}: supervisor not listening"}
    for slot in slots.values():
        assert not (slot / "down").exists() and not (slot / "data" / "parked").exists()
    assert os.read(readers[0], 16) == b""  # nothing sent yet
    assert manager.send_up(["a"]) == {"a": None}
    assert os.read(readers[0], 16) == b"u"
