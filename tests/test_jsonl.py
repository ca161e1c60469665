"""The append-only JSONL helper: torn last lines cut before appending, atomic whole-file writes."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import anyio
import orjson
import pytest

from tracedistill import _json
from tracedistill._jsonl import JsonlFile, TornWriteWarning, scan, write_atomic, write_json_atomic
from tracedistill.errors import StoreCorruptError, StoreError
from tracedistill.evaluation import EvalLog, EvalStore
from tracedistill.records import Trace, Verdict
from tracedistill.store import JsonlTraceStore


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def test_append_and_read_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "log.jsonl"
    with JsonlFile(path) as f:
        first = f.append({"a": 1})
        second = f.append_many([{"a": 2}, {"a": 3, "big": 2**70}], sync=True)
    assert (first, second) == (0, len(b'{"a":1}\n'))
    assert JsonlFile(path).records() == [{"a": 1}, {"a": 2}, {"a": 3, "big": 2**70}]
    lines, torn = JsonlFile(path).read()
    assert torn is None
    assert [(line.number, line.offset) for line in lines] == [(1, 0), (2, 8), (3, 16)]


@pytest.mark.parametrize(
    "tail",
    [b'{"step": 4, "sampl', b'{"step": 4, "sampl\n', b"\x00\x00\x00\x00", b"garbage\n"],
)
def test_torn_last_line_is_cut_before_appending(tmp_path: Path, tail: bytes) -> None:
    path = tmp_path / "log.jsonl"
    _write(path, b'{"step":1}\n{"step":2}\n' + tail)
    reader = JsonlFile(path)
    # Reading skips the torn line and does not change the file.
    assert reader.records() == [{"step": 1}, {"step": 2}]
    assert path.read_bytes().endswith(tail)
    writer = JsonlFile(path)
    writer.append({"step": 3})
    writer.append({"step": 4})
    writer.close()
    # Every record appended after the crash is visible; the torn bytes are kept aside.
    assert JsonlFile(path).records() == [{"step": s} for s in (1, 2, 3, 4)]
    assert (tmp_path / "log.jsonl.torn").read_bytes() == tail.rstrip(b"\n") + b"\n"


def test_valid_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    _write(path, b'{"step":1}\n{"step":2}')
    assert JsonlFile(path).repair() is None
    assert path.read_bytes() == b'{"step":1}\n{"step":2}\n'
    with JsonlFile(path) as f:
        f.append({"step": 3})
    assert JsonlFile(path).records() == [{"step": 1}, {"step": 2}, {"step": 3}]
    assert not (tmp_path / "log.jsonl.torn").exists()


def test_torn_tail_longer_than_a_read_chunk(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    tail = b'{"text": "' + b"x" * 200_000  # the line spans several backward reads
    _write(path, b'{"step":1}\n' + tail)
    torn = JsonlFile(path, keep_torn=False).repair()
    assert torn is not None and torn.offset == len(b'{"step":1}\n')
    assert path.read_bytes() == b'{"step":1}\n'
    assert not (tmp_path / "log.jsonl.torn").exists()


def test_corrupt_middle_line_is_an_error_unless_salvaged(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    # What a writer that did not cut a torn line leaves: the next record glued onto it.
    _write(path, b'{"step":1}\n{"step": 2, "sam{"step":3}\n{"step":4}\n')
    with pytest.raises(StoreCorruptError, match=r"log.jsonl:2"):
        JsonlFile(path).records()
    assert JsonlFile(path).records(salvage=True) == [{"step": 1}, {"step": 3}, {"step": 4}]
    with pytest.raises(StoreCorruptError):
        scan(b'{"a":1}\nnot json\n{"a":2}\n', path)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    assert JsonlFile(tmp_path / "missing.jsonl").records() == []
    assert JsonlFile(tmp_path / "missing.jsonl").repair() is None
    (tmp_path / "empty.jsonl").write_bytes(b"")
    assert JsonlFile(tmp_path / "empty.jsonl").records() == []
    with pytest.raises(ValueError, match="newline"):
        JsonlFile(tmp_path / "x.jsonl").append_bytes(b'{"a":1}')


def test_atomic_writes_replace_whole_files_or_nothing(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "data.json"
    write_json_atomic(path, {"a": 1, "big": 2**70})
    assert b'"big"' in path.read_bytes()
    assert write_atomic(path, [b"one ", b"two"]) == 7
    assert path.read_bytes() == b"one two"

    def chunks() -> list[bytes]:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, (c for c in chunks()))
    assert path.read_bytes() == b"one two"  # the old file is intact
    assert sorted(os.listdir(path.parent)) == ["data.json"]  # no temporary file left


# --- files written before the trace store and the evaluation log moved onto JsonlFile ----------

_V1 = Path(__file__).parent / "fixtures" / "jsonl_v1"  # written by the earlier code paths


def test_store_written_by_the_old_code_opens_and_appends_byte_identically(tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(_V1 / "store", old)
    with JsonlTraceStore(old) as store:
        problems = list(store.problems())
        traces = list(store.traces(include_failed=True))
        verdicts = list(store.verdicts())
        assert (len(problems), len(traces), len(verdicts)) == (3, 3, 1)
        assert len(store) == 3 and store.spend_usd() == pytest.approx(0.03)
        assert any(t.metadata.get("n") == 2**70 for t in traces)  # exact beyond 64 bits
        superseded = store.get(traces[1].key)
        assert superseded is not None and superseded.ok  # the response, not the failure
    # Writing the same records with today's code gives the same bytes.
    raw_traces = [orjson.loads(line) for line in (old / "traces.jsonl").read_bytes().splitlines()]
    assert len(raw_traces) == 4

    async def rewrite() -> None:
        with JsonlTraceStore(tmp_path / "new") as new:
            await new.add_problems(problems)
            for line in (old / "traces.jsonl").read_bytes().splitlines():
                await new.add_trace(Trace.from_dict(_json.loads(line)))
            for verdict in verdicts:
                assert isinstance(verdict, Verdict)
                await new.add_verdict(verdict)

    anyio.run(rewrite)
    for name in ("problems", "traces", "verdicts"):
        written = (tmp_path / "new" / f"{name}.jsonl").read_bytes()
        assert written == (_V1 / "store" / f"{name}.jsonl").read_bytes(), name


def test_evaluation_log_written_by_the_old_code_opens_and_appends_byte_identically(
    tmp_path: Path,
) -> None:
    shutil.copytree(_V1 / "run", tmp_path / "run")
    result = EvalStore(tmp_path / "run").load("base", "B")
    assert (result.n, result.correct) == (2, 1)
    path = EvalStore(tmp_path / "run").path_for("base", "B")
    log = EvalLog.read(path)
    assert set(log.samples) == set(log.grades) == {"p0", "p1"}
    records = JsonlFile(path).records()
    with JsonlFile(tmp_path / "again.jsonl") as again:
        for record in records:
            again.append(record)
    assert (tmp_path / "again.jsonl").read_bytes() == path.read_bytes()


def test_index_read_at_and_iter_from_offsets(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    _write(path, b'{"id":"a","n":1}\n{"n":2}\n\n{"id":"c","n":3}\n{"id":"d", "n"')
    header = re.compile(rb'^\{"id":"([a-z])",[^\n]*\}\n', re.MULTILINE)
    reader = JsonlFile(path, warn=True, readonly=True)
    with pytest.warns(TornWriteWarning, match=r"log.jsonl:5: the last line is incomplete"):
        indexed = list(reader.index(header=header))
    assert indexed == [(0, 0, (b"a",)), (2, 17, {"n": 2}), (0, 26, (b"c",))]
    assert path.read_bytes().endswith(b'"n"')  # read-only: nothing changed
    assert reader.read_at(26) == {"id": "c", "n": 3}
    assert list(reader.iter_from(17)) == [(17, {"n": 2}), (26, {"id": "c", "n": 3})]
    with pytest.raises(StoreError, match="read-only"):
        reader.append({"n": 4})
    writer = JsonlFile(path, warn=True)
    with pytest.warns(TornWriteWarning):
        assert len(list(writer.index(header=header))) == 3  # and the torn line is cut
    assert writer.append({"n": 4}) == 43
    writer.close()
    assert [r["n"] for r in JsonlFile(path).records()] == [1, 2, 3, 4]
    _write(path, b'{"n":1}\n{"n":2}\nbad\n{"n":4}\n')
    with pytest.raises(StoreCorruptError, match=r"log.jsonl:3:"):
        list(JsonlFile(path).iter_from(8))  # numbered from the start of the file
