from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from scipy import stats as sps

from tests.evaluation.helpers import (
    CompletionsServer,
    arithmetic_benchmark,
    expected_correct,
    is_correct,
    responder,
)
from tests.servers.base import Fault
from tests.servers.openai_server import OpenAIServer
from tracedistill.chat import ChatFormat, ChatRenderer, ChatTokenizer
from tracedistill.clients.openai_compat import OpenAICompatibleSampler
from tracedistill.clients.retry import RetryPolicy
from tracedistill.errors import EvaluationError
from tracedistill.evaluation import EvalStore, Evaluator, SamplerError, greedy
from tracedistill.records import VerdictReason
from tracedistill.verifiers import MathVerifier

N = 42


@pytest.fixture(scope="module")
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer(responder=responder) as s:
        yield s  # type: ignore[misc]


@pytest.fixture(scope="module")
def inline_server() -> Iterator[OpenAIServer]:
    with OpenAIServer(responder=responder, inline_think=True) as s:
        yield s  # type: ignore[misc]


@pytest.fixture(scope="module")
async def math_verifier() -> MathVerifier:
    verifier = MathVerifier(workers=2)
    yield verifier  # type: ignore[misc]
    await verifier.aclose()


def sampler_for(server: OpenAIServer, **kwargs: object) -> OpenAICompatibleSampler:
    return OpenAICompatibleSampler(
        "student",
        base_url=server.url + "/v1",
        retry=RetryPolicy(base_delay=0.01, max_delay=0.05),
        **kwargs,  # type: ignore[arg-type]
    )


async def test_reports_exact_accuracy_and_wilson_interval(
    server: OpenAIServer, math_verifier: MathVerifier, tmp_path: Path
) -> None:
    bench = arithmetic_benchmark(N)
    evaluator = Evaluator(tmp_path, verifiers={"math": math_verifier})
    async with sampler_for(server, max_concurrency=8) as sampler:
        result = await evaluator.evaluate(sampler, bench, label="base")
    k = expected_correct(N)
    assert (result.n, result.correct, result.expected) == (N, k, N)
    assert result.accuracy == k / N
    ref = sps.binomtest(k, N).proportion_ci(confidence_level=0.95, method="wilson")
    assert result.interval.low == pytest.approx(ref.low, abs=1e-12)
    assert result.interval.high == pytest.approx(ref.high, abs=1e-12)
    assert result.complete
    for outcome in result.outcomes:
        assert outcome.passed == is_correct(int(outcome.problem_id.split("/")[1]))
        assert outcome.reason in (VerdictReason.PASSED, VerdictReason.WRONG_ANSWER)
    # Outcomes keep the benchmark's order.
    assert [o.problem_id for o in result.outcomes] == bench.ids
    # Format: the server returns reasoning separately; the sampler puts it back in a think block.
    assert result.format.think_opened_rate == 1.0
    assert result.format.think_closed_rate == 1.0
    assert result.format.boxed_rate == 1.0
    assert result.format.truncated_rate == 0.0
    assert result.format.mean_tokens is not None
    # Stored, and loadable without the evaluator's state.
    loaded = EvalStore(tmp_path).load("base", "arith")
    assert (loaded.correct, loaded.n, loaded.benchmark_sha256) == (k, N, bench.sha256)
    assert loaded.interval == result.interval
    assert "arith base" in result.summary()


async def test_greedy_request_and_concurrency_bound(
    math_verifier: MathVerifier, tmp_path: Path
) -> None:
    with OpenAIServer(responder=responder, latency=0.05, record_headers=True) as s:
        evaluator = Evaluator(None, verifiers={"math": math_verifier})
        async with sampler_for(s, max_concurrency=3, api_key="sk-test-123") as sampler:  # type: ignore[arg-type]
            bench = arithmetic_benchmark(12)
            body = sampler.body(bench.prompt(bench.problems[0]), greedy(64))
            assert body["temperature"] == 0.0 and body["top_k"] == 1 and body["max_tokens"] == 64
            result = await evaluator.evaluate(sampler, bench)
        assert s.stats.max_inflight == 3
        assert s.stats.seen_headers[0]["authorization"] == "Bearer sk-test-123"
    assert result.correct == expected_correct(12)
    assert result.path is None  # in memory only
    assert "sk-test-123" not in repr(sampler.describe())


async def test_inline_think_and_paired_comparison(
    server: OpenAIServer,
    inline_server: OpenAIServer,
    math_verifier: MathVerifier,
    tmp_path: Path,
) -> None:
    bench = arithmetic_benchmark(N)
    evaluator = Evaluator(tmp_path, verifiers={"math": math_verifier})
    async with sampler_for(server) as one, sampler_for(inline_server) as two:
        first = await evaluator.evaluate(one, bench, label="a")
        second = await evaluator.evaluate(two, bench, label="b")
    assert first.correct == second.correct
    cmp = first.compare(second)
    assert cmp.difference == 0.0 and cmp.p_value == 1.0
    assert cmp.counts.both == first.correct and cmp.counts.neither == N - first.correct


