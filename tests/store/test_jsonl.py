from __future__ import annotations

import os
import warnings
from pathlib import Path

import anyio
import orjson
import pytest

from tracedistill.errors import (
    RecordError,
    SchemaVersionError,
    StoreCorruptError,
    StoreError,
    UnknownProblemError,
)
from tracedistill.records import FinishReason, Problem, Verdict, VerdictReason
from tracedistill.store import Durability, JsonlTraceStore, TornWriteWarning, TraceFilter

from .conftest import make_problem, make_trace


def run(fn, *args):
    return anyio.run(fn, *args)


def verdict(trace, passed: bool, version: str = "1", verifier: str = "math") -> Verdict:
    return Verdict(
        trace_key=trace.key,
        problem_id=trace.problem_id,
        verifier=verifier,
        verifier_version=version,
        passed=passed,
        reason=VerdictReason.PASSED if passed else VerdictReason.WRONG_ANSWER,
    )


def test_write_is_idempotent_and_survives_reopen(tmp_path: Path, problems: list[Problem]) -> None:
    async def main() -> None:
        with JsonlTraceStore(tmp_path / "s") as store:
            assert await store.add_problems(problems) == 5
            assert await store.add_problems(problems) == 0
            t = make_trace(problems[0])
            assert await store.add_trace(t) is True
            assert await store.add_trace(t) is False
            assert store.has(t.key) and t.key in store
        with JsonlTraceStore(tmp_path / "s") as store:
            assert store.has(t.key)
            assert store.get(t.key) == t
            assert await store.add_trace(t) is False
            assert len(list(store.traces())) == 1
            assert len(list(store.problems())) == 5
            assert store.problem(problems[3].id) == problems[3]

    run(main)
    lines = (tmp_path / "s" / "traces.jsonl").read_bytes().splitlines()
    assert len(lines) == 1


def test_response_supersedes_failure_but_not_the_reverse(
    tmp_path: Path, problems: list[Problem]
) -> None:
    p = problems[0]
    failed = make_trace(
        p, finish_reason=FinishReason.ERROR, error="HTTP 503", reasoning="", answer=""
    )
    ok = make_trace(p)
    assert failed.key == ok.key

    async def main() -> None:
        with JsonlTraceStore(tmp_path) as store:
            await store.add_problems([p])
            assert await store.add_trace(failed)
            assert store.has_failure(failed.key) and not store.has(failed.key)
            assert await store.add_trace(failed) is False
            assert list(store.traces()) == []
            assert list(store.traces(include_failed=True)) == [failed]
            assert await store.add_trace(ok)
            assert store.has(ok.key)
            assert await store.add_trace(failed) is False
            assert store.spend_usd() == pytest.approx(0.02)  # both attempts were billed
        with JsonlTraceStore(tmp_path) as store:
            assert store.get(ok.key) == ok
            assert list(store.traces(include_failed=True)) == [ok]
            assert store.spend_usd() == pytest.approx(0.02)

    run(main)


def test_add_traces_batch_matches_single_writes(tmp_path: Path, problems: list[Problem]) -> None:
    p = problems[0]
    fail = make_trace(p, 1, finish_reason=FinishReason.ERROR, error="timeout")
    batch = [make_trace(p, 0), make_trace(p, 0), fail, make_trace(p, 1), make_trace(p, 2)]

    async def main() -> None:
        with JsonlTraceStore(tmp_path) as store:
            await store.add_problems([p])
            assert await store.add_traces(batch) == 4
            assert store.has(batch[3].key) and store.has(batch[0].key) and store.has(batch[4].key)
        with JsonlTraceStore(tmp_path) as store:
            assert [t.sample_index for t in store.traces()] == [0, 1, 2]
            assert store.get(fail.key) == batch[3]
            assert store.spend_usd() == pytest.approx(0.04)

    run(main)


def test_unknown_problem_is_refused(tmp_path: Path, problems: list[Problem]) -> None:
    async def main() -> None:
        with JsonlTraceStore(tmp_path) as store:
            with pytest.raises(UnknownProblemError, match="add the problem first"):
                await store.add_trace(make_trace(problems[0]))
            with pytest.raises(UnknownProblemError):
                await store.add_traces([make_trace(problems[0])])

    run(main)


