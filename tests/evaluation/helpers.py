"""Shared test fixtures of the evaluation tests: arithmetic problems with a scripted model."""

from __future__ import annotations

import re
from typing import Any

from tests.servers.openai_server import OpenAIServer, Reply
from tracedistill.evaluation import custom_benchmark
from tracedistill.evaluation.benchmarks import Benchmark
from tracedistill.records import Problem, TaskKind

_INDEX = re.compile(r"Problem (\d+):")


def arithmetic_problems(n: int) -> list[Problem]:
    return [
        Problem(
            kind=TaskKind.MATH,
            prompt=f"Problem {i}: what is {i} plus {i + 1}?",
            answer=str(2 * i + 1),
            id=f"arith/{i}",
        )
        for i in range(n)
    ]


def arithmetic_benchmark(n: int) -> Benchmark:
    return custom_benchmark("arith", arithmetic_problems(n), max_tokens=256)


def is_correct(index: int) -> bool:
    """The scripted model solves problem i unless i % 7 in (0, 3) (so 5 of every 7)."""
    return index % 7 not in (0, 3)


def expected_correct(n: int) -> int:
    return sum(is_correct(i) for i in range(n))


def index_of(prompt: str) -> int:
    match = _INDEX.search(prompt)
    assert match is not None, prompt
    return int(match.group(1))


def responder(prompt: str, request: dict[str, Any]) -> Reply:
    i = index_of(prompt)
    value = 2 * i + 1 if is_correct(i) else 2 * i + 2
    return Reply(reasoning=f"Adding {i} and {i + 1}.", answer=f"The sum is \\boxed{{{value}}}.")


class CompletionsServer(OpenAIServer):
    """The loopback server's ``/v1/completions`` flavour (text prompts, as vLLM serves them)."""

    path = "/v1/completions"

    def prompt_of(self, request: dict[str, Any]) -> str:
        return str(request.get("prompt", ""))

    def success_body(self, request: dict[str, Any], reply: Reply, cost: float) -> dict[str, Any]:
        body = super().success_body(request, reply, cost)
        message = body["choices"][0].pop("message")
        body["choices"][0]["text"] = message["content"]
        body["object"] = "text_completion"
        return body
