"""The offline demo: its synthetic tasks, its teacher, and the whole study at CI size."""

from __future__ import annotations

import warnings
from pathlib import Path

import anyio
import pytest

from tracedistill.demo import (
    DEMO_PROMPTS,
    SyntheticTeacher,
    build_demo_student,
    code_steps,
    math_steps,
    run_demo,
    synthetic_problems,
)
from tracedistill.records import ReasoningKind, TaskKind
from tracedistill.report import compare
from tracedistill.teachers.base import TeacherCompletion, TeacherRequest


def test_math_steps_add_column_by_column() -> None:
    assert math_steps(47, 85) == ("7+5=12\n4+8+1=13", 132)
    assert math_steps(21, 13) == ("1+3=04\n2+1+0=03", 34)
    # A slip in the ones column is carried through to the result.
    assert math_steps(47, 85, slip=1) == ("7+5=13\n4+8+1=13", 133)


def test_code_steps_build_the_expression_one_operation_a_line() -> None:
    lines, expr = code_steps([("times", 7), ("plus", 3)])
    assert lines == "times 7: x * 7\nplus 3: x * 7 + 3"
    assert expr == "x * 7 + 3"


@pytest.mark.parametrize("kind", ["math", "code"])
def test_problems_are_distinct_and_fixed_shape(kind: str) -> None:
    problems = synthetic_problems(kind, 600, seed=0)
    assert len({p.prompt for p in problems}) == 600
    assert problems == synthetic_problems(kind, 600, seed=0)
    assert len({len(p.prompt.split()) for p in problems}) == 1  # operands at the same places
    with pytest.raises(ValueError, match="distinct"):
        synthetic_problems(kind, 10_000)


def test_code_problem_tests_agree_with_the_expression() -> None:
    for problem in synthetic_problems("code", 50):
        f = eval(f"lambda x: {problem.metadata['expr']}")
        assert problem.tests is not None
        for line in problem.tests.asserts:
            exec(line, {"f": f})


@pytest.mark.parametrize("kind", list(TaskKind))
def test_teacher_is_right_or_wrong_on_purpose(kind: TaskKind) -> None:
    teacher = SyntheticTeacher(error_rate=0.25)
    problems = synthetic_problems(kind, 200, seed=1)

    async def answers() -> list[str]:
        out = []
        for p in problems:
            msgs = tuple(DEMO_PROMPTS.render(p))
            req = TeacherRequest(problem=p, messages=msgs, params=None, sample_index=0, key=p.id)
            c = await teacher.complete(req)
            out.append(c.answer)
        return out

    got = anyio.run(answers)
    if kind is TaskKind.MATH:
        right = sum(a == f"\\boxed{{{p.answer}}}" for a, p in zip(got, problems, strict=True))
    else:
        right = sum(
            f"return {p.metadata['expr']}\n" in a for a, p in zip(got, problems, strict=True)
        )
    assert 0.6 * 200 < right < 0.9 * 200


@pytest.mark.parametrize("kind", list(TaskKind))
def test_answer_only_teacher_gives_the_same_answers_without_steps(kind: TaskKind) -> None:
    """The ablation's teacher: the same answers, slips included, and no reasoning."""
    with_steps = SyntheticTeacher()
    answer_only = SyntheticTeacher(name="synthetic-teacher-direct", steps=False)
    problems = synthetic_problems(kind, 50, seed=2)

    async def both() -> list[tuple[TeacherCompletion, TeacherCompletion]]:
        out = []
        for p in problems:
            a = await with_steps.complete(with_steps.request(p))
            b = await answer_only.complete(answer_only.request(p))
            out.append((a, b))
        return out

    pairs = anyio.run(both)
    assert all(a.answer == b.answer for a, b in pairs)
    assert all(a.reasoning and not b.reasoning for a, b in pairs)
    assert all(b.reasoning_kind is ReasoningKind.NONE for _, b in pairs)
    # Same request keys, so the same problems are verified and kept in both runs.
    assert [with_steps.request_key(p) for p in problems] == [
        answer_only.request_key(p) for p in problems
    ]


def test_demo_student_trains_without_the_tied_embedding_warning(tmp_path: Path) -> None:
    """The student's output layer is its own weight, so its LoRA adapter shares nothing."""
    pytest.importorskip("peft")
    import json

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    student = build_demo_student(tmp_path / "student")
    assert json.loads((student / "config.json").read_text())["tie_word_embeddings"] is False
    model = AutoModelForCausalLM.from_pretrained(student)
    config = LoraConfig(r=8, target_modules=["q_proj", "lm_head"], task_type="CAUSAL_LM")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        get_peft_model(model, config)


@pytest.mark.slow
@pytest.mark.timeout(900)  # two 300-step LoRA runs and ten evaluations on a shared CPU
def test_demo_shows_distillation_working(tmp_path: Path) -> None:
    """``python -m tracedistill demo`` at CI size: both in-domain gains are significant.

    Every figure comes from the report's own numbers (its scores and its paired exact McNemar
    test against the base model).
    """
    results = anyio.run(lambda: run_demo(tmp_path / "demo", size="ci", progress=False))
    assert (tmp_path / "demo" / "report.md").read_text().startswith("Accuracies in percent")
    assert set(results.run_names) == {"synthetic-math", "synthetic-code"}
    for run, bench, other in (
        ("synthetic-math", "synthetic-math", "synthetic-code"),
        ("synthetic-code", "synthetic-code", "synthetic-math"),
    ):
        steps = results.steps(run)
        assert steps == [150, 300]
        base, last = results.base(bench), results.score(run, steps[-1], bench)
        assert base is not None and last is not None
        assert base.accuracy == 0.0 and base.format_compliance == 0.0
        assert compare(base, last).p_value < 0.01, (run, last.accuracy)
        # The cross-domain score of every checkpoint is measured too.
        assert all(results.score(run, s, other) is not None for s in steps)
    quality = {row["task"]: row for row in results.tables()["Trace quality"]}
    assert quality["math"]["pass rate"] != "100.0%"  # the teacher slips on purpose
    # A second call redoes nothing and gives the same numbers.
    again = anyio.run(lambda: run_demo(tmp_path / "demo", size="ci", progress=False))
    assert again.to_markdown() == results.to_markdown()
