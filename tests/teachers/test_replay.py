from __future__ import annotations

import json
from pathlib import Path

import pytest

from tracedistill import FinishReason, JsonlTraceStore, ReasoningKind, TaskKind
from tracedistill.errors import DatasetUnavailableError, ProblemSourceError
from tracedistill.teachers import generate
from tracedistill.teachers.replay import (
    OPENR1_MATH,
    ReplayTeacher,
    opencodereasoning,
    parse_sample_tests,
)

pytestmark = pytest.mark.anyio

CF_STATEMENT = """You are given n integers. Print their sum.

Input

The first line contains n (1 <= n <= 100). The second line contains n integers.

Output

Print one integer.

Examples

Input

3
1 2 3


Output

6


Input

1
5

Output

5

Note

In the first example 1 + 2 + 3 = 6."""

HE_STATEMENT = """Print the square of N.

SAMPLE INPUT
4

SAMPLE OUTPUT
16

Explanation
4 * 4 = 16"""


def openr1_rows() -> list[dict]:  # type: ignore[type-arg]
    return [
        {
            "problem": "What is 2 + 3?",
            "solution": "5",
            "answer": "5",
            "problem_type": "Algebra",
            "question_type": "math-word-problem",
            "source": "olympiads",
            "uuid": "u-1",
            "is_reasoning_complete": [True, False],
            "generations": [
                "<think>\n2 plus 3 is 5.\n</think>\n\nThe answer is $\\boxed{5}$.",
                "<think>\nLet me count: 2, then 3 more",
            ],
            "correctness_math_verify": [True, False],
            "correctness_llama": None,
            "finish_reasons": ["stop", "length"],
            "correctness_count": 1,
            "messages": [
                {"role": "user", "content": "What is 2 + 3?"},
                {"role": "assistant", "content": "..."},
            ],
        },
        {
            "problem": "What is 7 * 6?",
            "solution": "42",
            "answer": "42",
            "problem_type": "Algebra",
            "question_type": "math-word-problem",
            "source": "amc",
            "uuid": "u-2",
            "is_reasoning_complete": [True, True],
            "generations": [
                "<think>\n7*6=42\n</think>\n\n\\boxed{42}",
                "<think>\nsix sevens\n</think>\n\n\\boxed{42}",
            ],
            "correctness_math_verify": [True, True],
            "correctness_llama": None,
            "finish_reasons": [None, None],
            "correctness_count": 2,
            "messages": [],
        },
        {  # no gold answer: cannot be verified, skipped
            "problem": "Prove it.",
            "solution": "",
            "answer": "",
            "problem_type": "Logic",
            "question_type": "proof",
            "source": "x",
            "uuid": "u-3",
            "is_reasoning_complete": [True],
            "generations": ["<think>\nok\n</think>\n\ndone"],
            "correctness_math_verify": [False],
            "correctness_llama": None,
            "finish_reasons": ["stop"],
            "correctness_count": 0,
            "messages": [],
        },
    ]


def ocr_rows() -> list[dict]:  # type: ignore[type-arg]
    code = "```python\nn = int(input())\nprint(sum(map(int, input().split())))\n```"
    return [
        {
            "id": "abc",
            "input": CF_STATEMENT,
            "output": f"<think>\nSum them.\n</think>\n\n{code}",
            "source": "codeforces",
            "license": "cc-by-4.0",
            "dataset": "code_contests",
            "split": "train",
            "difficulty": "7",
            "solution": code,
        },
        {
            "id": "abc",
            "input": CF_STATEMENT,
            "output": f"<think>\nAdd up.\n</think>\n{code}",
            "source": "codeforces",
            "license": "cc-by-4.0",
            "dataset": "code_contests",
            "split": "train",
            "difficulty": "7",
            "solution": code,
        },
        {
            "id": "def",
            "input": HE_STATEMENT,
            "output": "<think>\nsquare it, but I ran out",
            "source": "hackerearth",
            "license": "mit",
            "dataset": "taco",
            "split": "train",
            "difficulty": "EASY",
            "solution": "",
        },
        {
            "id": "ghi",
            "input": "-",
            "output": "<think>\nx\n</think>\n\ny",
            "source": "taco",
            "license": "mit",
            "dataset": "taco",
            "split": "train",
            "difficulty": "",
            "solution": "",
        },
    ]


def write_jsonl(path: Path, rows: list[dict]) -> Path:  # type: ignore[type-arg]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


