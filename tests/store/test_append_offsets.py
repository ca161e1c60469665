"""Append offsets: tracked in memory after the first append, always equal to the file's end."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tracedistill._jsonl import JsonlFile


def test_offsets_are_the_file_size_before_each_append(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"old":1}\n{"torn":')  # a torn tail, cut on opening
    with JsonlFile(path) as f:
        for i in range(20):
            offset = f.append({"i": i}, sync=i % 7 == 0)
            assert offset == path.stat().st_size - len(b'{"i":%d}\n' % i)
        assert f.append_many([{"a": 1}, {"b": 2}]) == path.stat().st_size - len(
            b'{"a":1}\n{"b":2}\n'
        )
    with JsonlFile(path) as f:  # reopened: the offset is asked of the file again
        assert f.append({"again": True}) == path.stat().st_size - len(b'{"again":true}\n')
    assert [r.get("i") for r in JsonlFile(path).records()][:3] == [None, 0, 1]


def test_one_seek_per_open_not_per_append(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seeks = []
    real = os.lseek

    def counting(fd: int, pos: int, how: int) -> int:
        seeks.append(how)
        return real(fd, pos, how)

    monkeypatch.setattr(os, "lseek", counting)
    with JsonlFile(tmp_path / "log.jsonl") as f:
        for i in range(50):
            f.append({"i": i})
    assert len(seeks) <= 1


def test_a_failed_write_makes_the_next_append_ask_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "log.jsonl"
    real = os.write
    with JsonlFile(path) as f:
        f.append({"i": 0})

        def short_then_fail(fd: int, data: bytes | memoryview) -> int:
            monkeypatch.setattr(os, "write", real)
            real(fd, bytes(data[:3]))  # part of the line reaches the file, then the write fails
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "write", short_then_fail)
        with pytest.raises(OSError):
            f.append({"i": 1})
        # The file now ends in 3 stray bytes; the next offset is where the file really ends.
        assert f.append({"i": 2}) == path.stat().st_size - len(b'{"i":2}\n')


def test_a_torn_tail_cut_while_open_resets_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    with JsonlFile(path, keep_torn=False) as f:
        f.append({"i": 0})
        good = path.stat().st_size
        with path.open("ab") as fh:  # stray bytes, as a write that failed midway leaves
            fh.write(b'{"i": 1, "tr')
        assert [line[2] for line in f.index()] == [{"i": 0}]  # cuts the tail with f's own fd
        assert path.stat().st_size == good
        assert f.append({"i": 2}) == good
    assert JsonlFile(path).records() == [{"i": 0}, {"i": 2}]


def test_short_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that takes only part of a line (a signal, a full pipe) is continued, not lost."""
    path = tmp_path / "log.jsonl"
    real = os.write
    with JsonlFile(path) as f:
        first = f.append({"i": 0})
        monkeypatch.setattr(os, "write", lambda fd, data: real(fd, bytes(data[:5])))
        second = f.append({"i": 1, "text": "x" * 40})
        third = f.append({"i": 2})
    assert (first, second) == (0, len(b'{"i":0}\n'))
    assert third == path.stat().st_size - len(b'{"i":2}\n')
    assert JsonlFile(path).records() == [{"i": 0}, {"i": 1, "text": "x" * 40}, {"i": 2}]
