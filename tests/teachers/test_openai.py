from __future__ import annotations

import collections
import time

import anyio
import attrs
import pytest

from tests.servers.openai_server import Fault, OpenAIServer, Reply
from tracedistill import FinishReason, JsonlTraceStore, ReasoningKind, SamplingParams, request_key
from tracedistill.errors import AuthenticationError, InsufficientCreditsError
from tracedistill.teachers import Pricing, RateLimits, RetryPolicy, generate

from .conftest import FAST_RETRY, KEY, math_problems, openai_teacher

pytestmark = pytest.mark.anyio


async def test_generates_every_problem_once(
    openai_server: OpenAIServer, store: JsonlTraceStore
) -> None:
    teacher = openai_teacher(openai_server)
    problems = math_problems(50)
    summary = await generate(teacher, iter(problems), store, n=2, concurrency=8)
    assert summary.done == 100 and summary.failed == 0 and summary.skipped == 0
    traces = list(store.traces())
    assert len(traces) == 100
    assert len({t.key for t in traces}) == 100
    assert collections.Counter(t.problem_id for t in traces) == {p.id: 2 for p in problems}
    trace = traces[0]
    assert trace.reasoning.startswith("Let me think")
    assert "\\boxed" in trace.answer
    assert trace.reasoning_kind is ReasoningKind.RAW
    assert trace.key == request_key(trace.model, trace.prompt, trace.params, trace.sample_index)
    assert trace.cost_usd == pytest.approx(0.001) and not trace.cost_estimated
    assert trace.metadata["provider"] == "Loopback"
    # every prompt was bought exactly twice (n=2), never more
    assert set(openai_server.stats.answers_by_prompt.values()) == {2}
    await teacher.aclose()


async def test_rerun_skips_stored_keys(openai_server: OpenAIServer, store: JsonlTraceStore) -> None:
    teacher = openai_teacher(openai_server)
    await generate(teacher, math_problems(20), store)
    before = openai_server.stats.requests
    summary = await generate(teacher, math_problems(30), store)
    assert summary.skipped == 20 and summary.done == 10
    assert openai_server.stats.requests - before == 10
    await teacher.aclose()


async def test_async_iterable_and_duplicates(
    openai_server: OpenAIServer, store: JsonlTraceStore
) -> None:
    teacher = openai_teacher(openai_server)
    problems = math_problems(10)

    async def stream():  # type: ignore[no-untyped-def]
        for p in problems + problems:  # the pool repeats every problem
            yield p

    summary = await generate(teacher, stream(), store, concurrency=4)
    assert summary.done == 10 and summary.skipped == 10
    assert set(openai_server.stats.answers_by_prompt.values()) == {1}
    await teacher.aclose()


@pytest.mark.parametrize(
    "fault",
    [
        Fault.http(429),
        Fault.http(429, retry_after=0.05),
        Fault.http(429, retry_after_ms=30),
        Fault.http(500),
        Fault.http(502),
        Fault.http(503),
        Fault.http(529),
        Fault.http(408),
        Fault.reset(),
        Fault.malformed(),
        Fault.error_body(502),
        Fault.slow(3.0),
    ],
    ids=lambda f: f"{f.kind}-{f.status}",
)
async def test_retryable_faults_are_retried(
    fault: Fault, openai_server: OpenAIServer, store: JsonlTraceStore
) -> None:
    teacher = openai_teacher(openai_server, timeout=0.5)
    problems = math_problems(6)
    openai_server.script(problems[2].prompt, fault, fault)
    summary = await generate(teacher, problems, store, concurrency=3)
    assert summary.done == 6 and summary.failed == 0
    trace = next(t for t in store.traces() if t.problem_id == problems[2].id)
    assert trace.attempts == 3
    assert trace.ok
    # the billed answers are exactly one per problem; spend counts each once
    answered = sum(openai_server.stats.answers_by_prompt.values())
    assert summary.spend_usd == pytest.approx(openai_server.stats.billed_usd)
    if fault.kind != "slow":
        assert answered == 6
    await teacher.aclose()


async def test_default_policy_outlasts_a_run_of_bad_luck(
    openai_server: OpenAIServer, store: JsonlTraceStore
) -> None:
    # nine failed attempts in a row for one problem, while the provider answers the others:
    # the default policy (10 attempts) still gets it answered, not stored as failed
    policy = attrs.evolve(RetryPolicy(), base_delay=0.01, max_delay=0.02)
    teacher = openai_teacher(openai_server, retry=policy)
    problems = math_problems(3)
    openai_server.script(problems[0].prompt, *[Fault.http(503)] * 9)
    summary = await generate(teacher, problems, store)
    assert summary.failed == 0 and summary.done == 3
    trace = store.get(teacher.request_key(problems[0]))
    assert trace is not None and trace.ok and trace.attempts == 10
    await teacher.aclose()


