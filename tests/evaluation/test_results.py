from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tracedistill.errors import EvaluationError, StoreCorruptError
from tracedistill.evaluation import Completion, EvalLog, EvalStore, compare, format_flags
from tracedistill.evaluation.results import build_result, outcome_of
from tracedistill.records import FinishReason, TaskKind, VerdictReason

HEADER = {
    "label": "base",
    "model": "m",
    "benchmark": "B",
    "benchmark_sha256": "abc",
    "kind": "math",
    "problems": 3,
    "grader": "g",
    "request_keys": {"p0": "k0", "p1": "k1", "p2": "k2"},
}


def _fill(log: EvalLog, passed: list[bool]) -> None:
    for i, ok in enumerate(passed):
        log.add_sample(
            f"p{i}", f"k{i}", Completion(text=f"\\boxed{{{i}}}", finish_reason=FinishReason.STOP)
        )
        log.add_grade(
            f"p{i}",
            f"k{i}",
            grader="g",
            passed=ok,
            reason=VerdictReason.PASSED if ok else VerdictReason.WRONG_ANSWER,
            details={},
            format={"boxed": True},
            elapsed_s=0.0,
        )


def test_log_round_trip_and_torn_line(tmp_path: Path) -> None:
    store = EvalStore(tmp_path)
    with store.open("base", "B", HEADER) as log:
        _fill(log, [True, False, True])
    path = store.path_for("base", "B")
    with path.open("ab") as f:
        f.write(b'{"type": "sample", "problem_id": "p9", "te')  # a torn line from a kill
    log = store.open("base", "B", HEADER)
    assert set(log.samples) == {"p0", "p1", "p2"} and path.read_bytes().endswith(b"\n")
    assert log.sample_for("p0", "k0") is not None and log.sample_for("p0", "other") is None
    assert log.grade_for("p1", "k1", "g") is not None and log.grade_for("p1", "k1", "g2") is None
    log.close()
    result = store.load("base", "B")
    assert (result.n, result.correct, result.expected) == (3, 2, 3)
    assert [o.problem_id for o in result.outcomes] == ["p0", "p1", "p2"]
    assert [r.label for r in store.results()] == ["base"]


def test_corrupt_middle_line_and_other_model(tmp_path: Path) -> None:
    store = EvalStore(tmp_path)
    with store.open("base", "B", HEADER) as log:
        _fill(log, [True])
    path = store.path_for("base", "B")
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + b"garbage\n" + b"".join(lines[1:]))
    with pytest.raises(StoreCorruptError, match=":2:"):
        store.open("base", "B", HEADER)
    path.write_bytes(b"".join(lines))
    with pytest.raises(EvaluationError, match="benchmark_sha256"):
        store.open("base", "B", {**HEADER, "benchmark_sha256": "other"})
    newer = orjson.dumps({**orjson.loads(lines[0]), "schema": 99}) + b"\n"
    path.write_bytes(newer)
    with pytest.raises(EvaluationError, match="newer"):
        store.open("base", "B", HEADER)


def test_compare_pairs_by_problem_and_refuses_other_files(tmp_path: Path) -> None:
    store = EvalStore(tmp_path)
    with store.open("a", "B", {**HEADER, "label": "a"}) as log:
        _fill(log, [True, False, False])
    with store.open("b", "B", {**HEADER, "label": "b", "model": "m2"}) as log:
        _fill(log, [True, True, True])
    a, b = store.load("a", "B"), store.load("b", "B")
    cmp = compare(a, b)
    assert cmp.counts.only_second == 2 and cmp.counts.both == 1
    assert cmp.difference == pytest.approx(2 / 3)
    assert cmp.p_value == pytest.approx(0.5)
    assert "+66.7 pts" in cmp.summary()
    other = build_result({**HEADER, "benchmark_sha256": "zzz"}, list(b.outcomes), expected=3)
    with pytest.raises(EvaluationError, match="different benchmark files"):
        compare(a, other)
    assert compare(a, other, allow_different_files=True).counts.n == 3


def test_format_flags() -> None:
    assert format_flags("<think>\nx\n</think>\n\nso \\boxed{2}", TaskKind.MATH) == {
        "think_opened": True,
        "think_closed": True,
        "boxed": True,
    }
    # A box inside an unclosed think block is not an answer.
    assert format_flags("<think>\n\\boxed{2}", "math")["boxed"] is False
    assert format_flags("```python\nprint(1)\n```", "code") == {
        "think_opened": False,
        "think_closed": False,
        "code_block": True,
    }
    assert format_flags("def f(): pass", "code")["code_block"] is False


def test_outcome_of_round_trip() -> None:
    sample = {
        "problem_id": "p",
        "text": "t",
        "finish_reason": "length",
        "completion_tokens": 7,
        "latency_s": 0.5,
    }
    grade = {"passed": False, "reason": "truncated", "format": {"boxed": False}, "details": {}}
    outcome = outcome_of(sample, grade)
    assert (
        outcome.finish_reason is FinishReason.LENGTH and outcome.reason is VerdictReason.TRUNCATED
    )
    assert outcome.to_dict()["completion_tokens"] == 7
