"""Reading the last lines of a file from its end (hermes_container.tail)."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest

from hermes_container import tail
from hermes_container.tail import last_lines, lines_backwards


def _reference(data: bytes, max_bytes: int | None) -> list[str]:
    """What a whole read says: the window's lines, from its first newline on if the
    window starts inside a line."""
    start = 0 if max_bytes is None else max(0, len(data) - max_bytes)
    if start > 0 and data[start - 1 : start] != b"\n":
        newline = data.find(b"\n", start)
        start = len(data) if newline < 0 else newline + 1
    return data[start:].decode("utf-8", "replace").splitlines()[::-1]


def test_unreadable_files_have_no_lines(tmp_path: Path) -> None:
    assert list(lines_backwards(tmp_path / "missing")) == []
    assert list(lines_backwards(tmp_path)) == []  # a directory
    (tmp_path / "empty").write_bytes(b"")
    assert last_lines([tmp_path / "empty"], 5) == []


def test_lines_newest_first(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"one\n\ntwo\r\nthree")  # an empty line, CRLF, no final newline
    assert list(lines_backwards(path)) == ["three", "two", "", "one"]
    assert last_lines([path], 2) == ["two", "three"]
    assert last_lines([path], 0) == [] and last_lines([path], -1) == []


def test_a_bounded_read_drops_only_a_cut_line(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"aaaa\nbbbb\ncccc\n")
    assert list(lines_backwards(path, 12)) == ["cccc", "bbbb"]  # starts inside "aaaa"
    assert list(lines_backwards(path, 10)) == ["cccc", "bbbb"]  # starts at "bbbb"
    assert list(lines_backwards(path, 3)) == []  # all inside "cccc"
    assert list(lines_backwards(path, 100)) == ["cccc", "bbbb", "aaaa"]


def test_bad_utf8_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"ok\n\xff\xfe bad\n")
    assert list(lines_backwards(path)) == ["\ufffd\ufffd bad", "ok"]


def test_files_read_as_one_log(tmp_path: Path) -> None:
    old, current = tmp_path / "@1.s", tmp_path / "current"
    old.write_text("old1\nold2\n")
    current.write_text("new1\nnew2\n")
    assert last_lines([old, current], 3) == ["old2", "new1", "new2"]
    assert last_lines([old, tmp_path / "gone", current], 10) == ["old1", "old2", "new1", "new2"]


def test_reads_only_what_it_needs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tail, "BLOCK", 16)
    path = tmp_path / "log"
    path.write_bytes(b"x" * 10_000 + b"\nlast\n")
    read: list[int] = []

    class Counting(io.BufferedReader):
        def read(self, size: int | None = -1) -> bytes:
            data = super().read(size)
            read.append(len(data))
            return data

    def counting_open(file: Path, mode: str) -> Counting:
        assert mode == "rb"
        return Counting(io.FileIO(file, mode))

    monkeypatch.setattr(tail, "open", counting_open, raising=False)  # shadows the builtin
    assert last_lines([path], 1) == ["last"]
    assert read == [16], "one block from the end, no more"


@pytest.mark.parametrize("seed", range(40))
def test_agrees_with_a_whole_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    rng = random.Random(seed)
    monkeypatch.setattr(tail, "BLOCK", rng.choice([1, 2, 3, 7, 64]))
    pieces = [b"a", b"bc", b"\n", b"\n", b"\r\n", b"\r", "é".encode(), "€".encode(), b"\xff"]
    data = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 80)))
    path = tmp_path / "log"
    path.write_bytes(data)
    for max_bytes in (None, 0, 1, 5, 17, len(data), len(data) + 3):
        assert list(lines_backwards(path, max_bytes)) == _reference(data, max_bytes), (
            data,
            max_bytes,
        )