async def test_openr1_layout(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "openr1.jsonl", openr1_rows())
    teacher = ReplayTeacher.from_file(data, "openr1-math", cache_dir=tmp_path / "cache")
    problems = list(teacher.problems())
    assert [p.id for p in problems] == ["openr1-math-u-1", "openr1-math-u-2"]
    assert teacher.skipped_rows == 1
    assert problems[0].kind is TaskKind.MATH and problems[0].answer == "5"
    with JsonlTraceStore(tmp_path / "store") as store:
        summary = await generate(teacher, teacher.problems(), store, n=3)
        assert summary.done == 4 and summary.truncated == 1
        assert summary.failed == 2  # each problem holds only two traces
        first = store.get(teacher.request_key(problems[0], 0))
        assert first is not None and first.reasoning == "2 plus 3 is 5."
        assert first.answer == "The answer is $\\boxed{5}$."
        assert first.reasoning_kind is ReasoningKind.RAW and first.cost_usd == 0.0
        assert first.model == "deepseek-ai/DeepSeek-R1"
        assert first.teacher == "replay:open-r1/OpenR1-Math-220k"
        assert first.metadata["dataset_math_verify"] is True
        cut = store.get(teacher.request_key(problems[0], 1))
        assert cut is not None and cut.finish_reason is FinishReason.LENGTH
        assert cut.reasoning == "Let me count: 2, then 3 more" and cut.answer == ""
        missing = store.get(teacher.request_key(problems[0], 2))
        assert missing is not None and not missing.ok and "holds 2 trace" in (missing.error or "")
        assert missing.attempts == 1
        # the same prompt template as live teachers
        assert "\\boxed{}" in first.prompt[0].content
        again = await generate(teacher, teacher.problems(), store, n=2)
        assert again.skipped == 4 and again.requested == 0


async def test_opencodereasoning_layout_parquet(tmp_path: Path) -> None:
    import datasets

    path = tmp_path / "ocr.parquet"
    datasets.Dataset.from_list(ocr_rows()).to_parquet(str(path))
    teacher = ReplayTeacher.from_file(path, "opencodereasoning", cache_dir=tmp_path / "cache")
    problems = list(teacher.problems())
    assert [p.id for p in problems] == ["ocr-abc", "ocr-def"]
    assert teacher.skipped_rows == 1  # split_1's "-" statement
    tests = problems[0].tests
    assert tests is not None and [(c.stdin, c.stdout) for c in tests.stdio] == [
        ("3\n1 2 3\n", "6\n"),
        ("1\n5\n", "5\n"),
    ]
    with JsonlTraceStore(tmp_path / "store") as store:
        summary = await generate(teacher, problems, store, n=2)
        # "abc" has two rows (two samples); "def" has one
        assert summary.done == 3 and summary.failed == 1
        second = store.get(teacher.request_key(problems[0], 1))
        assert second is not None and second.reasoning == "Add up."
        assert second.answer.startswith("```python")
        cut = store.get(teacher.request_key(problems[1], 0))
        assert cut is not None and cut.truncated


def test_custom_tests_for_code_rows(tmp_path: Path) -> None:
    from tracedistill import CodeTests

    layout = opencodereasoning(tests=lambda row: CodeTests(asserts=[f"# {row['id']}"]))
    teacher = ReplayTeacher(ocr_rows(), layout)
    problems = list(teacher.problems())
    assert problems[0].tests is not None and problems[0].tests.asserts == ("# abc",)


def test_parse_sample_tests() -> None:
    assert [(c.stdin, c.stdout) for c in parse_sample_tests(HE_STATEMENT)] == [("4\n", "16\n")]
    codechef = "Find x.\n\nExample\nInput:\n2\n1 2\n\nOutput:\n3\n"
    assert [(c.stdin, c.stdout) for c in parse_sample_tests(codechef)] == [("2\n1 2\n", "3\n")]
    taco = (
        "-----Input-----\nn\n-----Output-----\nm\n-----Examples-----\nInput\n1\nOutput\n2\n"
        "-----Note-----\nnone"
    )
    assert [(c.stdin, c.stdout) for c in parse_sample_tests(taco)] == [("1\n", "2\n")]
    assert parse_sample_tests("No examples here. Input is n.") == ()


def test_hub_unreachable_names_the_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("datasets.config.HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(DatasetUnavailableError) as info:
        ReplayTeacher.from_hub(OPENR1_MATH, cache_dir=tmp_path / "empty-cache")
    message = str(info.value)
    assert "open-r1/OpenR1-Math-220k" in message and "from_file" in message


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ProblemSourceError, match="not found"):
        ReplayTeacher.from_file(tmp_path / "nope.jsonl", "openr1-math")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ProblemSourceError, match="must all be"):
        ReplayTeacher.from_file(tmp_path / "a.txt", "openr1-math")
    wrong = write_jsonl(tmp_path / "wrong.jsonl", [{"question": "q"}])
    teacher = ReplayTeacher.from_file(wrong, "openr1-math", cache_dir=tmp_path / "cache")
    with pytest.raises(ProblemSourceError, match="uuid"):
        list(teacher.problems())
