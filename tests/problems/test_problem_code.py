from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tracedistill.problems import (
    CodeSource,
    Decontaminator,
    OpenCodeReasoningSource,
    Skipped,
    SkipReason,
    apps,
    code_contests,
    codeforces,
    mbpp,
    ocr_problem_id,
    open_code_reasoning,
    parse_input_output,
    read_benchmark_texts,
    taco,
)
from tracedistill.problems.code import TacoRowParser
from tracedistill.records import Problem, TaskKind

from .conftest import MBPPPLUS, write_jsonl, write_parquet


def _taco_row(question: str, io: Any, **extra: Any) -> dict[str, Any]:
    row = {
        "question": question,
        "solutions": json.dumps(["print(1)"]),
        "starter_code": "",
        "input_output": io if isinstance(io, str) else json.dumps(io),
        "difficulty": "EASY",
        "source": "codeforces",
        "name": question[:10],
        "tags": "['math']",
        "skill_types": "[]",
        "url": "https://example.org",
        "time_limit": "1 second",
        "memory_limit": "256 megabytes",
    }
    return {**row, **extra}


TACO_ROWS = [
    _taco_row("Read n and print n+1.", {"inputs": ["1\n", ["2", "3"]], "outputs": ["2\n", ["3"]]}),
    _taco_row(
        "Return the sum of a list.",
        {"fn_name": "total", "inputs": [[[1, 2]], [[5]]], "outputs": [[3], [5]]},
        starter_code="class Solution:\n    def total(self, xs):\n",
        difficulty="MEDIUM",
        source="leetcode",
    ),
    _taco_row("Broken row.", "{not json"),
    _taco_row("No tests here.", ""),
    _taco_row("Uneven tests.", {"inputs": ["1"], "outputs": []}),
]


def test_input_output_layouts() -> None:
    stdio = parse_input_output(json.dumps({"inputs": ["1 2\n"], "outputs": ["3\n"]}))
    assert stdio is not None and stdio.stdio[0].stdin == "1 2\n" and stdio.count == 1
    calls = parse_input_output(
        {"fn_name": "f", "inputs": [[1, 2], [3, 4]], "outputs": [[3], [[7]]]}
    )
    assert calls is not None and calls.function is not None
    assert calls.function.entry_point == "f"
    assert calls.function.base_inputs == ([1, 2], [3, 4])
    assert calls.function.expected_base == (3, [7])
    big = parse_input_output(
        '{"fn_name": "f", "inputs": [[1]], "outputs": [[123456789012345678901234567890]]}'
    )
    assert big is not None and big.function is not None
    assert big.function.expected_base == (123456789012345678901234567890,)
    assert parse_input_output('{"inputs": [], "outputs": []}') is None


def test_taco_layout_ids_tests_and_skips(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "taco" / "train.jsonl", TACO_ROWS)
    items = list(taco(tmp_path / "taco", split="train").scan())
    first, second, broken, empty, uneven = items
    assert isinstance(first, Problem) and first.id == "taco/train/0"
    assert first.kind is TaskKind.CODE and first.tests is not None
    assert [c.stdin for c in first.tests.stdio] == ["1\n", "2\n3"]
    assert first.metadata["io_format"] == "stdio" and first.metadata["difficulty"] == "EASY"
    assert first.source == "codeforces"
    assert isinstance(second, Problem) and second.tests is not None
    assert second.tests.function is not None and second.tests.function.entry_point == "total"
    assert "class Solution" in second.prompt and second.metadata["starter_code"]
    assert isinstance(broken, Skipped) and broken.reason is SkipReason.INVALID_ROW
    assert isinstance(empty, Skipped) and empty.reason is SkipReason.NO_TESTS
    assert isinstance(uneven, Skipped) and uneven.reason is SkipReason.INVALID_ROW
    assert empty.problem_id == "taco/train/3"


def test_apps_ids_come_from_problem_id(tmp_path: Path) -> None:
    rows = [{**r, "problem_id": 4000 + i} for i, r in enumerate(TACO_ROWS[:2])]
    for r in rows:
        r.pop("source")
    write_jsonl(tmp_path / "apps" / "test.jsonl", rows)
    write_jsonl(tmp_path / "apps" / "train.jsonl", [{**TACO_ROWS[0], "problem_id": 0}])
    problems = list(apps(tmp_path / "apps", split="test"))
    assert [p.id for p in problems] == ["apps/test/4000", "apps/test/4001"]
    assert problems[0].source == "apps"


def _cc_row(name: str, **extra: Any) -> dict[str, Any]:
    row = {
        "name": name,
        "description": f"Problem {name}: read a and b, print a+b.",
        "public_tests": {"input": ["1 2\n"], "output": ["3\n"]},
        "private_tests": {"input": ["5 5\n"], "output": ["10\n"]},
        "generated_tests": {"input": ["0 0\n", "9 1\n"], "output": ["0\n", "10\n"]},
        "source": 5,
        "difficulty": 19,
        "solutions": {"language": [3], "solution": ["print(sum(map(int, input().split())))"]},
        "cf_rating": 800,
        "cf_tags": ["math"],
        "time_limit": {"seconds": 2, "nanos": 500000000},
        "memory_limit_bytes": 256000000,
        "input_file": "",
        "output_file": "",
    }
    return {**row, **extra}


