from __future__ import annotations

import pytest

from tracedistill.records import FinishReason, Message, Problem, SamplingParams, TokenUsage, Trace


def make_problem(i: int, kind: str = "math", source: str = "synthetic") -> Problem:
    return (
        Problem(kind="math", prompt=f"What is {i} + {i}?", answer=str(2 * i), source=source)
        if kind == "math"
        else Problem(
            kind="code",
            prompt=f"Write f returning {i}.",
            tests={"asserts": [f"assert f() == {i}"]},
            source=source,
        )
    )


def make_trace(
    problem: Problem, sample: int = 0, *, teacher: str = "t", tokens: int = 10, **kw: object
) -> Trace:
    fields: dict[str, object] = dict(
        problem_id=problem.id,
        teacher=teacher,
        model="m",
        prompt=[Message("user", problem.prompt)],
        reasoning=f"reasoning {sample}",
        answer=f"\\boxed{{{problem.answer}}}",
        usage=TokenUsage(prompt_tokens=5, completion_tokens=tokens),
        params=SamplingParams(max_tokens=100),
        sample_index=sample,
        cost_usd=0.01,
    )
    fields.update(kw)
    return Trace(**fields)  # type: ignore[arg-type]


@pytest.fixture
def problems() -> list[Problem]:
    return [make_problem(i) for i in range(5)]


__all__ = ["FinishReason", "make_problem", "make_trace"]