async def test_truncated_and_unclosed_think_fail(math_verifier: MathVerifier) -> None:
    with OpenAIServer(responder=responder, inline_think=True) as s:
        s.script("Problem 1:", Fault.truncated())
        bench = arithmetic_benchmark(3)
        async with sampler_for(s) as sampler:
            result = await Evaluator(verifiers={"math": math_verifier}).evaluate(sampler, bench)
    reasons = {o.problem_id: o.reason for o in result.outcomes}
    assert reasons["arith/1"] is VerdictReason.TRUNCATED
    assert result.format.truncated_rate == pytest.approx(1 / 3)
    from tracedistill.evaluation import answer_text

    assert answer_text("<think>\nno end")[0] is None
    assert answer_text("reasoning</think>\n\n\\boxed{3}")[0] == "\\boxed{3}"
    assert answer_text("plain \\boxed{3}")[0] == "plain \\boxed{3}"


async def test_retry_then_partial_or_raise(math_verifier: MathVerifier, tmp_path: Path) -> None:
    with OpenAIServer(responder=responder) as s:
        s.script("Problem 2:", Fault.http(503), Fault.http(429, retry_after=0.01))
        s.script("Problem 4:", *[Fault.http(500)] * 10)
        bench = arithmetic_benchmark(6)
        evaluator = Evaluator(tmp_path, verifiers={"math": math_verifier})
        sampler = sampler_for(s)
        sampler.retry = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02)
        await sampler.start()
        with pytest.raises(EvaluationError, match="1 of 6 problems could not be sampled"):
            await evaluator.evaluate(sampler, bench, label="x")
        # The finished problems are kept: a rerun samples only problem 4.
        before = dict(s.stats.requests_by_prompt)
        s._scripts.clear()
        result = await evaluator.evaluate(sampler, bench, label="x")
        assert result.complete and result.correct == expected_correct(6)
        after = s.stats.requests_by_prompt
        changed = [p for p in after if after[p] != before.get(p, 0)]
        assert len(changed) == 1 and "Problem 4:" in changed[0]
        # on_error="partial" returns what it has.
        s.script("Problem 5:", *[Fault.http(500)] * 10)
        partial = await Evaluator(verifiers={"math": math_verifier}, on_error="partial").evaluate(
            sampler, bench
        )
        assert not partial.complete and partial.n == 5
        await sampler.aclose()


async def test_fatal_auth_error_stops(math_verifier: MathVerifier) -> None:
    with OpenAIServer(responder=responder, api_key="right") as s:
        sampler = sampler_for(s, api_key="wrong", max_concurrency=2)  # type: ignore[arg-type]
        async with sampler:
            with pytest.raises(SamplerError) as info:
                await Evaluator(verifiers={"math": math_verifier}).evaluate(
                    sampler, arithmetic_benchmark(20)
                )
        assert info.value.fatal
        assert s.stats.requests <= 2
        assert "wrong" not in str(info.value)


async def test_label_reuse_for_another_model_is_refused(
    server: OpenAIServer, math_verifier: MathVerifier, tmp_path: Path
) -> None:
    evaluator = Evaluator(tmp_path, verifiers={"math": math_verifier})
    bench = arithmetic_benchmark(4)
    async with sampler_for(server) as sampler:
        await evaluator.evaluate(sampler, bench, label="same")
    async with OpenAICompatibleSampler("other-model", base_url=server.url + "/v1") as other:
        with pytest.raises(EvaluationError, match="use another label"):
            await evaluator.evaluate(other, bench, label="same")


async def test_subset_then_full_reuses_responses(
    math_verifier: MathVerifier, tmp_path: Path
) -> None:
    bench = arithmetic_benchmark(10)
    evaluator = Evaluator(tmp_path, verifiers={"math": math_verifier})
    with OpenAIServer(responder=responder) as s:
        async with sampler_for(s) as sampler:
            small = await evaluator.evaluate(sampler, bench.subset(4), label="ck")
            full = await evaluator.evaluate(sampler, bench, label="ck")
        assert s.stats.requests == 10  # the 4 of the subset were not sampled again
    assert small.n == 4 and full.n == 10 and full.complete
    loaded = evaluator.load("ck", bench)
    assert loaded.complete and loaded.correct == expected_correct(10)
    # A different max_tokens is another request: sampled anew, counted apart.
    with OpenAIServer(responder=responder) as s:
        async with sampler_for(s) as sampler:
            other = await evaluator.evaluate(
                sampler, bench.subset(3), label="ck", params=greedy(99)
            )
        assert s.stats.requests == 3
    assert other.n == 3 and evaluator.load("ck", bench).n == 3


async def test_rendered_chat_prompts_go_to_completions(
    math_verifier: MathVerifier, tokenizer: ChatTokenizer
) -> None:
    renderer = ChatRenderer(tokenizer, ChatFormat.QWEN3)
    bench = arithmetic_benchmark(8)
    with CompletionsServer(responder=responder, inline_think=True, record_headers=True) as s:
        async with sampler_for(s, renderer=renderer) as sampler:
            result = await Evaluator(verifiers={"math": math_verifier}).evaluate(sampler, bench)
            body = sampler.body(*sampler._rendered(bench.prompt(bench.problems[0]), greedy(16)))
    # The server saw the trained format, token for token the training prompt's text.
    assert body["prompt"] == renderer.generation_prompt(bench.prompt(bench.problems[0])).text
    assert body["prompt"].endswith("<|im_start|>assistant\n") and "<|im_end|>" in body["stop"]
    assert result.correct == expected_correct(8) and result.format.think_closed_rate == 1.0
    assert sampler.describe()["chat_format"] == "qwen3"