def test_verdicts_are_separate_and_versions_coexist(
    tmp_path: Path, problems: list[Problem]
) -> None:
    async def main() -> None:
        with JsonlTraceStore(tmp_path) as store:
            await store.add_problems(problems)
            ts = [make_trace(p) for p in problems]
            await store.add_traces(ts)
            before = (tmp_path / "traces.jsonl").read_bytes()
            for i, t in enumerate(ts):
                assert await store.add_verdict(verdict(t, passed=i % 2 == 0))
            assert await store.add_verdict(verdict(ts[0], passed=False)) is False  # same version
            # a newer verifier version flips trace 1 to passed
            assert await store.add_verdict(verdict(ts[1], passed=True, version="2"))
            assert (tmp_path / "traces.jsonl").read_bytes() == before
            correct_v1 = {
                t.key for t in store.traces(correct=True, verifier="math", verifier_version="1")
            }
            assert correct_v1 == {ts[0].key, ts[2].key, ts[4].key}
            latest = {t.key for t in store.traces(correct=True, verifier="math")}
            assert latest == {ts[0].key, ts[1].key, ts[2].key, ts[4].key}
            wrong = {t.key for t in store.traces(correct=False)}
            assert wrong == {ts[3].key}
            assert len(list(store.verdicts(trace_key=ts[1].key))) == 2
        with JsonlTraceStore(tmp_path) as store:
            assert store.has_verdict(ts[1].key, "math", "2")
            assert len(list(store.verdicts())) == 6

    run(main)


def test_queries_and_stats(tmp_path: Path) -> None:
    math = [make_problem(i, source="gsm") for i in range(4)]
    code = [make_problem(i, kind="code", source="mbpp") for i in range(2)]

    async def main() -> None:
        with JsonlTraceStore(tmp_path) as store:
            await store.add_problems(math + code)
            ts = [
                make_trace(math[0], teacher="a", tokens=100),
                make_trace(math[1], teacher="a", tokens=300, finish_reason=FinishReason.LENGTH),
                make_trace(math[2], teacher="b", tokens=200),
                make_trace(
                    math[3], teacher="b", finish_reason=FinishReason.ERROR, error="x", tokens=0
                ),
                make_trace(code[0], teacher="a", tokens=50),
                make_trace(code[1], teacher="b", tokens=70),
            ]
            await store.add_traces(ts)
            await store.add_verdict(verdict(ts[0], True))
            await store.add_verdict(verdict(ts[1], False))
            await store.add_verdict(verdict(ts[4], True, verifier="code"))

            assert {t.key for t in store.traces(teacher="a")} == {ts[0].key, ts[1].key, ts[4].key}
            assert {t.key for t in store.traces(kind="code")} == {ts[4].key, ts[5].key}
            assert {t.key for t in store.traces(source="gsm")} == {ts[0].key, ts[1].key, ts[2].key}
            assert {t.key for t in store.traces(min_tokens=70, max_tokens=200)} == {
                ts[0].key,
                ts[2].key,
                ts[5].key,
            }
            assert {t.key for t in store.traces(include_truncated=False, kind="math")} == {
                ts[0].key,
                ts[2].key,
            }
            assert {t.key for t in store.traces(TraceFilter(correct=True))} == {
                ts[0].key,
                ts[4].key,
            }

            s = store.stats(kind="math")
            assert (s.count, s.failed, s.truncated, s.verified, s.passed) == (3, 1, 1, 2, 1)
            assert s.pass_rate == 0.5
            assert s.truncation_rate == pytest.approx(1 / 3)
            assert s.mean_tokens == pytest.approx(200.0)
            assert s.median_tokens == 200
            assert s.spend_usd == pytest.approx(0.04)
            with pytest.raises(TypeError, match="trace filters take"):
                list(store.traces(colour="red"))

    run(main)


def test_export_import_chat_jsonl_and_dataset(tmp_path: Path, problems: list[Problem]) -> None:
    async def main() -> None:
        with JsonlTraceStore(tmp_path / "a") as store:
            await store.add_problems(problems)
            ts = [make_trace(p) for p in problems]
            await store.add_traces(ts)
            await store.add_verdict(verdict(ts[0], True))
            assert store.export_chat_jsonl(tmp_path / "all.jsonl") == 5
            assert store.export_chat_jsonl(tmp_path / "ok.jsonl", correct=True) == 1
            ds = store.to_dataset()
            assert len(ds) == 5
            assert ds[0]["messages"][-1]["content"].startswith("<think>\n")
        row = orjson.loads((tmp_path / "ok.jsonl").read_bytes().splitlines()[0])
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        with JsonlTraceStore(tmp_path / "b") as other:
            assert await other.import_chat_jsonl(tmp_path / "all.jsonl") == 5
            assert list(other.traces()) == ts
            assert list(other.problems()) == problems
        with JsonlTraceStore(tmp_path / "c") as third:
            assert (
                await third.import_dataset(
                    ds.map(lambda r: {"problem": problems[0].to_dict()}).select([0])
                )
                == 1
            )
            imported = next(third.traces())
            assert imported.reasoning == ts[0].reasoning and imported.answer == ts[0].answer

    run(main)