def test_code_contests_layout(tmp_path: Path) -> None:
    rows = [
        _cc_row("1_A. Sum"),
        _cc_row("2_B. Files", input_file="input.txt", output_file="output.txt"),
        _cc_row(
            "3_C. Empty",
            public_tests={"input": [], "output": []},
            private_tests={"input": [], "output": []},
        ),
    ]
    write_parquet(tmp_path / "cc" / "data" / "valid-00000-of-00001.parquet", rows)
    first, files, empty = code_contests(tmp_path / "cc", split="valid").scan()
    assert isinstance(first, Problem) and first.id == "code_contests/valid/1_A. Sum"
    assert first.tests is not None and [c.stdout for c in first.tests.stdio] == ["3\n", "10\n"]
    assert first.source == "atcoder"  # Hub-encoded source 5
    assert first.metadata["difficulty"] == "L"  # proto value 19 (18 is unused)
    assert first.metadata["time_limit_s"] == 2.5
    assert isinstance(files, Skipped) and files.reason is SkipReason.NO_TESTS
    assert isinstance(empty, Skipped) and empty.reason is SkipReason.NO_TESTS
    everything = code_contests(
        tmp_path / "cc", split="valid", test_sets=("public", "private", "generated"), max_tests=3
    )
    problem, generated_only = list(everything)  # the third row has generated tests
    assert problem.tests is not None and problem.tests.count == 3
    assert generated_only.tests is not None and generated_only.tests.count == 2


def test_codeforces_layout(tmp_path: Path) -> None:
    rows = [
        {
            "id": "1/A",
            "description": "Print the sum.",
            "input_format": "Two integers.",
            "output_format": "One integer.",
            "interaction_format": None,
            "note": None,
            "examples": [{"input": "1 2", "output": "3"}],
            "official_tests": [{"input": "1 2", "output": "3"}, {"input": "2 2", "output": "4"}],
            "rating": 800,
            "tags": ["math"],
            "time_limit": 1.0,
            "memory_limit": 256.0,
            "generated_checker": None,
        },
        {
            "id": "1/B",
            "description": "Guess the number.",
            "interaction_format": "Ask queries.",
            "official_tests": [],
        },
    ]
    write_jsonl(tmp_path / "train.jsonl", rows)
    first, interactive = codeforces(tmp_path / "train.jsonl").scan()
    assert isinstance(first, Problem) and first.id == "codeforces/1/A"
    assert first.prompt.startswith("Print the sum.\n\nInput\n\nTwo integers.\n\nOutput\n\n")
    assert "Examples\n\nInput\n\n1 2\n\nOutput\n\n3" in first.prompt
    assert first.tests is not None and first.tests.count == 2
    assert isinstance(interactive, Skipped) and interactive.reason is SkipReason.NO_TESTS


def test_mbpp_layout(tmp_path: Path) -> None:
    rows = [
        {
            "task_id": 11,
            "text": "Write a function to remove first and last occurrence of a given character.",
            "code": "def remove_Occ(s,ch): ...",
            "test_list": [
                'assert remove_Occ("hello","l") == "heo"',
                'assert remove_Occ("abcda","a") == "bcd"',
            ],
            "test_setup_code": "import math",
            "challenge_test_list": [],
        },
        {"task_id": 12, "text": "No tests.", "code": "", "test_list": [], "test_setup_code": ""},
    ]
    write_parquet(tmp_path / "full" / "train-00000-of-00001.parquet", rows)
    first, no_tests = mbpp(tmp_path / "full").scan()
    assert isinstance(first, Problem) and first.id == "mbpp/11"
    assert first.tests is not None and len(first.tests.asserts) == 2
    assert first.tests.setup == "import math"
    assert first.metadata["entry_point"] == "remove_Occ"
    assert first.prompt.endswith('assert remove_Occ("hello","l") == "heo"')
    assert 'remove_Occ("abcda"' not in first.prompt  # only the first test is shown
    assert isinstance(no_tests, Skipped) and no_tests.reason is SkipReason.NO_TESTS


async def test_code_pool_excludes_problems_without_tests(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "taco.jsonl", TACO_ROWS)
    source = CodeSource.from_files(path, TacoRowParser(name="taco", split="train"))
    pool = await source.sample(10, seed=3)
    assert sorted(pool.ids) == ["taco/train/0", "taco/train/1"]
    assert pool.report.skipped == {"no-tests": 1, "invalid-row": 2}
    examples = pool.report.examples["no-tests"]
    assert examples[0].row == 3 and examples[0].problem_id == "taco/train/3"
    assert pool.report.short


