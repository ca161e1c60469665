"""The Anthropic model client and the one Messages API parser it shares with the teacher."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from tests.servers.anthropic_server import AnthropicServer, Fault
from tracedistill.clients import AnthropicClient, RetryPolicy, SamplerError, greedy
from tracedistill.clients.anthropic import MessageStream, parse_message
from tracedistill.errors import (
    ConfigurationError,
    InvalidRequestError,
    ProviderUnavailableError,
    RateLimitError,
)
from tracedistill.records import FinishReason, Message, ReasoningKind, SamplingParams
from tracedistill.teachers import AnthropicTeacher

pytestmark = pytest.mark.anyio

KEY = "sk-ant-test-PLANTED-0123456789"
FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05)
THINKING = SamplingParams(max_tokens=4096, temperature=1.0)
PROMPT = [Message("system", "Be brief."), Message("user", "What is 2 + 2?")]


@pytest.fixture
def server() -> Iterator[AnthropicServer]:
    with AnthropicServer(api_key=KEY) as s:
        yield s


def client(server: AnthropicServer, **kwargs: object) -> AnthropicClient:
    options: dict[str, object] = {
        "base_url": server.url,
        "api_key": KEY,
        "retry": FAST,
        "timeout_s": 5.0,
    }
    options.update(kwargs)
    return AnthropicClient("claude-sonnet-4-5", **options)  # type: ignore[arg-type]


async def test_thinking_blocks_lead_the_text(server: AnthropicServer) -> None:
    server.record_headers = True
    async with client(server, thinking=2048) as claude:
        out = await claude.sample(PROMPT, THINKING)
    reasoning, _, answer = out.text.partition("\n</think>\n\n")
    assert reasoning.startswith("<think>\nLet me think")
    assert answer.startswith("The answer is") and "opaque" not in out.text
    assert out.finish_reason is FinishReason.STOP
    assert out.prompt_tokens and out.prompt_tokens > 0
    assert out.completion_tokens and out.completion_tokens > 0
    headers = server.stats.seen_headers[0]
    assert headers["x-api-key"] == KEY and headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in headers


async def test_greedy_without_thinking_and_reasoning_left_out(server: AnthropicServer) -> None:
    async with client(server, thinking=None, include_reasoning=False) as claude:
        body = claude.body(PROMPT, greedy(64, stop=["###"]))
        out = await claude.complete(PROMPT, max_tokens=64)
    assert body["system"] == "Be brief." and [m["role"] for m in body["messages"]] == ["user"]
    assert body["temperature"] == 0.0 and body["top_k"] == 1 and "thinking" not in body
    assert body["stop_sequences"] == ["###"]
    assert out.text.startswith("The answer is") and "<think>" not in out.text


async def test_thinking_needs_temperature_one_and_chat_prompts(server: AnthropicServer) -> None:
    async with client(server, thinking=2048) as claude:
        with pytest.raises(ConfigurationError, match="temperature 1"):
            await claude.sample(PROMPT, greedy(4096))
        with pytest.raises(ConfigurationError, match="chat prompts"):
            await claude.sample("raw text", THINKING)


async def test_stop_reason_max_tokens_is_length(server: AnthropicServer) -> None:
    server.push(Fault.truncated())
    async with client(server) as claude:
        out = await claude.complete(PROMPT, max_tokens=32)
    assert out.finish_reason is FinishReason.LENGTH and out.truncated
    assert out.completion_tokens == 32


async def test_overload_and_error_bodies_are_retried(server: AnthropicServer) -> None:
    server.push(Fault.http(529), Fault.error_body(529, "Overloaded"))
    async with client(server) as claude:
        out = await claude.complete(PROMPT, max_tokens=32)
    assert out.text.startswith("The answer is")
    assert server.stats.requests == 3


async def test_bad_key_is_fatal_and_redacted(server: AnthropicServer) -> None:
    async with client(server, api_key="sk-ant-wrong-PLANTED-999") as claude:
        with pytest.raises(SamplerError) as caught:
            await claude.complete(PROMPT, max_tokens=32)
    assert caught.value.fatal
    assert "sk-ant-wrong-PLANTED-999" not in str(caught.value)
    assert server.stats.requests == 1


async def test_invalid_request_is_not_retried(server: AnthropicServer) -> None:
    server.push(Fault.error_body(400, "max_tokens: too large"))
    async with client(server) as claude:
        with pytest.raises(SamplerError, match="invalid_request_error") as caught:
            await claude.complete(PROMPT, max_tokens=32)
    assert not caught.value.fatal
    assert isinstance(caught.value.__cause__, InvalidRequestError)
    assert server.stats.requests == 1


async def test_streaming_matches_the_whole_body(server: AnthropicServer) -> None:
    async with client(server, thinking=2048) as whole:
        expected = await whole.sample(PROMPT, THINKING)
    server.push(Fault.stream_error(529, after=3))
    async with client(server, thinking=2048, stream=True) as streamed:
        out = await streamed.sample(PROMPT, THINKING)
    assert out.text == expected.text
    assert out.finish_reason is expected.finish_reason
    assert (out.prompt_tokens, out.completion_tokens) == (
        expected.prompt_tokens,
        expected.completion_tokens,
    )
    assert server.stats.requests == 3  # the overloaded stream was retried


def test_parse_message_stop_reasons_usage_and_metadata() -> None:
    body = {
        "id": "msg_1",
        "model": "claude-x",
        "content": [
            {"type": "thinking", "thinking": "first"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "thinking", "thinking": "second"},
            {"type": "text", "text": "42"},
        ],
        "stop_reason": "pause_turn",
        "usage": {
            "input_tokens": 10,
            "cache_creation_input_tokens": 5,
            "cache_read_input_tokens": 7,
            "output_tokens": 3,
        },
    }
    reply = parse_message(body, summarized_thinking=False)
    assert reply.reasoning == "first\n\nsecond" and reply.answer == "42"
    assert reply.reasoning_kind is ReasoningKind.RAW
    assert reply.finish_reason is FinishReason.OTHER
    assert reply.metadata == {
        "response_id": "msg_1",
        "served_model": "claude-x",
        "redacted_thinking_blocks": 1,
        "native_finish_reason": "pause_turn",
    }
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (22, 3)
    refusal = parse_message({"content": [], "stop_reason": "refusal"})
    assert refusal.finish_reason is FinishReason.CONTENT_FILTER
    assert refusal.reasoning_kind is ReasoningKind.NONE
    with pytest.raises(RateLimitError, match="slow down"):
        parse_message(
            {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
        )
    with pytest.raises(ProviderUnavailableError, match="no content"):
        parse_message({"id": "x"})


def test_stream_error_event_and_cut_stream() -> None:
    sink = MessageStream("claude", lambda text: text.replace("SECRET", "***"))
    sink.feed("message_start", b'{"type":"message_start","message":{"id":"m","usage":{}}}')
    with pytest.raises(ProviderUnavailableError, match=r"claude: overloaded_error.*\*\*\*"):
        sink.feed(
            "error", b'{"type":"error","error":{"type":"overloaded_error","message":"SECRET"}}'
        )
    with pytest.raises(ProviderUnavailableError, match="without a stop reason"):
        sink.message()


# The event flow of Anthropic's streaming documentation for extended thinking, with the cases
# our own server never sends: a redacted_thinking block (data, no deltas), a ping between
# deltas, usage cumulative in message_delta, cache fields in message_start.
_DOCUMENTED_STREAM = [
    (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_01",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": "claude-sonnet-4-5",
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 0},
            },
        },
    ),
    (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
    ),
    ("ping", {"type": "ping"}),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "2 + 2 "},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "is 4."},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": "EqQBCgIYAh"},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "redacted_thinking", "data": "EmwKAhgB"},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    (
        "content_block_start",
        {"type": "content_block_start", "index": 2, "content_block": {"type": "text", "text": ""}},
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "text_delta", "text": "The answer is "},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "text_delta", "text": "\\boxed{4}"},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 2}),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 15},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
]


def test_documented_stream_with_a_redacted_block() -> None:
    sink = MessageStream("anthropic")
    for event, payload in _DOCUMENTED_STREAM:
        sink.feed(event, orjson.dumps(payload))
    reply = parse_message(sink.message())
    assert reply.reasoning == "2 + 2 is 4."
    assert reply.answer == "The answer is \\boxed{4}"
    assert reply.finish_reason is FinishReason.STOP
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (25, 15)
    assert reply.metadata["redacted_thinking_blocks"] == 1
    assert reply.metadata["served_model"] == "claude-sonnet-4-5"


def test_teacher_and_client_share_the_parser() -> None:
    teacher = AnthropicTeacher("claude-sonnet-4-5", api_key="k", thinking=None)
    body = {
        "content": [{"type": "thinking", "thinking": "t"}, {"type": "text", "text": "a"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 1, "output_tokens": 2},
    }
    assert teacher.parse(body) == parse_message(body, name=teacher.name)
