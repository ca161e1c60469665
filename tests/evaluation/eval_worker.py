"""Run one evaluation against a loopback server (the resume test kills this process)."""

from __future__ import annotations

import sys

import anyio

from tests.evaluation.helpers import arithmetic_benchmark
from tracedistill.clients.openai_compat import OpenAICompatibleSampler
from tracedistill.evaluation import Evaluator
from tracedistill.verifiers import MathVerifier


async def main(url: str, run_dir: str, n: int) -> None:
    async with (
        MathVerifier(workers=1) as verifier,
        OpenAICompatibleSampler("student", base_url=url + "/v1", max_concurrency=4) as sampler,
    ):
        result = await Evaluator(run_dir, verifiers={"math": verifier}).evaluate(
            sampler, arithmetic_benchmark(n), label="ckpt-100"
        )
    print(f"RESULT {result.correct} {result.n}", flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
