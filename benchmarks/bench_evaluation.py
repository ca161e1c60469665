"""Evaluation benchmark: grading time of whole benchmarks, and sampling overhead under latency.

1. Grading: 500 MATH-500 responses (gold solutions in a think block, one in five with a wrong
   final answer) and 378 MBPP+ responses (reference solutions in a fenced block, one in five
   broken) through the evaluator's grading path, reusing one verifier pool per benchmark.
   MBPP+ reference outputs are computed (or found in the on-disk cache) first, untimed, as a
   real evaluation of many checkpoints pays them once. Reports responses per second and, for
   MATH-500, the pool's speedup over one worker measured in the same run.
2. Sampling under latency: a loopback OpenAI-compatible server answering every request after
   200 ms; a whole evaluation (sample + grade + store) of MATH-500 at a fixed concurrency.
   Reports the wall time against the ideal ``n * latency / concurrency`` (target ratio
   ideal/actual >= 0.8), and checks the reported accuracy is exactly the scripted one.

Run: ``.venv/bin/python benchmarks/bench_evaluation.py [--quick]``. Data comes from
``../shared/data`` (relative to the project root).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TRACEDISTILL_PROGRESS", "0")

from tests.servers.openai_server import OpenAIServer, Reply  # noqa: E402

from tracedistill.evaluation import Benchmark, Evaluator, math500, mbpp_plus  # noqa: E402
from tracedistill.problems._io import iter_jsonl  # noqa: E402
from tracedistill.records import FinishReason, Problem  # noqa: E402
from tracedistill.verifiers.code import CodeVerifier  # noqa: E402
from tracedistill.verifiers.math import MathVerifier  # noqa: E402


def math_response(problem: Problem, index: int, solution: str) -> tuple[str, bool]:
    correct = index % 5 != 4
    answer = problem.answer if correct else f"{problem.answer}+1"
    return f"<think>\n{solution}\n</think>\n\nThe final answer is $\\boxed{{{answer}}}$.", correct


def code_response(problem: Problem, index: int) -> tuple[str, bool]:
    assert problem.tests is not None and problem.tests.function is not None
    solution = str(problem.tests.function.reference_solution)
    correct = index % 5 != 4
    if not correct:
        solution += f"\n\ndef {problem.tests.function.entry_point}(*args):\n    return None\n"
    return f"<think>\nplan\n</think>\n\n```python\n{solution}\n```", correct


async def grade_all(
    evaluator: Evaluator, bench: Benchmark, responses: list[str]
) -> tuple[float, int]:
    passed = 0
    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        limiter = anyio.CapacityLimiter(evaluator.verifier_for(bench).default_concurrency)

        async def one(problem: Problem, text: str) -> None:
            nonlocal passed
            async with limiter:
                result = await evaluator.grade(bench, problem, text, FinishReason.STOP)
            passed += result.passed

        for problem, text in zip(bench.problems, responses, strict=True):
            tg.start_soon(one, problem, text)
    return time.perf_counter() - start, passed


async def bench_math_grading(n: int, workers: int) -> None:
    bench = math500(DATA / "math500_test.jsonl").subset(n)
    solutions = [str(row["solution"]) for row in iter_jsonl(DATA / "math500_test.jsonl")]
    pairs = [math_response(p, i, solutions[i]) for i, p in enumerate(bench.problems)]
    texts = [t for t, _ in pairs]
    times: dict[int, float] = {}
    for w in sorted({1, workers}):
        async with MathVerifier(workers=w) as verifier:
            await verifier.start()
            evaluator = Evaluator(verifiers={"math": verifier})
            times[w], passed = await grade_all(evaluator, bench, texts)
        expected = sum(ok for _, ok in pairs)
        print(
            f"MATH-500 grading, {w} worker(s): {n} responses in {times[w]:.2f}s "
            f"({n / times[w]:.0f}/s); {passed} passed (expected {expected})"
        )
    if workers > 1:
        print(f"  pool speedup {workers} vs 1 worker: {times[1] / times[workers]:.2f}x")


async def bench_code_grading(n: int, workers: int) -> None:
    bench = mbpp_plus(DATA / "mbppplus_378.jsonl").subset(n)
    pairs = [code_response(p, i) for i, p in enumerate(bench.problems)]
    async with CodeVerifier(workers=workers) as verifier:
        evaluator = Evaluator(verifiers={"code": verifier})
        # Reference outputs: computed once per task (cached on disk), untimed.
        start = time.perf_counter()
        ref_texts = [code_response(p, 0)[0] for p in bench.problems]
        await grade_all(evaluator, bench, ref_texts)
        warm = time.perf_counter() - start
        elapsed, passed = await grade_all(evaluator, bench, [t for t, _ in pairs])
    expected = sum(ok for _, ok in pairs)
    print(
        f"MBPP+ grading, {workers} sandbox worker(s): {n} responses in {elapsed:.2f}s "
        f"({n / elapsed:.1f}/s); {passed} passed (expected about {expected}); reference "
        f"outputs + first pass {warm:.1f}s"
    )


async def bench_latency(n: int, concurrency: int, latency: float) -> None:
    bench = math500(DATA / "math500_test.jsonl").subset(n)
    answers = {p.prompt: (p.answer, i % 4 != 0) for i, p in enumerate(bench.problems)}

    def responder(prompt: str, request: dict[str, Any]) -> Reply:
        for text, (answer, ok) in answers.items():
            if prompt.startswith(text):
                return Reply(reasoning="Thinking.", answer=f"\\boxed{{{answer if ok else 'x'}}}")
        raise AssertionError("unknown prompt")

    expected = sum(ok for _, ok in answers.values())
    from tracedistill.clients.openai_compat import OpenAICompatibleSampler

    with (
        OpenAIServer(responder=responder, latency=latency) as server,
        tempfile.TemporaryDirectory() as tmp,
    ):
        async with (
            MathVerifier(workers=2) as verifier,
            OpenAICompatibleSampler(
                "student", base_url=server.url + "/v1", max_concurrency=concurrency
            ) as sampler,
        ):
            # Warm the grader (worker start, math-verify import): a study reuses one pool for
            # every checkpoint, so its start-up is not part of one evaluation.
            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(verifier.check_answer, "1", "\\boxed{1}")
            evaluator = Evaluator(tmp, verifiers={"math": verifier})
            start = time.perf_counter()
            result = await evaluator.evaluate(sampler, bench, label="bench")
            elapsed = time.perf_counter() - start
    ideal = n * latency / concurrency
    ok = "exact" if result.correct == expected else f"WRONG (expected {expected})"
    print(
        f"evaluation at {latency * 1000:.0f} ms latency, concurrency {concurrency}: {n} problems "
        f"in {elapsed:.2f}s, ideal {ideal:.2f}s -> ideal/actual {ideal / elapsed:.2f} "
        f"(target >= 0.8); accuracy {result.accuracy:.3f} {result.interval.percent()} {ok}; "
        f"peak in flight {server.stats.max_inflight}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few seconds: small subsets")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not (DATA / "math500_test.jsonl").is_file():
        sys.exit(f"benchmark data not found in {DATA}")
    quick = args.quick
    anyio.run(bench_math_grading, 50 if quick else 500, args.workers)
    anyio.run(bench_code_grading, 10 if quick else 378, args.workers)
    anyio.run(bench_latency, 60 if quick else 500, 20 if quick else 50, 0.2)


if __name__ == "__main__":
    main()
