from __future__ import annotations

import asyncio
import concurrent.futures
import json
import multiprocessing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest

from tracedistill.problems import GoldChecker

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
MATH500 = SHARED / "math500_test.jsonl"
MBPPPLUS = SHARED / "mbppplus_378.jsonl"


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # json, not orjson: rows may hold integers beyond 64 bits, as MBPP+ does
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_parquet(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(list(rows)), path)
    return path


def _parse_gold(answer: str) -> str | None:
    # Runs in a worker process: math-verify's timeouts need a main thread.
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    text = answer if "\\boxed" in answer else f"\\boxed{{{answer}}}"
    try:
        parsed = parse(text, extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()])
    except Exception:
        return None
    # parse gives [expression, text] on success and only strings when it cannot parse
    if not parsed or isinstance(parsed[0], str):
        return None
    return str(parsed[0])


@pytest.fixture(scope="session")
def math_verify_checker() -> Iterator[GoldChecker]:
    """A gold checker that runs math_verify.parse in a worker process."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:

        async def check(answers: Sequence[str]) -> list[str | None]:
            return await anyio.to_thread.run_sync(lambda: list(pool.map(_parse_gold, answers)))

        yield check


class CountingChecker:
    """A deterministic in-process checker: answers containing 'BAD' do not parse."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    async def __call__(self, answers: Sequence[str]) -> list[str | None]:
        self.calls.append(len(answers))
        await asyncio.sleep(0)
        return [None if "BAD" in a else a for a in answers]


@pytest.fixture
def checker() -> CountingChecker:
    return CountingChecker()
