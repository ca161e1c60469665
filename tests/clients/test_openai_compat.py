"""The OpenAI-compatible client on the shared transport, and the one parser it shares with the
teacher."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers.openai_server import Fault, OpenAIServer
from tracedistill.clients import OpenAICompatibleSampler, RetryPolicy, SamplerError
from tracedistill.clients.base import cut_at_stop, cut_completion
from tracedistill.clients.http import HttpClient
from tracedistill.clients.openai_compat import ChatStream, parse_chat
from tracedistill.errors import InsufficientCreditsError, ProviderUnavailableError
from tracedistill.records import Completion, FinishReason, Message, ReasoningKind
from tracedistill.teachers import OpenAICompatTeacher

pytestmark = pytest.mark.anyio

KEY = "sk-test-PLANTED-abcdef0123456789"
FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05)
PROMPT = [Message("user", "What is 3 + 4?")]


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer(api_key=KEY) as s:
        yield s


def sampler(server: OpenAIServer, **kwargs: object) -> OpenAICompatibleSampler:
    options: dict[str, object] = {
        "base_url": server.url + "/v1",
        "api_key": KEY,
        "retry": FAST,
        "timeout_s": 5.0,
    }
    options.update(kwargs)
    return OpenAICompatibleSampler("student", **options)  # type: ignore[arg-type]


async def test_sampler_runs_on_the_shared_transport(server: OpenAIServer) -> None:
    async with sampler(server) as client:
        assert isinstance(client, HttpClient)
        out = await client.complete(PROMPT, max_tokens=64)
    assert out.text.startswith("<think>\nLet me think") and "The answer is" in out.text
    assert out.finish_reason is FinishReason.STOP
    assert out.prompt_tokens and out.completion_tokens


async def test_streamed_chat_equals_the_whole_body(server: OpenAIServer) -> None:
    async with sampler(server) as whole:
        expected = await whole.complete(PROMPT, max_tokens=64)
    server.push(Fault.stream_error(502, after=2))
    async with sampler(server, stream=True) as streamed:
        out = await streamed.complete(PROMPT, max_tokens=64)
    assert (out.text, out.finish_reason) == (expected.text, expected.finish_reason)
    assert out.completion_tokens == expected.completion_tokens
    assert server.stats.requests == 3  # the stream that ended in an error chunk was retried


async def test_error_bodies_are_retried_and_credits_stop(server: OpenAIServer) -> None:
    server.push(Fault.error_body(502), Fault.http(503))
    async with sampler(server) as client:
        out = await client.complete(PROMPT, max_tokens=64)
        assert "The answer is" in out.text
        server.push(Fault.error_body(402, f"no credits left for {KEY}"))
        with pytest.raises(SamplerError) as caught:
            await client.complete(PROMPT, max_tokens=64)
    assert caught.value.fatal and isinstance(caught.value.__cause__, InsufficientCreditsError)
    assert KEY not in str(caught.value)


def test_one_parser_for_teacher_and_sampler() -> None:
    body = {
        "id": "gen-1",
        "model": "m",
        "choices": [
            {"message": {"content": "<think>\nr\n</think>\n\nanswer"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 5, "cost": 0.25},
    }
    teacher = OpenAICompatTeacher("m", base_url="http://localhost:1/v1", api_key="k")
    reply = parse_chat(body, name=teacher.name)
    assert teacher.parse(body) == reply
    assert (reply.reasoning, reply.answer, reply.cost_usd) == ("r", "answer", 0.25)
    client = OpenAICompatibleSampler("m", base_url="http://localhost:1/v1", api_key="k")
    # The sampler keeps the turn as the model wrote it.
    assert client.parse(body).text == "<think>\nr\n</think>\n\nanswer"
    whole = parse_chat(body, split_inline=False)
    assert whole.reasoning == "" and whole.answer.startswith("<think>")


def test_parse_chat_fields_and_errors() -> None:
    summary = parse_chat(
        {
            "choices": [
                {
                    "message": {
                        "content": [{"type": "text", "text": "a"}],
                        "reasoning_details": [{"type": "reasoning.summary", "summary": "s"}],
                    },
                    "finish_reason": None,
                }
            ]
        }
    )
    assert summary.reasoning_kind is ReasoningKind.SUMMARY and summary.answer == "a"
    assert summary.finish_reason is FinishReason.OTHER
    with pytest.raises(ProviderUnavailableError, match="ended with an error"):
        parse_chat({"choices": [{"message": {"content": ""}, "finish_reason": "error"}]})
    with pytest.raises(InsufficientCreditsError):
        parse_chat({"choices": [{"error": {"code": 402, "message": "pay"}}]})


def test_chat_stream_error_chunk_is_redacted() -> None:
    sink = ChatStream("router", lambda text: text.replace(KEY, "***"))
    with pytest.raises(ProviderUnavailableError, match=r"router: .*\*\*\*"):
        sink.feed("", b'{"error": {"code": 502, "message": "upstream said ' + KEY.encode() + b'"}}')


def test_cut_at_stop_is_one_helper() -> None:
    assert cut_at_stop("abc###def</s>", ["</s>", "###"]) == ("abc", True)
    assert cut_at_stop("abc", ["", "x"]) == ("abc", False)
    long = Completion(text="x\n\nQ: next", finish_reason=FinishReason.LENGTH)
    cut = cut_completion(long, ("\n\nQ:",))
    assert (cut.text, cut.finish_reason) == ("x", FinishReason.STOP)
    assert cut_completion(long, ()) is long
