from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from tracedistill.errors import ConfigurationError
from tracedistill.problems import (
    Decontaminator,
    MathSource,
    SkipReason,
    by_difficulty,
    by_length,
    by_source,
    extract_boxed,
    numina_math,
    openr1_math,
    read_benchmark_texts,
    where,
)
from tracedistill.records import TaskKind

from .conftest import MATH500, CountingChecker, write_jsonl, write_parquet


def _rows(n: int, *, bad_every: int = 0) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        answer = f"BAD{i}" if bad_every and i % bad_every == 0 else str(i * 7 % 101)
        rows.append(
            {
                "problem": f"Problem number {i}: compute the value of item {i} times seven mod 11.",
                "answer": answer,
                "source": ["olympiads", "amc_aime", "cn_contest"][i % 3],
                "uuid": f"id-{i:05d}",
                "level": i % 5 + 1,
            }
        )
    return rows


def test_extract_boxed() -> None:
    assert extract_boxed(r"so \boxed{\frac{1}{2}} and finally \boxed{42}.") == "42"
    assert extract_boxed(r"answer: \boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert extract_boxed(r"$\boxed 7$") == "7"
    assert extract_boxed(r"\fbox{x+1}") == "x+1"
    assert extract_boxed(r"\boxed{unclosed") is None
    assert extract_boxed("no box") is None


def test_ids_from_source_column_else_content_hash(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", _rows(3))
    with_ids = list(MathSource.from_files(path, name="mine", id_field="uuid", check_golds=False))
    assert [p.id for p in with_ids] == ["mine/id-00000", "mine/id-00001", "mine/id-00002"]
    hashed = list(MathSource.from_files(path, name="mine", check_golds=False))
    assert all(p.id.startswith("math-") for p in hashed)
    again = list(MathSource.from_files(path, name="mine", check_golds=False))
    assert [p.id for p in hashed] == [p.id for p in again]
    assert hashed[0].kind is TaskKind.MATH and hashed[0].answer == "0"


def test_openr1_layout_and_numina_layout(tmp_path: Path) -> None:
    write_parquet(
        tmp_path / "openr1" / "data" / "train-00000-of-00001.parquet",
        [
            {
                "problem": "Find x.",
                "solution": "x = 3",
                "answer": "3",
                "problem_type": "Algebra",
                "question_type": "math-word-problem",
                "source": "olympiads",
                "uuid": "a1",
                "generations": ["long trace " * 50],
            }
        ],
    )
    (problem,) = list(openr1_math(tmp_path / "openr1", check_golds=False))
    assert problem.id == "openr1-math/a1" and problem.answer == "3"
    assert problem.metadata["problem_type"] == "Algebra"
    assert "generations" not in problem.metadata

    def numina_row(problem: str, solution: str, answer: str | None, **over: Any) -> dict[str, Any]:
        row = {
            "problem": problem,
            "solution": solution,
            "answer": answer,
            "question_type": "math-word-problem",
            "problem_is_valid": "Yes",
            "solution_is_valid": "Yes",
            "source": "aops",
            "synthetic": False,
        }
        return {**row, **over}

    numina = [
        numina_row("P1", r"... \boxed{12}", ""),
        numina_row("P2", "proof", "proof"),
        numina_row("P3", "...", "5", question_type="proof"),
        numina_row("P4", "...", "6", problem_is_valid="No"),
        numina_row("P5", "no box", None),
        numina_row("P6", "...", "7", source="synthetic_math", synthetic=True),
    ]
    path = write_jsonl(tmp_path / "numina.jsonl", numina)
    items = list(numina_math(path, check_golds=False).scan())
    kept = [i for i in items if not hasattr(i, "reason")]
    assert [(p.prompt, p.answer) for p in kept] == [("P1", "12"), ("P6", "7")]
    assert kept[0].metadata["answer_from"] == "solution"
    reasons = [getattr(i, "reason", None) for i in items]
    assert reasons == [
        None,
        SkipReason.NO_ANSWER,
        SkipReason.NO_ANSWER,
        SkipReason.FILTERED,
        SkipReason.NO_ANSWER,
        None,
    ]
    no_synthetic = list(numina_math(path, include_synthetic=False, check_golds=False))
    assert [p.prompt for p in no_synthetic] == ["P1"]


def test_parser_needs_an_answer_column() -> None:
    with pytest.raises(ConfigurationError):
        MathSource.from_files(__file__, answer_field=None)


async def test_sample_is_reproducible_and_order_independent(tmp_path: Path) -> None:
    rows = _rows(1000)
    a = write_jsonl(tmp_path / "a.jsonl", rows)
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    b = write_parquet(tmp_path / "b.parquet", shuffled)
    kw: dict[str, Any] = {"name": "pool", "id_field": "uuid", "check_golds": False}
    first = await MathSource.from_files(a, **kw).sample(100, seed=7)
    second = await MathSource.from_files(a, **kw).sample(100, seed=7)
    reordered = await MathSource.from_files(b, **kw).sample(100, seed=7)
    other_seed = await MathSource.from_files(a, **kw).sample(100, seed=8)
    assert len(first) == 100 and first.ids == second.ids
    # hash-based: the pool is the same problems in the same order whatever the row order
    assert reordered.ids == first.ids
    assert len(set(other_seed.ids) & set(first.ids)) < 40
    # a larger sample with the same seed extends the smaller one
    bigger = await MathSource.from_files(a, **kw).sample(300, seed=7)
    assert bigger.ids[:100] == first.ids
    report = first.report
    assert (report.rows, report.problems, report.selected, report.passes) == (1000, 1000, 100, 1)


async def test_invalid_golds_are_reported_and_skipped(
    tmp_path: Path, checker: CountingChecker
) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", _rows(400, bad_every=2))  # half invalid
    source = MathSource.from_files(path, name="m", id_field="uuid", gold_checker=checker)
    pool = await source.sample(150, seed=0, batch_size=64)
    assert len(pool) == 150
    assert all("BAD" not in (p.answer or "") for p in pool)
    report = pool.report
    invalid = [d for d in report.dropped if d.reason is SkipReason.INVALID_GOLD]
    assert report.skipped["invalid-gold"] == len(invalid) > 100
    assert all(d.problem_id and "could not be parsed" in d.detail for d in invalid)
    assert report.examined == 150 + len(invalid)
    assert report.passes >= 2  # more rejections than the first pass's margin
    assert max(checker.calls) <= 64
    # the multi-pass pool is exactly the bottom of the full ordering
    everything = await MathSource.from_files(
        path, name="m", id_field="uuid", gold_checker=checker
    ).sample(None, seed=0)
    assert len(everything) == 200
    assert everything.ids[:150] == pool.ids


async def test_short_source_gives_everything_and_says_so(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", _rows(30))
    pool = await MathSource.from_files(path, id_field="uuid", check_golds=False).sample(50)
    assert len(pool) == 30 and pool.report.short
    assert "fewer usable problems" in pool.report.summary()


async def test_filters_compose_and_are_reported(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", _rows(300))
    source = MathSource.from_files(
        path, name="m", id_field="uuid", difficulty_field="level", check_golds=False
    )
    hard = source.filter(by_difficulty(4, 5)).filter(by_source("olympiads", "AMC_AIME"))
    pool = await hard.sample(None)
    assert pool and all(p.metadata["difficulty"] in (4, 5) for p in pool)
    assert all(p.source in ("olympiads", "amc_aime") for p in pool)
    assert pool.report.skipped["filtered"] == 300 - len(pool)
    ranged = await source.filter(by_difficulty(min_level=2, max_level=3)).sample(None)
    assert {p.metadata["difficulty"] for p in ranged} == {2, 3}
    short = [p async for p in source.filter(by_length(max_length=68))]
    assert short and all(len(p.prompt) <= 68 for p in short)
    odd = source.filter(~where(lambda p: p.id.endswith(("0", "2", "4", "6", "8")), "even"))
    assert all(p.id[-1] in "13579" for p in odd)
    both = by_source("olympiads") | by_source("cn_contest")
    assert {p.source for p in source.filter(both)} == {"olympiads", "cn_contest"}
    with pytest.raises(ConfigurationError):
        by_length()


async def test_dedup_in_sample(tmp_path: Path) -> None:
    rows = _rows(50)
    rows.append({**rows[3], "uuid": "copy-exact"})
    rows.append({**rows[4], "uuid": "copy-norm", "problem": "  " + rows[4]["problem"].upper()})
    rows.append({**rows[5]})  # same uuid twice
    path = write_jsonl(tmp_path / "m.jsonl", rows)
    source = MathSource.from_files(path, name="m", id_field="uuid", check_golds=False)
    pool = await source.sample(None)
    assert len(pool) == 50
    kinds = sorted(str(d.kind) for d in pool.report.duplicates)
    assert kinds == ["exact", "id", "normalized"]
    assert pool.report.skipped["duplicate"] == 3
    kept_all = await source.sample(None, dedup=False)
    assert len(kept_all) == 53


@pytest.mark.skipif(not MATH500.exists(), reason="../shared/data/math500_test.jsonl missing")
async def test_planted_math500_problem_is_removed_or_reported(tmp_path: Path) -> None:
    math500 = read_benchmark_texts(MATH500, id_field="unique_id")
    (bench_id, planted), *_ = math500.items()
    rows = _rows(200)
    rows.append({"problem": planted, "answer": "1", "source": "leak", "uuid": "leaked"})
    path = write_jsonl(tmp_path / "m.jsonl", rows)
    source = MathSource.from_files(path, name="m", id_field="uuid", check_golds=False)
    index = Decontaminator({"MATH-500": math500})
    removed = await source.sample(None, decontaminate=index)
    assert "m/leaked" not in removed.ids and len(removed) == 200
    overlaps = removed.report.overlaps
    assert {o.problem_id for o in overlaps} == {"m/leaked"}
    # the planted problem shares every n-gram with itself (and maybe a phrase with others)
    best = max(overlaps, key=lambda o: o.shared)
    assert (best.benchmark, best.benchmark_id) == ("MATH-500", bench_id)
    assert removed.report.overlaps_by_benchmark() == {"MATH-500": 1}
    assert removed.report.skipped["contaminated"] == 1
    kept = await source.sample(None, decontaminate=index, remove_contaminated=False)
    assert "m/leaked" in kept.ids and kept.report.contaminated_kept == 1
    assert kept.report.overlaps[0].problem_id == "m/leaked"
    import orjson

    orjson.dumps(kept.report.to_dict())  # JSON-serializable


async def test_real_math_verify_rejects_unparseable_gold(
    tmp_path: Path, math_verify_checker: Any
) -> None:
    rows = [
        {"problem": "A", "answer": r"\frac{1}{2}", "uuid": "1"},
        {"problem": "B", "answer": "x^2 + 1", "uuid": "2"},
        {"problem": "C", "answer": r"\frac{", "uuid": "3"},
        {"problem": "D", "answer": "12", "uuid": "4"},
    ]
    path = write_jsonl(tmp_path / "m.jsonl", rows)
    source = MathSource.from_files(
        path, name="m", id_field="uuid", gold_checker=math_verify_checker
    )
    pool = await source.sample(None)
    assert sorted(pool.ids) == ["m/1", "m/2", "m/4"]
    assert [d.problem_id for d in pool.report.dropped] == ["m/3"]


async def test_default_checker_is_the_math_verifier(tmp_path: Path) -> None:
    rows = [
        {"problem": "A", "answer": r"\frac{1}{2}", "uuid": "1"},
        {"problem": "B", "answer": "}", "uuid": "2"},
        {"problem": "C", "answer": "(1, 2]", "uuid": "3"},
    ]
    path = write_jsonl(tmp_path / "m.jsonl", rows)
    source = MathSource.from_files(path, name="m", id_field="uuid")  # no checker injected
    try:
        import tracedistill.verifiers.math  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigurationError, match="gold_checker"):
            await source.sample(None)
        return
    pool = await source.sample(None)
    assert sorted(pool.ids) == ["m/1", "m/3"]
    (dropped,) = pool.report.dropped
    assert dropped.problem_id == "m/2" and dropped.reason is SkipReason.INVALID_GOLD


async def test_async_iteration_matches_sync_and_stops_early(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", _rows(5000))
    source = MathSource.from_files(path, name="m", id_field="uuid", check_golds=False)
    sync_ids = [p.id for p in source]
    async_ids = [p.id async for p in source]
    assert async_ids == sync_ids and len(sync_ids) == 5000
    seen = 0
    async for _ in source:
        seen += 1
        if seen == 10:
            break
    assert seen == 10


async def test_pool_is_a_sequence_with_a_report(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", _rows(20))
    pool = await MathSource.from_files(path, name="m", id_field="uuid", check_golds=False).sample(
        5, seed=1
    )
    assert len(pool[1:3]) == 2 and pool[0].id == pool.ids[0]
    assert "selected 5 of 5 requested (seed 1)" in pool.report.summary()
    data = pool.report.to_dict()
    assert data["selected"] == 5 and data["requested"] == 5 and data["rows"] == 20
    assert repr(pool) == "ProblemPool('m', 5 problems)"


async def test_concat_routes_validation_to_each_source(
    tmp_path: Path, checker: CountingChecker
) -> None:
    from tracedistill.problems import concat, mbpp

    a = write_jsonl(tmp_path / "a.jsonl", _rows(40, bad_every=2))
    b_rows = [
        {**r, "uuid": "b" + r["uuid"], "problem": "B " + r["problem"]}
        for r in _rows(40, bad_every=2)
    ]
    b = write_jsonl(tmp_path / "b.jsonl", b_rows)
    checked = MathSource.from_files(a, name="a", id_field="uuid", gold_checker=checker)
    trusted = MathSource.from_files(b, name="b", id_field="uuid", check_golds=False)
    both = concat(checked, trusted)
    assert both.name == "a+b"
    pool = await both.sample(None, seed=4)
    ids = pool.ids
    assert sum(i.startswith("a/") for i in ids) == 20  # the checker dropped a's BAD answers
    assert sum(i.startswith("b/") for i in ids) == 40  # b is not checked
    assert sum(checker.calls) == 40  # only a's problems went to a's checker
    with pytest.raises(ConfigurationError, match="mix"):
        concat(checked, mbpp(a))
