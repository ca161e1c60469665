"""The grading protocol in the report: one definition of format compliance, in agreement with
the answer extraction that graded each response, and stated in the tables."""

from __future__ import annotations

import anyio
import pytest

from tracedistill.evaluation.results import ProblemOutcome, build_result, format_flags
from tracedistill.records import FinishReason
from tracedistill.report import Results, Score
from tracedistill.verifiers.compliance import COMPLIANCE_RULE, complies, trace_flags
from tracedistill.verifiers.extract import extract_math_answer
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