async def test_retries_are_bounded_then_recorded_as_failed(
    openai_server: OpenAIServer, store: JsonlTraceStore
) -> None:
    teacher = openai_teacher(openai_server)
    problems = math_problems(3)
    openai_server.script(problems[0].prompt, *[Fault.http(503)] * 10)
    summary = await generate(teacher, problems, store)
    assert summary.failed == 1 and summary.done == 2
    failed = store.get(teacher.request_key(problems[0]))
    assert failed is not None and failed.finish_reason is FinishReason.ERROR
    assert failed.attempts == FAST_RETRY.max_attempts
    assert "503" in (failed.error or "")
    assert openai_server.stats.requests_matching(problems[0].prompt) == FAST_RETRY.max_attempts
    # a rerun asks again and the success supersedes the failure
    openai_server.script(problems[0].prompt)  # no more faults
    openai_server._scripts.clear()
    summary = await generate(teacher, problems, store)
    assert summary.done == 1 and summary.skipped == 2
    assert store.has(teacher.request_key(problems[0]))
    await teacher.aclose()


async def test_400_is_not_retried(openai_server: OpenAIServer, store: JsonlTraceStore) -> None:
    teacher = openai_teacher(openai_server)
    problems = math_problems(2)
    openai_server.script(problems[0].prompt, Fault.http(400, message="context too long: 9999"))
    summary = await generate(teacher, problems, store)
    assert summary.failed == 1
    trace = store.get(teacher.request_key(problems[0]))
    assert trace is not None and trace.attempts == 1
    assert "context too long: 9999" in (trace.error or "")
    assert trace.metadata["status"] == 400
    assert openai_server.stats.requests_matching(problems[0].prompt) == 1
    await teacher.aclose()


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.http(401), AuthenticationError),
        (Fault.http(403), AuthenticationError),
        (Fault.http(402), InsufficientCreditsError),
        (Fault.error_body(402, "out of credits"), InsufficientCreditsError),
    ],
)
async def test_fatal_errors_stop_the_run(
    fault: Fault, error: type[Exception], openai_server: OpenAIServer, store: JsonlTraceStore
) -> None:
    teacher = openai_teacher(openai_server)
    openai_server.push(fault)
    with pytest.raises(error):
        await generate(teacher, math_problems(200), store, concurrency=1)
    # the rejected request was the only one: nothing started after it
    assert openai_server.stats.requests == 1
    assert len(store) == 0
    await teacher.aclose()


async def test_fatal_error_starts_no_new_request_under_concurrency(
    store: JsonlTraceStore,
) -> None:
    with OpenAIServer(api_key=KEY, latency=0.05) as server:
        teacher = openai_teacher(server)
        server.script("p10:", Fault.http(401))
        with pytest.raises(AuthenticationError):
            await generate(teacher, math_problems(500), store, concurrency=8)
        stopped_at = server.stats.requests
        await anyio.sleep(0.3)
        assert server.stats.requests == stopped_at
        # at most the requests in flight at the rejection (plus the producer's buffer) ran
        assert stopped_at <= 10 + 8
        # every answer that came back was stored
        assert len(store) == server.stats.answered
        await teacher.aclose()


async def test_wrong_key_is_authentication_error(
    openai_server: OpenAIServer, store: JsonlTraceStore
) -> None:
    teacher = openai_teacher(openai_server, api_key="sk-wrong")
    with pytest.raises(AuthenticationError, match="401"):
        await generate(teacher, math_problems(5), store)
    await teacher.aclose()


async def test_truncated_is_stored_and_never_rebought(
    openai_server: OpenAIServer, store: JsonlTraceStore
) -> None:
    teacher = openai_teacher(openai_server)
    problems = math_problems(4)
    openai_server.script(problems[1].prompt, Fault.truncated(), Fault.truncated())
    summary = await generate(teacher, problems, store)
    assert summary.truncated == 1 and summary.done == 4
    trace = store.get(teacher.request_key(problems[1]))
    assert trace is not None and trace.truncated and trace.usage.completion_tokens == 64
    summary = await generate(teacher, problems, store)
    assert summary.requested == 0 and summary.skipped == 4
    assert openai_server.stats.answers_matching(problems[1].prompt) == 1
    # explicit re-sampling buys one more sample (index 0 + n), which is truncated again...
    summary = await generate(teacher, problems, store, resample_truncated=True)
    assert summary.resampled == 1 and summary.truncated == 1
    # ...and a rerun with the same option buys nothing more
    summary = await generate(teacher, problems, store, resample_truncated=True)
    assert summary.requested == 0
    # with two extra allowed, it asks once more and gets a full answer
    summary = await generate(teacher, problems, store, resample_truncated=2)
    assert summary.resampled == 1 and summary.truncated == 0 and summary.done == 1
    assert openai_server.stats.answers_matching(problems[1].prompt) == 3
    await teacher.aclose()


