"""The grading protocol in the report: one definition of format compliance, in agreement with
the answer extraction that graded each response, and stated in the tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from tracedistill.evaluation import (
    Benchmark,
    Completion,
    EvalStore,
    Evaluator,
    Sampler,
    custom_benchmark,
    math500,
    mbpp_plus,
)
from tracedistill.evaluation.evaluator import protocol_of
from tracedistill.evaluation.results import ProblemOutcome, build_result, format_flags
from tracedistill.records import CodeTests, FinishReason, Problem
from tracedistill.report import Results, Score
from tracedistill.verifiers.code import CodeVerifier
from tracedistill.verifiers.compliance import COMPLIANCE_RULE, complies, trace_flags
from tracedistill.verifiers.extract import CodeExtraction, extract_math_answer
from tracedistill.verifiers.math import EXTRACTIONS, MathVerifier

# Answers (after the think block) where a looser "boxed" test and the boxed extraction could
# disagree: empty, unclosed, \fbox, nested, a box followed by an unclosed one, no box at all.
ANSWERS = [
    r"so \boxed{12}",
    r"\boxed{}",
    r"\boxed{\frac{1}{2}",
    r"\fbox{7}",
    r"\boxed{\frac{1}{2}} and then \boxed{3",
    r"The answer is 12.",
    r"we get $x = 12$",
    r"\boxed 5",
    r"no answer at all",
]


@pytest.mark.parametrize("answer", ANSWERS)
def test_boxed_flag_is_what_the_boxed_extraction_finds(answer: str) -> None:
    found = extract_math_answer(answer, EXTRACTIONS["boxed"])[1] == "boxed"
    flags = format_flags(f"<think>work</think>{answer}", "math")
    assert flags["boxed"] is found
    assert complies(flags) is found
    assert complies(trace_flags("work", answer, "math")) is found
    assert not complies(trace_flags("", answer, "math"))  # no think block: not the format
    assert not complies(format_flags(f"<think>work {answer}", "math"))  # unclosed: no answer


def test_compliance_agrees_with_the_extraction_that_graded_each_answer() -> None:
    gold = "12"
    responses = [r"so \boxed{12}", "The answer is 12.", "we get $12$", r"\boxed{}  so 12"]

    async def grade(extraction: str) -> list[tuple[bool, str, bool]]:
        async with MathVerifier(extraction=extraction, workers=1) as verifier:  # type: ignore[arg-type]
            out = []
            for text in responses:
                verdict = await verifier.check_answer(gold, text)
                flags = format_flags(f"<think>w</think>{text}", "math")
                out.append((verdict.passed, verdict.details["extraction"], complies(flags)))
            return out

    lenient = anyio.run(grade, "lenient")
    strict = anyio.run(grade, "boxed")
    for passed, how, compliant in lenient + strict:
        # compliant exactly when the answer graded was found by the final \boxed{}
        assert compliant is (how == "boxed"), (passed, how, compliant)
    # strict mode: every passed answer is a compliant one
    assert all(compliant for passed, _, compliant in strict if passed)
    assert [passed for passed, _, _ in strict] == [True, False, False, False]
    # the lenient default also passes unboxed answers, which the report shows as off-format
    assert [passed for passed, _, _ in lenient][:3] == [True, True, True]


def _result(label: str, extractions: list[str | None]) -> object:
    outcomes = []
    for i, how in enumerate(extractions):
        text = r"<think>w</think>\boxed{1}" if how == "boxed" else "<think>w</think>so 1"
        outcomes.append(
            ProblemOutcome(
                problem_id=f"p{i}",
                passed=how is not None,
                reason="passed" if how is not None else "wrong-answer",
                text=text,
                finish_reason=FinishReason.STOP,
                format=format_flags(text, "math"),
                details={} if how is None else {"extraction": how},
            )
        )
    header = {"label": label, "benchmark": "MATH", "kind": "math", "model": "m"}
    return build_result(header, outcomes, expected=len(outcomes))


def test_report_states_the_protocol_and_counts_answers_by_extraction() -> None:
    base = _result("base", ["answer_is", "last_math", None, "boxed"])
    step = _result("run@5", ["boxed", "boxed", "boxed", "answer_is"])
    protocol = MathVerifier().protocol
    results = Results.from_evaluations([base, step], protocols={"MATH": protocol})
    score = results.score("run", 5, "MATH")
    assert isinstance(score, Score)
    assert score.extractions == {"boxed": 3, "answer_is": 1}
    assert score.format_compliance == 0.75
    rows = {r["model"]: r for r in results.format_table()}
    assert rows["run@5"]["passed, answer not in the format"] == "1"
    assert rows["base"]["passed, answer not in the format"] == "2"
    [grading] = results.grading_table()
    assert grading["answers that count"] == protocol
    assert "the answer is" in protocol and "else" in protocol
    assert grading["passed answers found by"].startswith(r"final \boxed{} 4 (57.1%)")
    text = results.to_markdown()
    assert "## Grading protocol" in text and COMPLIANCE_RULE in text
    strict = MathVerifier(extraction="boxed").protocol
    assert strict == r"the final \boxed{} only"
    only = Results.from_evaluations([step], protocols={"MATH": strict})
    assert only.grading_table()[0]["answers that count"] == strict


DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _builtin_benchmarks() -> list[Benchmark]:
    code = Problem(
        kind="code",
        prompt="Write f(x) returning x + 1.",
        id="c0",
        tests=CodeTests(asserts=("assert f(1) == 2",)),
    )
    benches = [custom_benchmark("custom-code", [code], template="{prompt}")]
    if (DATA / "math500_test.jsonl").is_file():
        benches.append(math500(DATA / "math500_test.jsonl"))
    if (DATA / "mbppplus_378.jsonl").is_file():
        mbpp = DATA / "mbppplus_378.jsonl"
        benches += [mbpp_plus(mbpp), mbpp_plus(mbpp, mode="completion")]
    return benches


def test_every_builtin_grader_states_its_protocol() -> None:
    for bench in _builtin_benchmarks():
        protocol = protocol_of(bench.make_verifier(), bench)
        assert protocol, bench.name
    code = CodeVerifier().protocol
    assert "fenced Python block" in code and "every test" in code
    joined = CodeVerifier(extraction=CodeExtraction(join=True, raw_fallback=False)).protocol
    assert "joined" in joined and "whole response" not in joined
    if (DATA / "mbppplus_378.jsonl").is_file():
        completion = mbpp_plus(DATA / "mbppplus_378.jsonl", mode="completion")
        words = protocol_of(completion.make_verifier(), completion)
        assert words is not None and "prompt and the response" in words
        assert "cut at max_tokens" in words


class _Solver(Sampler):
    """Answers every problem with its reference solution in a fenced block."""

    def __init__(self, bench: Benchmark) -> None:
        super().__init__(max_concurrency=2)
        self.model = "solver"
        self._answers: dict[str, str] = {}
        for problem in bench.problems:
            assert problem.tests is not None and problem.tests.function is not None
            prompt = bench.prompt(problem)
            key = prompt if isinstance(prompt, str) else prompt[-1].content
            solution = problem.tests.function.reference_solution
            self._answers[key] = f"<think>\nplan\n</think>\n\n```python\n{solution}\n```"

    async def _sample(self, prompt: Any, params: Any) -> Completion:
        key = prompt if isinstance(prompt, str) else prompt[-1].content
        return Completion(text=self._answers[key], finish_reason=FinishReason.STOP)


@pytest.mark.slow  # runs MBPP+ tests in the sandbox
def test_a_code_evaluation_records_its_protocol_and_the_report_shows_it(tmp_path: Path) -> None:
    path = DATA / "mbppplus_378.jsonl"
    if not path.is_file():
        pytest.skip("../shared/data/mbppplus_378.jsonl is not present")
    bench = mbpp_plus(path).subset(2)

    async def main() -> Any:
        async with Evaluator(tmp_path, progress=False) as evaluator:
            return await evaluator.evaluate(_Solver(bench), bench, label="base")

    result = anyio.run(main)
    assert result.correct == 2
    expected = CodeVerifier().protocol
    assert result.protocol == expected
    stored = EvalStore(tmp_path).load("base", bench.name)  # from the log's header
    assert stored.protocol == expected
    [row] = Results.from_evaluations([stored]).grading_table()
    assert row["answers that count"] == expected
    assert "not recorded" not in Results.from_evaluations([stored]).to_markdown()
