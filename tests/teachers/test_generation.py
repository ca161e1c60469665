"""Generation as an object: StreamingGeneration behind generate(), shared Generation counters."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.servers.openai_server import OpenAIServer
from tracedistill import JsonlTraceStore, Problem
from tracedistill.errors import ConfigurationError
from tracedistill.teachers.engine import Generation, StreamingGeneration, iter_problem_batches

from .conftest import math_problems, openai_teacher

pytestmark = pytest.mark.anyio


async def test_streaming_generation_runs_like_generate(
    openai_server: OpenAIServer, store: JsonlTraceStore
) -> None:
    teacher = openai_teacher(openai_server)
    problems = math_problems(30, "obj-")
    generation = StreamingGeneration(teacher, store, n=2, concurrency=8, progress=False)
    summary = await generation.run(problems)
    await teacher.aclose()
    assert summary.done == 60 and summary.problems == 30 and summary.skipped == 0
    assert len(store) == 60
    # the summary is read from the object's own counters
    assert (generation.done, generation.requested, generation.attempts) == (60, 60, 60)
    assert generation.summary().done == summary.done
    assert generation.inflight == set()  # every request handed out was finished
    # a second object over the same store finds everything answered (resume)
    again = StreamingGeneration(teacher, store, n=2, progress=False)
    summary = await again.run(problems)
    await teacher.aclose()
    assert summary.done == 0 and summary.skipped == 60


async def test_arguments_are_checked_when_the_object_is_built(
    openai_server: OpenAIServer, store: JsonlTraceStore
) -> None:
    teacher = openai_teacher(openai_server)
    with pytest.raises(ConfigurationError, match="n must be"):
        Generation(teacher, store, n=0)
    with pytest.raises(ConfigurationError, match="concurrency"):
        StreamingGeneration(teacher, store, concurrency=0)
    with pytest.raises(ConfigurationError, match="resample_truncated"):
        StreamingGeneration(teacher, store, resample_truncated=-1)


async def test_problem_batches_keep_order_and_size() -> None:
    problems = math_problems(600, "b-")
    sizes: list[int] = []
    seen: list[Problem] = []

    async def agen() -> AsyncIterator[Problem]:
        for problem in problems:
            yield problem

    for source in (problems, iter(problems), agen()):
        sizes.clear()
        seen.clear()
        async for batch in iter_problem_batches(source):
            sizes.append(len(batch))
            seen.extend(batch)
        assert sizes == [256, 256, 88] and seen == problems
