"""Private loaders of the benchmark files for the verifier tests and benchmark.

The official loaders belong to the evaluation package; these stay here on purpose.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from tracedistill.records import CodeTests, FunctionTests, Problem, TaskKind
from tracedistill.verifiers.code import EVALPLUS_METADATA_KEY

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
MBPP_PATH = DATA / "mbppplus_378.jsonl"
MATH_PATH = DATA / "math500_test.jsonl"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    # orjson keeps Python ints only up to 64 bits; MBPP+ has larger ones, so use json there.
    import json

    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def mbppplus_problem(row: dict[str, Any]) -> Problem:
    """One MBPP+ row as a Problem (inputs stay as JSON; evalplus rules via metadata)."""
    return Problem(
        id=row["task_id"],
        kind=TaskKind.CODE,
        prompt=row["prompt"],
        source="mbppplus",
        tests=CodeTests(
            function=FunctionTests(
                entry_point=row["entry_point"],
                base_inputs=row["base_input"],
                plus_inputs=row["plus_input"],
                reference_solution=row["prompt"] + row["canonical_solution"],
                atol=row["atol"],
            )
        ),
        metadata={EVALPLUS_METADATA_KEY: {"dataset": "mbpp", "task_id": row["task_id"]}},
    )


def load_mbppplus_problems(path: Path = MBPP_PATH) -> list[tuple[Problem, dict[str, Any]]]:
    return [(mbppplus_problem(row), row) for row in read_jsonl(path)]


def load_math500_problems(path: Path = MATH_PATH) -> list[Problem]:
    return [
        Problem(
            kind=TaskKind.MATH,
            prompt=row["problem"],
            answer=row["answer"],
            id=row["unique_id"],
            source="math500",
        )
        for row in (orjson.loads(line) for line in path.read_bytes().splitlines() if line)
    ]


needs_mbpp = pytest.mark.skipif(
    not MBPP_PATH.exists(), reason=f"MBPP+ data not found at {MBPP_PATH}"
)
needs_math = pytest.mark.skipif(
    not MATH_PATH.exists(), reason=f"MATH-500 data not found at {MATH_PATH}"
)
