"""The model-client primitive and the old import paths of what moved into clients/ and records/."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import pytest

from tracedistill.clients import ModelClient, greedy
from tracedistill.clients.base import Prompt
from tracedistill.records import Completion, FinishReason, Message, SamplingParams

pytestmark = pytest.mark.anyio


class Echo(ModelClient):
    """Answers with the last message and remembers the parameters it was asked with."""

    name = "echo"

    def __init__(self) -> None:
        super().__init__(max_concurrency=2)
        self.model = "echo-1"
        self.seen: list[SamplingParams] = []

    async def _sample(self, prompt: Prompt, params: SamplingParams) -> Completion:
        self.seen.append(params)
        text = prompt if isinstance(prompt, str) else prompt[-1].content
        return Completion(text=text, finish_reason=FinishReason.STOP, completion_tokens=1)


async def test_complete_is_greedy_by_default() -> None:
    async with Echo() as client:
        out = await client.complete([Message("user", "2+2?")], max_tokens=16, stop=["\n"])
    assert out.text == "2+2?"
    assert out.latency_s > 0.0  # filled in by the interface when the backend leaves it at 0
    assert client.seen == [greedy(16, stop=["\n"])]


async def test_complete_with_a_temperature_samples() -> None:
    client = Echo()
    await client.complete("raw text", max_tokens=8, temperature=0.7, seed_hint="x")
    (params,) = client.seen
    assert params.temperature == 0.7
    assert params.top_k is None
    assert params.extra == {"seed_hint": "x"}


async def test_complete_checks_its_arguments_like_sample() -> None:
    client = Echo()
    with pytest.raises(Exception, match="at least one message"):
        await client.complete([], max_tokens=8)
    with pytest.raises(Exception, match="max_tokens"):
        await client.complete("x", max_tokens=0)


# The old paths warn (tests/test_deprecated_names.py checks that); here, only what they name.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_old_paths_name_the_same_objects() -> None:
    from tracedistill import records, teachers
    from tracedistill.clients import base, openai_compat
    from tracedistill.evaluation import base as eval_base
    from tracedistill.evaluation import evaluator
    from tracedistill.evaluation.samplers import openai_compat as old_openai
    from tracedistill.training import checkpoints

    assert eval_base.Sampler is base.Sampler is ModelClient
    assert eval_base.Completion is records.Completion
    assert checkpoints.Checkpoint is records.Checkpoint
    assert checkpoints.SamplerWeights is records.SamplerWeights
    assert teachers.Completion is teachers.TeacherCompletion
    assert teachers.Completion is not records.Completion
    assert evaluator.SamplerFactory is evaluator.CheckpointSamplerFactory
    assert old_openai.OpenAICompatibleSampler is openai_compat.OpenAICompatibleSampler
    assert issubclass(teachers.HttpTeacher, teachers.Teacher)


@pytest.mark.parametrize(
    ("old", "new", "name"),
    [
        ("tracedistill.teachers.ratelimit", "tracedistill.clients.ratelimit", "RateLimits"),
        ("tracedistill.teachers.retry", "tracedistill.clients.retry", "RetryPolicy"),
    ],
)
def test_moved_modules_warn_and_still_work(old: str, new: str, name: str) -> None:
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=new):
        module: Any = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)


def test_the_client_floor_loads_no_heavy_backend() -> None:
    # The tinker SDK and torch load only with their backends' modules.
    code = (
        "import sys, tracedistill.clients, tracedistill.teachers;"
        "print('torch' in sys.modules, 'tinker' in sys.modules)"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
