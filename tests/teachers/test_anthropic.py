from __future__ import annotations

import pytest

from tests.servers.anthropic_server import AnthropicServer, Fault, Reply
from tracedistill import FinishReason, JsonlTraceStore, ReasoningKind, SamplingParams
from tracedistill.errors import (
    AuthenticationError,
    ConfigurationError,
    InsufficientCreditsError,
    ProviderUnavailableError,
)
from tracedistill.prompts import PromptTemplate
from tracedistill.teachers import AnthropicTeacher, Pricing, RateLimits, generate

from .conftest import FAST_RETRY, KEY, math_problems

pytestmark = pytest.mark.anyio

PRICES = Pricing(input_per_million=3.0, output_per_million=15.0)


def claude(server: AnthropicServer, **kwargs: object) -> AnthropicTeacher:
    options: dict[str, object] = {
        "base_url": server.url,
        "api_key": KEY,
        "params": SamplingParams(max_tokens=4096),
        "thinking": 2048,
        "retry": FAST_RETRY,
        "timeout": 5.0,
        "pricing": PRICES,
    }
    options.update(kwargs)
    return AnthropicTeacher("claude-sonnet-4-5", **options)  # type: ignore[arg-type]


async def test_thinking_becomes_summarized_reasoning(
    anthropic_server: AnthropicServer, store: JsonlTraceStore
) -> None:
    anthropic_server.record_headers = True
    teacher = claude(anthropic_server)
    summary = await generate(teacher, math_problems(5), store)
    assert summary.done == 5
    trace = next(iter(store.traces()))
    assert trace.reasoning.startswith("Let me think")
    assert trace.reasoning_kind is ReasoningKind.SUMMARY
    assert trace.metadata["redacted_thinking_blocks"] == 1
    assert trace.cost_estimated
    expected = (trace.usage.prompt_tokens * 3 + trace.usage.completion_tokens * 15) / 1e6
    assert trace.cost_usd == pytest.approx(expected)
    headers = anthropic_server.stats.seen_headers[0]
    assert headers["x-api-key"] == KEY and headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in headers
    await teacher.aclose()


async def test_body_layout() -> None:
    teacher = AnthropicTeacher(
        "claude-sonnet-4-5",
        api_key="k",
        thinking="adaptive",
        params=SamplingParams(max_tokens=100, stop=["###"]),
        prompts=__import__("tracedistill.teachers", fromlist=["x"]).DEFAULT_PROMPTS.with_template(
            "math", PromptTemplate(user="{prompt}", system="You are careful.")
        ),
    )
    body = teacher.body(teacher.request(math_problems(1)[0]))
    assert body["system"] == "You are careful."
    assert [m["role"] for m in body["messages"]] == ["user"]
    assert body["thinking"] == {"type": "adaptive"}
    assert "temperature" not in body and body["stop_sequences"] == ["###"]
    plain = AnthropicTeacher(
        "claude-haiku",
        api_key="k",
        thinking=None,
        params=SamplingParams(max_tokens=50, temperature=0.0, top_k=1),
    )
    body = plain.body(plain.request(math_problems(1)[0]))
    assert body["temperature"] == 0.0 and body["top_k"] == 1 and "thinking" not in body


def test_thinking_configuration_is_validated() -> None:
    with pytest.raises(ConfigurationError, match="1024"):
        AnthropicTeacher("c", api_key="k", thinking=100)
    with pytest.raises(ConfigurationError, match="max_tokens"):
        AnthropicTeacher("c", api_key="k", thinking=5000, params=SamplingParams(max_tokens=4000))
    with pytest.raises(ConfigurationError, match="temperature"):
        AnthropicTeacher(
            "c", api_key="k", thinking=2048, params=SamplingParams(max_tokens=4096, temperature=0.2)
        )


async def test_overloaded_and_rate_limited_are_retried(
    anthropic_server: AnthropicServer, store: JsonlTraceStore
) -> None:
    teacher = claude(anthropic_server)
    problems = math_problems(4)
    anthropic_server.script(problems[0].prompt, Fault.http(529), Fault.http(429, retry_after=0.05))
    anthropic_server.script(problems[1].prompt, Fault.error_body(529, "Overloaded"))
    summary = await generate(teacher, problems, store)
    assert summary.done == 4 and summary.failed == 0
    # a 529 is an overload, not throttling: counted apart from the 429
    assert summary.throttled == 1 and summary.overloaded == 2
    assert store.get(teacher.request_key(problems[0])).attempts == 3  # type: ignore[union-attr]
    await teacher.aclose()


async def test_truncated_max_tokens(
    anthropic_server: AnthropicServer, store: JsonlTraceStore
) -> None:
    teacher = claude(anthropic_server)
    anthropic_server.push(Fault.truncated())
    summary = await generate(teacher, math_problems(1), store)
    assert summary.truncated == 1
    trace = next(iter(store.traces()))
    assert trace.finish_reason is FinishReason.LENGTH and trace.usage.completion_tokens == 4096
    await teacher.aclose()


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.http(401), AuthenticationError),
        (Fault.error_body(402, "credit balance too low"), InsufficientCreditsError),
    ],
)
async def test_fatal(
    fault: Fault, error: type[Exception], anthropic_server: AnthropicServer, store: JsonlTraceStore
) -> None:
    teacher = claude(anthropic_server)
    anthropic_server.push(fault)
    with pytest.raises(error):
        await generate(teacher, math_problems(50), store, concurrency=1)
    assert anthropic_server.stats.requests == 1
    await teacher.aclose()


async def test_rate_limit_headers_learned(store: JsonlTraceStore) -> None:
    with AnthropicServer(api_key=KEY, rpm=1200, burst_s=0.25, rate_headers=True) as server:
        teacher = claude(server)
        summary = await generate(teacher, math_problems(30), store, concurrency=8)
        assert summary.done == 30
        assert server.stats.throttled <= 8
        await teacher.aclose()


async def test_no_thinking_plain_answer(store: JsonlTraceStore) -> None:
    def responder(prompt: str, request: dict) -> Reply:  # type: ignore[type-arg]
        return Reply(reasoning="", answer="42")

    with AnthropicServer(responder=responder) as server:
        teacher = claude(server, thinking=None, api_key=None)
        await generate(teacher, math_problems(1), store, limits=RateLimits(adaptive=False))
        trace = next(iter(store.traces()))
        assert trace.reasoning == "" and trace.answer == "42"
        assert trace.reasoning_kind is ReasoningKind.NONE and trace.completion == "42"
        await teacher.aclose()


def test_parse_errors() -> None:
    teacher = AnthropicTeacher("c", api_key="k", thinking=None)
    with pytest.raises(ProviderUnavailableError):
        teacher.parse({"type": "message"})
    with pytest.raises(InsufficientCreditsError):
        teacher.parse({"type": "error", "error": {"type": "billing_error", "message": "pay"}})


async def test_unexpected_response_shape_is_recorded_not_fatal(store: JsonlTraceStore) -> None:
    import httpx

    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, json={"content": [], "usage": {"input_tokens": "many"}})

    teacher = AnthropicTeacher(
        "c", api_key="k", thinking=None, retry=FAST_RETRY, transport=httpx.MockTransport(handler)
    )
    summary = await generate(teacher, math_problems(2), store)
    assert summary.failed == 2 and len(calls) == 2 * FAST_RETRY.max_attempts
    failed = next(iter(store.traces(include_failed=True)))
    assert "unexpected response" in (failed.error or "")
    await teacher.aclose()
