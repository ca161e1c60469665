"""A writer process for the crash test: prints each request key once its write is acknowledged."""

from __future__ import annotations

import random
import sys

import anyio

from tests.store.conftest import make_problem, make_trace
from tracedistill.records import Verdict, VerdictReason
from tracedistill.store import JsonlTraceStore


async def main(path: str, total: int, seed: int) -> None:
    rng = random.Random(seed)
    problems = [make_problem(i) for i in range(total)]
    store = JsonlTraceStore(path)
    await store.add_problems(problems)
    pending = [p for p in problems if not store.has(make_trace(p).key)]
    i = 0
    while i < len(pending):
        if rng.random() < 0.3:  # a batch write
            chunk = pending[i : i + rng.randint(2, 20)]
            traces = [make_trace(p, reasoning="x" * rng.randint(10, 200_000)) for p in chunk]
            await store.add_traces(traces)
            keys = [t.key for t in traces]
        else:
            chunk = pending[i : i + 1]
            trace = make_trace(chunk[0], reasoning="y" * rng.randint(10, 200_000))
            await store.add_trace(trace)
            await store.add_verdict(
                Verdict(
                    trace_key=trace.key,
                    problem_id=trace.problem_id,
                    verifier="v",
                    verifier_version="1",
                    passed=True,
                    reason=VerdictReason.PASSED,
                )
            )
            keys = [trace.key]
        sys.stdout.write("".join(k + "\n" for k in keys))
        sys.stdout.flush()
        i += len(chunk)
    store.close()
    sys.stdout.write("DONE\n")
    sys.stdout.flush()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
