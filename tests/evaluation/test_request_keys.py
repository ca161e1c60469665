"""The evaluation request key has one home (records.messages) and a fixed layout: logs stored
before it moved still resume without sampling again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from tracedistill.clients.base import Sampler, greedy
from tracedistill.evaluation import Completion, EvalStore, Evaluator
from tracedistill.evaluation.benchmarks import custom_benchmark
from tracedistill.records import FinishReason, Message, Problem, content_hash
from tracedistill.records.messages import evaluation_request_key


def test_keys_are_the_ones_logs_were_written_with() -> None:
    params = greedy(512, stop=("</s>",))
    chat = [Message("user", "What is 1+1?")]
    # values computed by the evaluator's own function before the key moved to records
    assert evaluation_request_key("m", chat, params) == "42828db89c11920e482b80412afc9628"
    text = 'def f(x):\n    """Add one."""\n'
    assert evaluation_request_key("m", text, params) == "9936fe2b3bc76c578c38ce342e75ca1f"
    # the deprecated name: same keys, with a DeprecationWarning
    with pytest.warns(DeprecationWarning, match="evaluation_request_key"):
        from tracedistill.evaluation.evaluator import request_key_of
    assert request_key_of("m", chat, params) == "42828db89c11920e482b80412afc9628"


class _NeverSampler(Sampler):
    """Fails the test if the evaluation samples anything."""

    def __init__(self) -> None:
        super().__init__(max_concurrency=1)
        self.model = "m"

    async def _sample(self, prompt: Any, params: Any) -> Completion:
        raise AssertionError(f"sampled again: {prompt!r}")


def test_a_log_written_before_the_move_resumes_without_sampling(tmp_path: Path) -> None:
    problem = Problem(kind="math", prompt="What is 1+1?", answer="2", id="p0")
    bench = custom_benchmark("b", [problem], template="{prompt}", max_tokens=64)
    prompt = bench.prompt(problem)
    params = greedy(bench.max_tokens, stop=bench.stop)
    # the key's layout as stored logs have it, written out here on purpose
    rendered = prompt if isinstance(prompt, str) else [m.to_dict() for m in prompt]
    key = content_hash({"model": "m", "prompt": rendered, "params": params.to_dict()})
    header = {"label": "base", "model": "m", "benchmark": "b", "benchmark_sha256": bench.sha256}
    with EvalStore(tmp_path).open("base", "b", header) as log:
        log.add_sample("p0", key, Completion(text=r"\boxed{2}", finish_reason=FinishReason.STOP))

    async def main() -> Any:
        async with Evaluator(tmp_path, progress=False) as evaluator:
            return await evaluator.evaluate(_NeverSampler(), bench, label="base")

    result = anyio.run(main)
    assert (result.n, result.correct, result.complete) == (1, 1, True)