def _ocr_rows() -> list[dict[str, Any]]:
    base = {"output": "<think>...</think>", "solution": "print(1)", "license": "CC BY 4.0"}
    return [
        # split_1 style: no text, origin by index (two traces of the same question)
        {**base, "id": "q1", "input": "-", "dataset": "taco", "split": "train", "index": "1",
         "source": "leetcode", "difficulty": "MEDIUM"},
        {**base, "id": "q1", "input": "-", "dataset": "taco", "split": "train", "index": "1",
         "source": "leetcode", "difficulty": "MEDIUM"},
        # split_0 style: text given, matched by normalized text
        {**base, "id": "q2", "input": "  problem 1_a. sum: READ a and b, print a+b.",
         "dataset": "code_contests", "split": "train", "index": None, "source": "codeforces",
         "difficulty": "7"},
        # origin row without tests
        {**base, "id": "q3", "input": "-", "dataset": "taco", "split": "train", "index": "3",
         "source": "x", "difficulty": "EASY"},
        # origin dataset not provided
        {**base, "id": "q4", "input": "Some codeforces task", "dataset": "open-r1/codeforces",
         "split": "train", "index": None, "source": "codeforces", "difficulty": "1200"},
        # a malformed index
        {**base, "id": "q6", "input": "-", "dataset": "taco", "split": "train", "index": "x"},
        # index beyond the origin split
        {**base, "id": "q5", "input": "-", "dataset": "taco", "split": "train", "index": "99",
         "source": "x", "difficulty": "EASY"},
    ]  # fmt: skip


async def test_open_code_reasoning_join(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "taco" / "train.jsonl", TACO_ROWS)
    write_jsonl(tmp_path / "taco" / "test.jsonl", TACO_ROWS[:1])
    write_parquet(tmp_path / "cc" / "train-00000-of-00001.parquet", [_cc_row("1_A. Sum")])
    ocr_path = write_parquet(tmp_path / "ocr" / "split_1" / "train-0.parquet", _ocr_rows())
    tests = {
        "taco": [taco(tmp_path / "taco", split="test"), taco(tmp_path / "taco", split="train")],
        "code_contests": code_contests(tmp_path / "cc", split="train"),
    }
    source = open_code_reasoning(tests, ocr_path)
    assert isinstance(source, OpenCodeReasoningSource)
    items = list(source.scan())
    problems = {i.id: i for i in items if isinstance(i, Problem)}
    skipped = {i.problem_id: i for i in items if isinstance(i, Skipped)}
    assert set(problems) == {"ocr/q1", "ocr/q2"}
    q1 = problems["ocr/q1"]
    assert q1.tests is not None and q1.tests.function is not None  # TACO train row 1
    assert "Return the sum of a list." in q1.prompt  # text taken from the origin row
    assert q1.metadata["origin_id"] == "taco/train/1" and q1.metadata["origin_index"] == 1
    assert q1.metadata["difficulty"] == "MEDIUM" and q1.source == "leetcode"
    q2 = problems["ocr/q2"]
    assert q2.prompt.startswith("problem 1_a. sum")  # OpenCodeReasoning's own text
    assert q2.tests is not None and q2.tests.count == 2
    assert q2.metadata["origin_id"] == "code_contests/train/1_A. Sum"
    assert skipped["ocr/q3"].reason is SkipReason.NO_TESTS and "no test" in skipped["ocr/q3"].detail
    assert "no test source given" in skipped["ocr/q4"].detail
    assert "not found" in skipped["ocr/q5"].detail
    assert skipped["ocr/q6"].reason is SkipReason.INVALID_ROW
    assert ocr_problem_id(_ocr_rows()[0]) == "ocr/q1"
    pool = await source.sample(None)
    assert sorted(pool.ids) == ["ocr/q1", "ocr/q2"]
    assert pool.report.skipped == {"no-tests": 3, "invalid-row": 1}


@pytest.mark.skipif(not MBPPPLUS.exists(), reason="../shared/data/mbppplus_378.jsonl missing")
async def test_mbpp_pool_decontaminated_against_mbppplus(tmp_path: Path) -> None:
    plus = read_benchmark_texts(MBPPPLUS, text_field="prompt", id_field="task_id")
    task_id, leaked = next(iter(plus.items()))
    rows = [
        {"task_id": 1000 + i, "text": f"Write a function number {i} that returns {i}.",
         "test_list": [f"assert f{i}() == {i}"]}
        for i in range(20)
    ]  # fmt: skip
    rows.append({"task_id": 2, "text": leaked.strip().strip('"'), "test_list": ["assert True"]})
    path = write_jsonl(tmp_path / "mbpp.jsonl", rows)
    source = mbpp(path)
    pool = await source.sample(None, decontaminate=Decontaminator({"MBPP+": plus}))
    assert len(pool) == 20 and "mbpp/2" not in pool.ids
    assert {(o.problem_id, o.benchmark_id) for o in pool.report.overlaps} >= {("mbpp/2", task_id)}
