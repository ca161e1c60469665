"""Run generate() against a server until done (or until the test kills this process)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
os.environ.setdefault("TRACEDISTILL_PROGRESS", "0")

import anyio

from tracedistill import JsonlTraceStore, Problem, SamplingParams
from tracedistill.teachers import OpenAICompatTeacher, RetryPolicy, generate


def problems(count: int):  # type: ignore[no-untyped-def]
    for i in range(count):
        yield Problem(kind="math", prompt=f"crash {i}: what is {i} squared?", answer=str(i * i))


async def main(url: str, store_path: str, count: int) -> None:
    teacher = OpenAICompatTeacher(
        "loop/model",
        base_url=url + "/v1",
        params=SamplingParams(max_tokens=32),
        reports_cost=True,
        retry=RetryPolicy(base_delay=0.01, max_delay=0.05),
    )
    with JsonlTraceStore(store_path) as store:
        summary = await generate(teacher, problems(count), store, n=2, concurrency=16)
        print(f"DONE {summary.done} {summary.skipped}", flush=True)
    await teacher.aclose()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
