"""``ModelClient.reply``: one attempt, the parsed answer; ``sample`` retries around it."""

from __future__ import annotations

import httpx
import pytest

from tracedistill.clients import AnthropicClient, OpenAICompatibleSampler, RetryPolicy
from tracedistill.errors import ProviderUnavailableError
from tracedistill.records import FinishReason, Message, ReasoningKind, SamplingParams

pytestmark = pytest.mark.anyio

PARAMS = SamplingParams(max_tokens=32, temperature=0.0, top_k=1)
PROMPT = (Message("user", "2+2?"),)
FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02)


def chat(content: str, reasoning: str | None = None) -> dict[str, object]:
    message: dict[str, object] = {"role": "assistant", "content": content}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    return {"choices": [{"index": 0, "message": message}], "usage": {"completion_tokens": 2}}


async def test_reply_is_one_attempt_and_sample_retries_around_it() -> None:
    answers = [httpx.Response(503, json={"error": {"message": "busy"}})]
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return answers.pop() if answers else httpx.Response(200, json=chat("4", "add"))

    client = OpenAICompatibleSampler(
        "m", base_url="http://api.test/v1", retry=FAST, transport=httpx.MockTransport(handler)
    )
    async with client:
        with pytest.raises(ProviderUnavailableError, match="busy"):
            await client.reply(PROMPT, PARAMS)  # one attempt: the 503 is the caller's to retry
        reply = await client.reply(PROMPT, PARAMS)
        answers.append(httpx.Response(503, json={"error": {"message": "busy"}}))
        completion = await client.sample(PROMPT, PARAMS)
    assert (reply.reasoning, reply.answer, reply.reasoning_kind) == ("add", "4", ReasoningKind.RAW)
    # The evaluator's text: reasoning back in front; a missing finish reason is a stop.
    assert completion.text == "<think>\nadd\n</think>\n\n4"
    assert completion.finish_reason is FinishReason.STOP
    assert len(calls) == 4


async def test_inline_think_is_split_only_when_asked() -> None:
    body = chat("<think>\nadd\n</think>\n\n4")
    transport = httpx.MockTransport(lambda _r: httpx.Response(200, json=body))
    kept = OpenAICompatibleSampler("m", base_url="http://api.test/v1", transport=transport)
    split = OpenAICompatibleSampler(
        "m",
        base_url="http://api.test/v1",
        transport=transport,
        split_inline=True,
        missing_finish=FinishReason.OTHER,
    )
    async with kept, split:
        as_written = await kept.reply(PROMPT, PARAMS)
        taken_apart = await split.reply(PROMPT, PARAMS)
    assert (as_written.reasoning, as_written.answer) == ("", "<think>\nadd\n</think>\n\n4")
    assert (taken_apart.reasoning, taken_apart.answer) == ("add", "4")
    assert taken_apart.finish_reason is FinishReason.OTHER


async def test_anthropic_reply_keeps_the_thinking_apart() -> None:
    message = {
        "type": "message",
        "content": [{"type": "thinking", "thinking": "add"}, {"type": "text", "text": "4"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 3, "output_tokens": 2},
    }
    transport = httpx.MockTransport(lambda _r: httpx.Response(200, json=message))
    async with AnthropicClient("c", api_key="sk-test-key", transport=transport) as client:
        reply = await client.reply(PROMPT, PARAMS)
        completion = await client.sample(PROMPT, PARAMS)
    assert (reply.reasoning, reply.answer) == ("add", "4")
    assert reply.reasoning_kind is ReasoningKind.SUMMARY
    assert completion.text == "<think>\nadd\n</think>\n\n4"
