"""Child process of ``bench_teachers.py --baseline-src``: client CPU ms per request of
``generate()`` (engine, teacher, HTTP client and store) against a zero-latency server.

It uses only the package's top-level names, so that an older revision's ``src/`` (put first on
``PYTHONPATH`` by the parent) runs the very same measurement. Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Iterator

import anyio

from tracedistill import JsonlTraceStore, OpenAICompatTeacher, Problem, SamplingParams, generate


def problems(count: int, tag: str) -> Iterator[Problem]:
    for i in range(count):
        yield Problem(kind="math", prompt=f"{tag} problem {i}: compute {i} * 3", answer=str(3 * i))


async def main(url: str, count: int) -> None:
    teacher = OpenAICompatTeacher(
        "bench/model",
        base_url=url + "/v1",
        params=SamplingParams(max_tokens=64),
        reports_cost=True,
    )
    with tempfile.TemporaryDirectory() as tmp, JsonlTraceStore(tmp) as store:
        tag = f"child{time.monotonic_ns()}"
        await generate(teacher, problems(200, tag + "warm"), store, concurrency=64, progress=False)
        c0 = time.process_time()
        summary = await generate(
            teacher, problems(count, tag), store, concurrency=64, progress=False
        )
        cpu = time.process_time() - c0
    await teacher.aclose()
    print(json.dumps({"ms_per_request": cpu * 1000.0 / max(summary.done, 1), "done": summary.done}))


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], int(sys.argv[2]))
