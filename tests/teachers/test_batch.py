from __future__ import annotations

import collections
from functools import partial
from pathlib import Path

import anyio
import pytest

from tests.servers.anthropic_server import AnthropicServer
from tests.servers.openai_server import Fault, OpenAIServer
from tracedistill import JsonlTraceStore, SamplingParams
from tracedistill.errors import ConfigurationError
from tracedistill.teachers import AnthropicTeacher, Pricing
from tracedistill.teachers.batch import BatchState, generate_batch

from .conftest import FAST_RETRY, KEY, math_problems, openai_teacher

pytestmark = pytest.mark.anyio

PRICES = Pricing(input_per_million=2.0, output_per_million=8.0)


async def test_openai_batches(tmp_path: Path) -> None:
    with OpenAIServer(api_key=KEY, report_cost=False) as server:
        server.batch_polls = 2
        teacher = openai_teacher(server, pricing=PRICES, reports_cost=False)
        problems = math_problems(25)
        server.script(problems[3].prompt, Fault.http(400, message="prompt too long"))
        server.script(problems[4].prompt, Fault.truncated())
        with JsonlTraceStore(tmp_path / "s") as store:
            summary = await generate_batch(
                teacher, problems, store, n=2, batch_size=20, poll_interval=0.01
            )
            assert server.stats.batches == 3  # 50 requests in batches of 20
            assert summary.requested == 50 and summary.done == 49 and summary.failed == 1
            assert summary.truncated == 1
            failed = store.get(teacher.request_key(problems[3], 0))
            assert failed is not None and "prompt too long" in (failed.error or "")
            ok = store.get(teacher.request_key(problems[0], 1))
            assert ok is not None and ok.reasoning.startswith("Let me think")
            full = PRICES.cost(ok.usage)
            assert ok.cost_usd == pytest.approx(full * 0.5) and ok.cost_estimated
            per_problem = collections.Counter(
                t.problem_id for t in store.traces(include_failed=True)
            )
            assert set(per_problem.values()) == {2}
            # a rerun submits nothing new (the failed one is asked again)
            again = await generate_batch(teacher, problems, store, n=2, poll_interval=0.01)
            assert again.requested == 1 and again.skipped == 49
        await teacher.aclose()


async def test_anthropic_batches(tmp_path: Path) -> None:
    with AnthropicServer(api_key=KEY) as server:
        teacher = AnthropicTeacher(
            "claude-sonnet-4-5",
            base_url=server.url,
            api_key=KEY,
            params=SamplingParams(max_tokens=4096),
            thinking=2048,
            pricing=PRICES,
            retry=FAST_RETRY,
        )
        problems = math_problems(6)
        server.script(problems[1].prompt, Fault.http(529, message="overloaded"))
        with JsonlTraceStore(tmp_path / "s") as store:
            summary = await generate_batch(teacher, problems, store, poll_interval=0.01)
            assert summary.done == 5 and summary.failed == 1
            trace = store.get(teacher.request_key(problems[0]))
            assert trace is not None and trace.reasoning.startswith("Let me think")
            assert "overloaded" in (store.get(teacher.request_key(problems[1])).error or "")  # type: ignore[union-attr]
        await teacher.aclose()


async def test_crash_while_waiting_resumes_without_resubmitting(tmp_path: Path) -> None:
    with OpenAIServer(api_key=KEY) as server:
        server.batch_polls = 10_000  # the batch never ends during the first run
        teacher = openai_teacher(server)
        problems = math_problems(10)
        state_file = tmp_path / "s" / "batches-loop_model.jsonl"
        with JsonlTraceStore(tmp_path / "s") as store:
            # "Crash" once the submission is on disk: waiting for that instead of a fixed
            # 0.5 s keeps the test meaningful on a loaded machine.
            async with anyio.create_task_group() as tg:
                tg.start_soon(partial(generate_batch, poll_interval=0.01), teacher, problems, store)
                with anyio.fail_after(60):
                    while not (state_file.exists() and state_file.read_bytes().endswith(b"\n")):  # noqa: ASYNC110 - polls a file another task writes
                        await anyio.sleep(0.01)
                await anyio.sleep(0.05)  # a few polls of the never-ending batch
                tg.cancel_scope.cancel()
            assert len(store) == 0 and server.stats.batches == 1
        state = BatchState(state_file)
        assert len(state.pending) == 1
        server.finish_batches()
        with JsonlTraceStore(tmp_path / "s") as store:
            summary = await generate_batch(teacher, problems, store, poll_interval=0.01)
            assert server.stats.batches == 1  # picked up, not submitted again
            assert summary.requested == 0 and summary.done == 10
            assert len(store) == 10
        assert not BatchState(tmp_path / "s" / "batches-loop_model.jsonl").pending
        assert server.stats.batch_requests == 10
        await teacher.aclose()


async def test_batch_budget(tmp_path: Path) -> None:
    with OpenAIServer(api_key=KEY, report_cost=False) as server:
        # worst case per request: 64 output tokens at $8/M, halved = $0.000256 (+ prompt)
        teacher = openai_teacher(server, pricing=PRICES, params=SamplingParams(max_tokens=64))
        with JsonlTraceStore(tmp_path / "s") as store:
            summary = await generate_batch(
                teacher,
                math_problems(40),
                store,
                batch_size=40,
                budget_usd=0.003,
                poll_interval=0.01,
            )
            assert summary.stopped == "budget"
            assert 0 < summary.done < 40 and store.spend_usd() <= 0.003
        await teacher.aclose()


async def test_batch_needs_a_batch_api(tmp_path: Path) -> None:
    from tracedistill.teachers.replay import ReplayTeacher

    with JsonlTraceStore(tmp_path / "s") as store, pytest.raises(ConfigurationError):
        await generate_batch(ReplayTeacher([], "openr1-math"), [], store)


def test_state_after_a_torn_line_keeps_later_records(tmp_path: Path) -> None:
    """A submission record torn by a crash is cut before the next append, so the "done" record
    written after it is read back (glued onto the torn line it would be lost, and the batch
    would stay pending forever)."""
    path = tmp_path / "batches-t.jsonl"
    path.write_bytes(
        b'{"batch": "a", "requests": [["k1", "p1", 0]]}\n{"batch": "b", "requests": [["k2"'
    )
    state = BatchState(path)
    assert set(state.pending) == {"a"}
    state.finished("a")
    assert not BatchState(path).pending
    assert path.with_name(path.name + ".torn").exists()  # the cut bytes are kept aside


def test_state_records_from_many_threads_at_once(tmp_path: Path) -> None:
    """Batches are recorded from worker threads concurrently: every record lands, whole."""
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "batches-t.jsonl"
    state = BatchState(path)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(state.finished, [f"b{i}" for i in range(200)]))
    lines = path.read_bytes().splitlines()
    assert len(lines) == 200 and all(line.endswith(b"}") for line in lines)