async def test_spend_counted_once_per_billed_response(store: JsonlTraceStore) -> None:
    with OpenAIServer(api_key=KEY, fault_rate=0.3, seed=7) as server:
        teacher = openai_teacher(
            server, retry=RetryPolicy(max_attempts=8, base_delay=0.005, max_delay=0.02)
        )
        summary = await generate(teacher, math_problems(120), store, concurrency=16)
        assert server.stats.faults > 20
        assert summary.spend_usd == pytest.approx(server.stats.billed_usd)
        assert store.spend_usd() == pytest.approx(server.stats.billed_usd)
        assert summary.done + summary.failed == 120
        assert len({t.problem_id for t in store.traces(include_failed=True)}) == 120
        await teacher.aclose()


async def test_prices_when_provider_reports_no_cost(store: JsonlTraceStore) -> None:
    with OpenAIServer(api_key=KEY, report_cost=False) as server:
        teacher = openai_teacher(
            server,
            reports_cost=False,
            pricing=Pricing(input_per_million=1.0, output_per_million=2.0),
        )
        await generate(teacher, math_problems(3), store)
        for trace in store.traces():
            expected = (trace.usage.prompt_tokens * 1.0 + trace.usage.completion_tokens * 2.0) / 1e6
            assert trace.cost_estimated and trace.cost_usd == pytest.approx(expected)
        await teacher.aclose()


