"""Grading real benchmark responses through the evaluator's path (think block, verifiers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tracedistill.evaluation import Evaluator, math500, mbpp_plus
from tracedistill.records import FinishReason, VerdictReason
from tracedistill.verifiers.code import CodeVerifier


async def test_math500_gold_answers_pass_and_wrong_ones_fail(math500_path: Path) -> None:
    bench = math500(math500_path).subset(12)
    async with Evaluator() as evaluator:
        for problem in bench.problems:
            good = f"<think>\nwork\n</think>\n\nSo the answer is $\\boxed{{{problem.answer}}}$."
            result = await evaluator.grade(bench, problem, good, FinishReason.STOP)
            assert result.passed, (problem.id, problem.answer, result)
        first = bench.problems[0]
        wrong = await evaluator.grade(bench, first, "\\boxed{123456789}", FinishReason.STOP)
        assert wrong.reason is VerdictReason.WRONG_ANSWER
        unclosed = await evaluator.grade(
            bench, first, f"<think>\n\\boxed{{{first.answer}}}", FinishReason.STOP
        )
        assert unclosed.reason is VerdictReason.NO_ANSWER


@pytest.mark.slow
async def test_mbpp_plus_reference_solutions_pass_in_both_modes(mbpp_path: Path) -> None:
    chat = mbpp_plus(mbpp_path).subset(5)
    completion = mbpp_plus(mbpp_path, mode="completion").subset(5)
    async with CodeVerifier(workers=2) as verifier:
        evaluator = Evaluator(verifiers={"code": verifier})
        for problem in chat.problems:
            assert problem.tests is not None and problem.tests.function is not None
            solution = problem.tests.function.reference_solution
            fenced = f"<think>\nplan\n</think>\n\n```python\n{solution}\n```"
            assert (await evaluator.grade(chat, problem, fenced, FinishReason.STOP)).passed
            # A base model's continuation of the docstring prompt, cut at max_tokens: graded.
            cont = await evaluator.grade(completion, problem, solution, FinishReason.LENGTH)
            assert cont.passed, cont
        broken = "```python\ndef similar_elements(a, b):\n    return ()\n```"
        result = await evaluator.grade(chat, chat.problems[0], broken, FinishReason.STOP)
        assert not result.passed
        truncated = await evaluator.grade(chat, chat.problems[0], fenced, FinishReason.LENGTH)
        assert truncated.reason is VerdictReason.TRUNCATED
