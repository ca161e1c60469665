"""Generation as an object: StreamingGeneration behind generate(), shared GenerationRun counters."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from tests.servers.openai_server import Fault, OpenAIServer
from tracedistill import JsonlTraceStore, Problem, Trace
from tracedistill.errors import ConfigurationError
from tracedistill.teachers import RetryPolicy
from tracedistill.teachers.engine import (
    GenerationRun,
    StreamingGeneration,
    generate,
    iter_problem_batches,
)

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
        GenerationRun(teacher, store, n=0)
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


class _SlowStore(JsonlTraceStore):
    """A store that must wait to write (as a remote store would): add_trace_nowait refuses."""

    started = 0

    def add_trace_nowait(self, trace: Trace) -> bool:
        raise anyio.WouldBlock

    async def add_trace(self, trace: Trace) -> bool:
        self.started += 1
        await anyio.sleep(0.05)  # a cancellation arrives here unless the engine shields it
        return await super().add_trace(trace)


async def test_cancel_during_a_waiting_store_still_stores_the_answer(
    openai_server: OpenAIServer, tmp_path: Path
) -> None:
    teacher = openai_teacher(openai_server)
    with _SlowStore(tmp_path / "slow") as store:
        with anyio.move_on_after(30):
            async with anyio.create_task_group() as tg:

                async def cancel_mid_store() -> None:
                    while store.started < 5:  # noqa: ASYNC110 - polls the store's counter
                        await anyio.sleep(0.005)
                    tg.cancel_scope.cancel()  # several traces are inside add_trace now

                tg.start_soon(cancel_mid_store)
                await generate(teacher, math_problems(200, "slow-"), store, concurrency=8)
        await teacher.aclose()
        # every answer whose storing began was stored, none twice
        assert store.started >= 5 and len(store) == store.started
        assert len(list(store.traces())) == store.started


class _CountingStore(JsonlTraceStore):
    """A subclass that adds a step to add_trace (and knows nothing of add_trace_nowait)."""

    seen = 0

    async def add_trace(self, trace: Trace) -> bool:
        self.seen += 1
        return await super().add_trace(trace)


async def test_a_subclass_add_trace_is_not_bypassed_by_the_fast_path(
    openai_server: OpenAIServer, tmp_path: Path
) -> None:
    teacher = openai_teacher(openai_server)
    with _CountingStore(tmp_path / "counting") as store:
        summary = await generate(teacher, math_problems(20, "sub-"), store, concurrency=4)
        assert summary.done == 20 and len(store) == 20 and store.seen == 20
    await teacher.aclose()
    with JsonlTraceStore(tmp_path / "plain") as plain:
        await plain.add_problems(math_problems(1, "sub-"))
        # the plain store writes without waiting (the engine then takes no shield)
        trace = await teacher.generate(math_problems(1, "sub-")[0])
        assert plain.add_trace_nowait(trace) is True
    await teacher.aclose()


async def test_a_failing_pool_raises_its_error_and_keeps_what_was_answered(
    openai_server: OpenAIServer, store: JsonlTraceStore
) -> None:
    """The pool is read one batch ahead in its own task: an error while reading it still ends
    the run with that error (not a group), and the answers of the batches before it are kept."""
    teacher = openai_teacher(openai_server)
    good = math_problems(300, "fail-")

    def pool() -> object:
        yield from good
        raise RuntimeError("the dataset file is corrupt")

    with pytest.raises(RuntimeError, match="corrupt"):
        await generate(teacher, pool(), store, concurrency=8, progress=False)  # type: ignore[arg-type]
    await teacher.aclose()
    # The first 256 were handed out before the reader reached the error; whatever was answered
    # is stored, and nothing stored is lost.
    stored = list(store.traces())
    assert all(t.ok for t in stored) and len(stored) <= 300
    assert len({t.key for t in stored}) == len(stored)


async def test_a_request_backing_off_leaves_its_slot_to_others(
    openai_server: OpenAIServer, store: JsonlTraceStore
) -> None:
    # one slot; the first problem's first attempt gets a 503 and waits a second before its
    # next: the other problems use the slot meanwhile, never more than one attempt at once
    policy = RetryPolicy(base_delay=1.0, max_delay=1.0, jitter=False)
    teacher = openai_teacher(openai_server, retry=policy)
    problems = math_problems(4)
    openai_server.script(problems[0].prompt, Fault.http(503))
    summary = await generate(teacher, problems, store, concurrency=1)
    assert summary.done == 4 and summary.failed == 0
    order = [trace.problem_id for trace in store.traces()]
    assert order[-1] == problems[0].id, order  # answered after the others, not before
    assert openai_server.stats.max_inflight == 1
    await teacher.aclose()