async def test_budget_cap_and_resume(openai_server: OpenAIServer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    teacher = openai_teacher(openai_server)
    problems = math_problems(40)
    with JsonlTraceStore(tmp_path / "s") as store:
        summary = await generate(teacher, problems, store, budget_usd=0.0105, concurrency=4)
        assert summary.stopped == "budget"
        assert store.spend_usd() <= 0.0105 + 1e-12
        assert summary.done == 10
    with JsonlTraceStore(tmp_path / "s") as store:
        # the resumed run continues the same budget: nothing more fits
        summary = await generate(teacher, problems, store, budget_usd=0.0105)
        assert summary.requested == 0 and summary.done == 0 and summary.stopped == "budget"
        summary = await generate(teacher, problems, store, budget_usd=0.0205)
        assert summary.done == 10 and store.spend_usd() == pytest.approx(0.020)
    assert openai_server.stats.answered == 20
    await teacher.aclose()


async def test_budget_with_prices_uses_worst_case(store: JsonlTraceStore) -> None:
    with OpenAIServer(api_key=KEY, report_cost=False) as server:
        # worst case per request: 64 output tokens at $1000/M = $0.064 (+ tiny prompt)
        teacher = openai_teacher(
            server,
            reports_cost=False,
            pricing=Pricing(input_per_million=0.0, output_per_million=1000.0),
        )
        summary = await generate(teacher, math_problems(10), store, budget_usd=0.2, concurrency=8)
        assert summary.stopped == "budget"
        assert store.spend_usd() <= 0.2
        await teacher.aclose()


async def test_budget_needs_a_cost(openai_server: OpenAIServer, store: JsonlTraceStore) -> None:
    from tracedistill.errors import ConfigurationError

    teacher = openai_teacher(openai_server, reports_cost=False)
    with pytest.raises(ConfigurationError, match="pricing"):
        await generate(teacher, math_problems(1), store, budget_usd=1.0)


async def test_client_keeps_to_configured_rpm_and_concurrency(store: JsonlTraceStore) -> None:
    # the server allows far more; the client must keep to its own limits
    with OpenAIServer(api_key=KEY, latency=0.02) as server:
        teacher = openai_teacher(server)
        limits = RateLimits(requests_per_minute=1200, burst_seconds=0.25)  # 20/s, burst 5
        t0 = time.monotonic()
        await generate(teacher, math_problems(30), store, concurrency=3, limits=limits)
        elapsed = time.monotonic() - t0
        arrivals = sorted(server.stats.arrivals)
        # in any window, arrivals <= burst + rate * window; the slack allows for arrivals that
        # the (in-process) server sees later than they were sent, bunched together
        for i, start in enumerate(arrivals):
            for j in range(i, len(arrivals)):
                window = arrivals[j] - start
                assert j - i + 1 <= 5 + 20 * (window + 0.1) + 1
        assert elapsed >= (30 - 5) / 20 * 0.9
        assert server.stats.max_inflight <= 3
        await teacher.aclose()


async def test_output_token_limit(store: JsonlTraceStore) -> None:
    with OpenAIServer(api_key=KEY) as server:
        teacher = openai_teacher(server, params=SamplingParams(max_tokens=100))
        # 100 tokens reserved per request, 6000/min = 100/s: one request per second unless the
        # unused part is refunded (each answer uses ~10 tokens, so ~0.1 s per request, after
        # the output bucket's 2 s)
        limits = RateLimits(output_tokens_per_minute=6000, burst_seconds=1.0)
        t0 = time.monotonic()
        await generate(teacher, math_problems(40), store, concurrency=1, limits=limits)
        assert 1.0 < time.monotonic() - t0 < 15.0  # without the refund: >= 38 s
        await teacher.aclose()


async def test_unknown_limit_adapts_to_429(store: JsonlTraceStore) -> None:
    # a limit the client surely exceeds, even on a loaded machine
    with OpenAIServer(api_key=KEY, rpm=2400, burst_s=0.2, retry_after=None) as server:
        teacher = openai_teacher(
            server, retry=RetryPolicy(max_attempts=30, base_delay=0.02, max_delay=0.5)
        )
        summary = await generate(teacher, math_problems(160), store, concurrency=32)
        assert summary.done == 160 and summary.failed == 0
        assert summary.throttled > 0
        # once learned (the second half of the run), the client stays under the limit
        stats = server.stats
        middle = (stats.arrivals[0] + stats.arrivals[-1]) / 2
        late_429 = sum(t > middle for t in stats.throttle_times)
        late = sum(t > middle for t in stats.arrivals)
        assert late_429 <= 0.10 * late
        # (how close it gets to the limit is measured by benchmarks/bench_teachers.py)
        await teacher.aclose()


async def test_rate_limit_headers_are_learned(store: JsonlTraceStore) -> None:
    with OpenAIServer(
        api_key=KEY, rpm=1200, burst_s=0.25, rate_headers=True, retry_after="ms"
    ) as server:
        teacher = openai_teacher(server)
        summary = await generate(teacher, math_problems(40), store, concurrency=8)
        assert summary.done == 40
        # the first answer told the client the limit; it then kept to it
        assert server.stats.throttled <= 8
        await teacher.aclose()


async def test_cancel_loses_nothing_answered(store: JsonlTraceStore) -> None:
    with OpenAIServer(api_key=KEY, latency=0.01) as server:
        teacher = openai_teacher(server)
        async with anyio.create_task_group() as tg:

            async def cancel_once_answering() -> None:
                # cancel mid-run, once answers flow (a fixed delay fails on a loaded machine)
                with anyio.fail_after(30):
                    while server.stats.answered < 20:  # noqa: ASYNC110 - another thread's counter
                        await anyio.sleep(0.01)
                tg.cancel_scope.cancel()

            tg.start_soon(cancel_once_answering)
            await generate(teacher, math_problems(10_000), store, concurrency=8)
        answered = server.stats.answered
        assert 0 < len(store) <= answered <= len(store) + 8
        summary = await generate(teacher, math_problems(len(store) + 20), store, concurrency=8)
        assert summary.skipped >= len(store) - summary.done - 8
        await teacher.aclose()


async def test_inline_think_and_reasoning_details() -> None:
    teacher = openai_teacher(OpenAIServer(), base_url="http://127.0.0.1:1/v1")
    inline = teacher.parse(
        {
            "choices": [
                {
                    "message": {"content": "<think>\nplan\n</think>\n\nThe answer is 4."},
                    "finish_reason": "stop",
                }
            ]
        }
    )
    assert (inline.reasoning, inline.answer) == ("plan", "The answer is 4.")
    closing_only = teacher.parse(
        {"choices": [{"message": {"content": "plan\n</think>\n\nfour"}, "finish_reason": "stop"}]}
    )
    assert (closing_only.reasoning, closing_only.answer) == ("plan", "four")
    unclosed = teacher.parse(
        {
            "choices": [
                {"message": {"content": "<think>\nstill thinking"}, "finish_reason": "length"}
            ]
        }
    )
    assert unclosed.reasoning == "still thinking" and unclosed.finish_reason is FinishReason.LENGTH
    vllm = teacher.parse(
        {
            "choices": [
                {"message": {"content": "4", "reasoning_content": "r"}, "finish_reason": "stop"}
            ]
        }
    )
    assert vllm.reasoning == "r" and vllm.reasoning_kind is ReasoningKind.RAW
    summary = teacher.parse(
        {
            "choices": [
                {
                    "message": {
                        "content": "4",
                        "reasoning_details": [
                            {"type": "reasoning.summary", "summary": "s1"},
                            {"type": "reasoning.encrypted", "data": "xx"},
                        ],
                    },
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": 3,
                "completion_tokens": 5,
                "cost": 0.5,
                "completion_tokens_details": {"reasoning_tokens": 4},
            },
        }
    )
    assert summary.reasoning == "s1" and summary.reasoning_kind is ReasoningKind.SUMMARY
    assert summary.cost_usd == 0.5 and summary.usage.reasoning_tokens == 4
    none = teacher.parse({"choices": [{"message": {"content": "4"}, "finish_reason": "stop"}]})
    assert none.reasoning == "" and none.reasoning_kind is ReasoningKind.NONE


async def test_inline_think_server(store: JsonlTraceStore) -> None:
    with OpenAIServer(inline_think=True) as server:
        teacher = openai_teacher(server, api_key=None)
        await generate(teacher, math_problems(3), store)
        for trace in store.traces():
            assert trace.reasoning.startswith("Let me think") and trace.answer.startswith("The")
            assert trace.completion.startswith("<think>\nLet me think")
        await teacher.aclose()


async def test_openrouter_preset_body() -> None:
    from tracedistill.teachers import OpenRouterTeacher

    teacher = OpenRouterTeacher(
        "anthropic/claude-sonnet-4.5",
        api_key="k",
        reasoning={"effort": "high"},
        provider={"order": ["anthropic"]},
    )
    assert teacher.base_url == "https://openrouter.ai/api/v1"
    request = teacher.request(math_problems(1)[0])
    body = teacher.body(request)
    assert body["reasoning"] == {"effort": "high"}
    assert body["provider"] == {"order": ["anthropic"], "enforce_distillable_text": True}
    assert body["max_tokens"] == 8192
    other = OpenRouterTeacher(
        "anthropic/claude-sonnet-4.5", api_key="k", reasoning={"effort": "low"}
    )
    # reasoning settings are part of the request key
    assert other.request(math_problems(1)[0]).key != request.key
    assert teacher.can_cost


async def test_single_generate_without_engine(openai_server: OpenAIServer) -> None:
    teacher = openai_teacher(openai_server)
    async with teacher:
        trace = await teacher.generate(math_problems(1)[0], sample_index=3)
    assert trace.ok and trace.sample_index == 3


async def test_custom_responder_and_max_tokens_field(store: JsonlTraceStore) -> None:
    seen = []

    def responder(prompt: str, request: dict) -> Reply:  # type: ignore[type-arg]
        seen.append(request)
        return Reply(reasoning="r", answer="a")

    with OpenAIServer(responder=responder) as server:
        teacher = openai_teacher(
            server,
            api_key=None,
            max_tokens_field="max_completion_tokens",
            params=SamplingParams(
                max_tokens=9, temperature=0.0, seed=1, stop=["END"], top_p=0.5, top_k=3
            ),
        )
        await generate(teacher, math_problems(1), store)
        assert seen[0]["max_completion_tokens"] == 9
        assert seen[0]["temperature"] == 0.0 and seen[0]["seed"] == 1
        assert seen[0]["stop"] == ["END"] and seen[0]["top_p"] == 0.5 and seen[0]["top_k"] == 3
        await teacher.aclose()


async def test_store_error_surfaces_as_itself(
    openai_server: OpenAIServer, store: JsonlTraceStore
) -> None:
    from tracedistill.errors import StoreError

    teacher = openai_teacher(openai_server)
    await generate(teacher, math_problems(2), store)
    store.close()  # writes now fail: the error is raised as is, not inside an ExceptionGroup
    with pytest.raises(StoreError, match="closed"):
        await generate(teacher, math_problems(5), store)
    await teacher.aclose()


async def test_progress_bar_shows_counters(
    openai_server: OpenAIServer, store: JsonlTraceStore, capsys: pytest.CaptureFixture[str]
) -> None:
    teacher = openai_teacher(openai_server)
    openai_server.push(Fault.truncated())
    summary = await generate(teacher, math_problems(20), store, progress=True)
    err = capsys.readouterr().err
    assert "generate loop/model" in err and "20/20" in err
    assert "done=20" in err and "trunc=1" in err and "$=" in err
    assert summary.requests_per_minute > 0 and summary.tokens_per_minute > 0
    assert "20 answered (1 truncated)" in str(summary)
    await teacher.aclose()