def test_import_rejects_rows_without_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(
        b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n'
    )

    async def main() -> None:
        with (
            JsonlTraceStore(tmp_path / "s") as store,
            pytest.raises(RecordError, match=r"bad.jsonl:1: .*no 'problem'"),
        ):
            await store.import_chat_jsonl(bad)

    run(main)


def _store_with_traces(path: Path, n: int = 3) -> list:
    problems = [make_problem(i) for i in range(n)]
    ts = [make_trace(p) for p in problems]

    async def main() -> None:
        with JsonlTraceStore(path) as store:
            await store.add_problems(problems)
            await store.add_traces(ts)

    run(main)
    return ts


def test_torn_last_line_is_set_aside_with_warning(tmp_path: Path) -> None:
    ts = _store_with_traces(tmp_path)
    log = tmp_path / "traces.jsonl"
    good = log.read_bytes()
    log.write_bytes(good + b'{"schema": 1, "key": "abc", "prob')
    with pytest.warns(TornWriteWarning, match=r"traces.jsonl:4: the last line is incomplete"):
        store = JsonlTraceStore(tmp_path)
    with store:
        assert [t.key for t in store.traces()] == [t.key for t in ts]
    assert log.read_bytes() == good
    assert (tmp_path / "traces.jsonl.torn").read_bytes().startswith(b'{"schema": 1, "key": "abc"')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        JsonlTraceStore(tmp_path).close()  # clean now


def test_complete_record_missing_only_its_newline_is_kept(tmp_path: Path) -> None:
    ts = _store_with_traces(tmp_path)
    log = tmp_path / "traces.jsonl"
    log.write_bytes(log.read_bytes().rstrip(b"\n"))
    with JsonlTraceStore(tmp_path) as store:
        assert len(list(store.traces())) == 3
        extra = make_problem(99)

        async def add() -> None:
            await store.add_problems([extra])
            await store.add_trace(make_trace(extra))

        run(add)
    with JsonlTraceStore(tmp_path) as store:
        assert len(list(store.traces())) == 4
    assert ts


def test_corrupt_middle_line_names_file_and_line_and_changes_nothing(tmp_path: Path) -> None:
    _store_with_traces(tmp_path)
    log = tmp_path / "traces.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    lines[1] = b"garbage\n"
    corrupted = b"".join(lines)
    log.write_bytes(corrupted)
    with pytest.raises(StoreCorruptError, match=r"traces.jsonl:2: not a valid record") as info:
        JsonlTraceStore(tmp_path)
    assert info.value.line == 2
    assert log.read_bytes() == corrupted
    # the lock was released: the store can be opened again after the fix
    lines[1] = b""
    log.write_bytes(b"".join(lines))
    with JsonlTraceStore(tmp_path) as store:
        assert len(list(store.traces())) == 2


def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    _store_with_traces(tmp_path, 1)
    log = tmp_path / "problems.jsonl"
    rec = orjson.loads(log.read_bytes())
    rec["schema"] = 99
    log.write_bytes(orjson.dumps(rec) + b"\n")
    with pytest.raises(SchemaVersionError, match=r"problems.jsonl:1: record has schema version 99"):
        JsonlTraceStore(tmp_path)


def test_single_writer_lock_and_readonly(tmp_path: Path) -> None:
    _store_with_traces(tmp_path)
    with JsonlTraceStore(tmp_path):
        with pytest.raises(StoreError, match="another process has this store open"):
            JsonlTraceStore(tmp_path)
        with JsonlTraceStore(tmp_path, readonly=True) as ro:
            assert len(list(ro.traces())) == 3

            async def write() -> None:
                await ro.add_problems([make_problem(100)])

            with pytest.raises(StoreError, match="read-only"):
                run(write)
    with pytest.raises(StoreError, match="no trace store"):
        JsonlTraceStore(tmp_path / "missing", readonly=True)


