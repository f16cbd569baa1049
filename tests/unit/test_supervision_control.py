"""s6 control FIFOs driven without an exec: what s6-svok, s6-svscanctl and s6-svc do,
done in-process (hermes_container.supervision.scandir / s6).

A reader held open on a FIFO stands in for the s6-svscan or s6-supervise that reads it;
the real-s6 tier runs the same code against real supervisors (tests/s6/).
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hermes_container.errors import HermesError
from hermes_container.home import HermesHome
from hermes_container.supervision import s6
from hermes_container.supervision.s6 import S6Manager, send_control
from hermes_container.supervision.scandir import control_fifo, has_reader, svscan_alive


@pytest.fixture
def readers() -> Iterator[list[int]]:
    fds: list[int] = []
    yield fds
    for fd in fds:
        os.close(fd)


def _fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def _listen(fifo: Path) -> int:
    return os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)


def test_has_reader_tells_a_listened_fifo_from_a_silent_or_missing_one(
    tmp_path: Path, readers: list[int]
) -> None:
    fifo = _fifo(tmp_path / "supervise" / "control")
    assert not has_reader(tmp_path / "nowhere" / "control")
    assert not has_reader(fifo)  # nobody reads it: ENXIO, as s6-svc sees it
    readers.append(_listen(fifo))
    assert has_reader(fifo)


def test_svscan_alive_follows_the_scanner_control_fifo(tmp_path: Path, readers: list[int]) -> None:
    fifo = _fifo(control_fifo(tmp_path))
    assert not svscan_alive(tmp_path)
    readers.append(_listen(fifo))
    assert svscan_alive(tmp_path)


def test_rescan_writes_what_s6_svscanctl_writes(tmp_path: Path, readers: list[int]) -> None:
    readers.append(_listen(_fifo(control_fifo(tmp_path))))
    manager = S6Manager(HermesHome(tmp_path / "home"), tmp_path)
    manager.rescan()
    manager.rescan(prune=True)
    assert os.read(readers[0], 16) == b"aan"  # `-a`, then `-an`


def test_rescan_without_a_scanner_is_one_clear_error(tmp_path: Path) -> None:
    _fifo(control_fifo(tmp_path))
    manager = S6Manager(HermesHome(tmp_path / "home"), tmp_path)
    with pytest.raises(HermesError, match=r"^cannot control .*: supervisor not listening$"):
        manager.rescan()


def test_supervised_is_a_reader_on_the_slot_control_fifo(
    tmp_path: Path, readers: list[int]
) -> None:
    slot = tmp_path / "gateway-a"
    fifo = _fifo(slot / "supervise" / "control")
    manager = S6Manager(HermesHome(tmp_path / "home"), tmp_path)
    assert not manager._supervised(slot)
    assert not manager._supervised(tmp_path / "gateway-missing")
    readers.append(_listen(fifo))
    assert manager._supervised(slot)


def test_wait_supervised_needs_a_status_file_and_a_reader_for_slot_and_logger(
    tmp_path: Path, readers: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a fresh s6-supervise leaves once it runs: its control FIFO read, then
    supervise/status written; the wait covers the slot and its logger."""
    slots = [tmp_path / f"gateway-{p}" for p in "ab"]
    for slot in slots:
        for path in (slot, slot / "log"):
            readers.append(_listen(_fifo(path / "supervise" / "control")))
            (path / "supervise" / "status").write_bytes(b"")
    manager = S6Manager(HermesHome(tmp_path / "home"), tmp_path)
    manager._wait_supervised(slots)  # returns: all four are live

    (slots[1] / "log" / "supervise" / "status").unlink()  # that logger never started
    monkeypatch.setattr(s6, "SVOK_TIMEOUT", 0.2)
    monkeypatch.setattr(s6, "SVOK_TIMEOUT_PER_SLOT", 0.0)
    with pytest.raises(HermesError, match=r"s6-supervise is not running on .*gateway-b/log"):
        manager._wait_supervised(slots)

    os.close(readers.pop(0))  # gateway-a's supervisor is gone: its status file stays
    (slots[1] / "log" / "supervise" / "status").write_bytes(b"")
    with pytest.raises(HermesError, match=r"s6-supervise is not running on .*gateway-a after"):
        manager._wait_supervised(slots)


def test_a_symlink_or_a_file_in_place_of_a_control_fifo_is_never_written(tmp_path: Path) -> None:
    """The scandir belongs to the user the gateways run as: whoever drives s6 must not
    be steered into writing `u` into some other file."""
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    slot = tmp_path / "gateway-a"
    (slot / "supervise").mkdir(parents=True)
    (slot / "supervise" / "control").symlink_to(victim)
    with pytest.raises(HermesError, match=r"^cannot control .*gateway-a: "):
        send_control(slot, "u")
    (slot / "supervise" / "control").unlink()
    (slot / "supervise" / "control").write_text("")
    with pytest.raises(HermesError, match=r"^cannot control .*gateway-a: not a FIFO$"):
        send_control(slot, "u")
    assert victim.read_text() == "keep\n"
    assert (slot / "supervise" / "control").read_text() == ""


def test_prepare_up_names_a_slot_whose_control_is_not_a_fifo(
    tmp_path: Path, readers: list[int]
) -> None:
    good, bad = tmp_path / "gateway-good", tmp_path / "gateway-bad"
    readers.append(_listen(_fifo(good / "supervise" / "control")))
    (bad / "supervise").mkdir(parents=True)
    (bad / "supervise" / "control").write_text("")
    manager = S6Manager(HermesHome(tmp_path / "home"), tmp_path)
    assert manager.prepare_up(["bad", "good"]) == {
        "bad": f"cannot control {bad}: not a FIFO",
        "good": None,
    }


def test_register_rescans_for_a_slot_renamed_by_a_registration_killed_before_its_rescan(
    tmp_path: Path, readers: list[int]
) -> None:
    """A registration killed between the rename and the rescan leaves a complete slot
    that no supervisor runs on: the next register asks s6-svscan to look again, and
    waits. The stand-in scanner starts "supervisors" when it reads the rescan."""
    scanner = _listen(_fifo(control_fifo(tmp_path)))
    readers.append(scanner)
    slot = tmp_path / "gateway-late"
    for path in (slot, slot / "log"):
        _fifo(path / "supervise" / "control")
    seen: list[bytes] = []

    def scan() -> None:
        poller = select.poll()
        poller.register(scanner, select.POLLIN)
        if poller.poll(10_000):
            seen.append(os.read(scanner, 16))
            for path in (slot, slot / "log"):
                readers.append(_listen(path / "supervise" / "control"))
                (path / "supervise" / "status").write_bytes(b"")

    keep = os.open(control_fifo(tmp_path), os.O_WRONLY | os.O_NONBLOCK)  # no hangup
    scanner_thread = threading.Thread(target=scan)
    scanner_thread.start()
    try:
        manager = S6Manager(HermesHome(tmp_path / "home"), tmp_path)
        assert manager.register(["late"]) == {"late": None}
    finally:
        scanner_thread.join(15)
        os.close(keep)
    assert seen == [b"a"]