def test_closed_store_refuses_writes(tmp_path: Path) -> None:
    store = JsonlTraceStore(tmp_path)
    store.close()
    store.close()

    async def write() -> None:
        await store.add_problems([make_problem(1)])

    with pytest.raises(StoreError, match="closed"):
        run(write)
    assert "closed" in repr(store)


@pytest.mark.parametrize("durability", list(Durability))
def test_durability_policies_write_everything(tmp_path: Path, durability: Durability) -> None:
    problems = [make_problem(i) for i in range(20)]

    async def main() -> None:
        with JsonlTraceStore(tmp_path, durability=durability, fsync_interval=0.001) as store:
            await store.add_problems(problems)
            async with anyio.create_task_group() as tg:
                for p in problems:
                    tg.start_soon(store.add_trace, make_trace(p))

    run(main)
    with JsonlTraceStore(tmp_path) as store:
        assert len(list(store.traces())) == 20


async def test_aopen_runs_off_loop(tmp_path: Path) -> None:
    await anyio.to_thread.run_sync(_store_with_traces, tmp_path)
    store = await JsonlTraceStore.aopen(tmp_path)
    async with store:
        assert len(store) == 3


def test_lines_are_plain_json_per_record(tmp_path: Path) -> None:
    _store_with_traces(tmp_path)
    for name in ("problems", "traces"):
        for line in (tmp_path / f"{name}.jsonl").read_bytes().splitlines():
            assert orjson.loads(line)["schema"] == 1
    assert os.path.exists(tmp_path / ".lock")


def test_integers_beyond_64_bits_round_trip_exactly(tmp_path: Path) -> None:
    # 14 MBPP+ tasks hold such integers; orjson alone would refuse or turn them into floats.
    big = 2**100 + 7
    problem = Problem(
        kind="code",
        prompt="Write f.",
        tests={
            "function": {
                "entry_point": "f",
                "base_inputs": [[big], [-(2**70)]],
                "expected_base": [big + 1, -(2**70) + 1],
            }
        },
    )

    async def main() -> None:
        with JsonlTraceStore(tmp_path) as store:
            await store.add_problems([problem])
            await store.add_trace(make_trace(problem, metadata={"n": big}))

    run(main)
    with JsonlTraceStore(tmp_path, readonly=True) as store:
        back = store.problem(problem.id)
        assert back == problem
        assert back is not None and back.tests is not None and back.tests.function is not None
        assert back.tests.function.base_inputs[0] == [big]
        assert isinstance(back.tests.function.expected_base[0], int)  # type: ignore[index]
        assert next(store.traces()).metadata == {"n": big}
        assert list(store.problems()) == [problem]


def test_add_trace_nowait_writes_now_or_nothing(tmp_path: Path) -> None:
    problems = [make_problem(i) for i in range(3)]

    async def main() -> None:
        with JsonlTraceStore(tmp_path / "p") as store:
            await store.add_problems(problems)
            t = make_trace(problems[0])
            assert store.add_trace_nowait(t) is True and store.has(t.key)
            assert store.add_trace_nowait(t) is False  # stored once, as add_trace would
            assert await store.add_trace(t) is False
            with pytest.raises(UnknownProblemError):
                store.add_trace_nowait(make_trace(make_problem(99)))
        with JsonlTraceStore(tmp_path / "a", durability=Durability.ALWAYS) as store:
            await store.add_problems(problems)
            # an fsync is due after every write: it must wait, so it writes nothing now
            with pytest.raises(anyio.WouldBlock):
                store.add_trace_nowait(make_trace(problems[1]))
            assert len(store) == 0
            assert await store.add_trace(make_trace(problems[1])) is True
        with JsonlTraceStore(
            tmp_path / "i", durability=Durability.INTERVAL, fsync_interval=3600
        ) as store:
            await store.add_problems(problems)
            assert store.add_trace_nowait(make_trace(problems[2])) is True  # no fsync due yet

    run(main)
    with JsonlTraceStore(tmp_path / "p") as store:
        assert [t.key for t in store.traces()] == [make_trace(problems[0]).key]
    lines = (tmp_path / "p" / "traces.jsonl").read_bytes().splitlines(keepends=True)
    with JsonlTraceStore(tmp_path / "p") as store:
        trace = next(iter(store.traces()))
    # the line written is exactly to_dict's JSON (what the header regex and readers expect)
    assert lines == [orjson.dumps(trace.to_dict(), option=orjson.OPT_APPEND_NEWLINE)]
