"""The per-request shortcuts of the client layer build exactly what the slow way builds.

Replies and teacher requests are built without attrs' keyword handling, and the rate-limit
headers are picked out by their first byte first: each must equal, field for field, what the
constructor or the plain scan gives, on the awkward cases too.
"""

from __future__ import annotations

import attrs
import pytest

from tracedistill.clients.anthropic import parse_message
from tracedistill.clients.base import Reply, _trusted_reply
from tracedistill.clients.http import _limit_headers
from tracedistill.clients.openai_compat import parse_chat, parse_text
from tracedistill.records import (
    FinishReason,
    Problem,
    ReasoningKind,
    SamplingParams,
    TokenUsage,
    request_key,
)
from tracedistill.teachers import OpenAICompatTeacher
from tracedistill.teachers.base import TeacherRequest


def _plain_scan(raw: tuple[tuple[bytes, bytes], ...]) -> dict[str, str]:
    prefixes = (b"x-ratelimit-", b"anthropic-ratelimit-", b"retry-after")
    return {
        key.lower().decode("latin-1"): value.decode("latin-1")
        for key, value in raw
        if key.lower().startswith(prefixes)
    }


def test_a_trusted_reply_is_the_constructors_reply() -> None:
    usage = TokenUsage(prompt_tokens=3, completion_tokens=5, reasoning_tokens=2)
    fields = {
        "reasoning": "think",
        "answer": "4",
        "reasoning_kind": ReasoningKind.SUMMARY,
        "finish_reason": FinishReason.LENGTH,
        "usage": usage,
        "cost_usd": 0.25,
        "metadata": {"response_id": "r1"},
    }
    built = Reply(**fields)  # type: ignore[arg-type]
    trusted = _trusted_reply(*fields.values())  # type: ignore[arg-type]
    assert type(trusted) is Reply
    assert trusted == built and repr(trusted) == repr(built)
    assert attrs.asdict(trusted, recurse=False) == fields
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        trusted.answer = "5"  # type: ignore[misc]
    assert attrs.evolve(trusted, answer="5").answer == "5"


@pytest.mark.parametrize(
    ("parse", "body", "expected"),
    [
        (
            parse_chat,
            {
                "id": "gen-1",
                "model": "m",
                "choices": [
                    {
                        "message": {"content": "<think>why</think>4"},
                        "finish_reason": "weird",
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 2, "cost": 0.5},
            },
            Reply(
                reasoning="why",
                answer="4",
                reasoning_kind=ReasoningKind.RAW,
                finish_reason=FinishReason.OTHER,
                usage=TokenUsage(prompt_tokens=5, completion_tokens=2),
                cost_usd=0.5,
                metadata={
                    "served_model": "m",
                    "response_id": "gen-1",
                    "native_finish_reason": "weird",
                },
            ),
        ),
        (
            parse_text,
            {"choices": [{"text": "abc"}], "usage": {"prompt_tokens": 1}},
            Reply(
                answer="abc",
                reasoning_kind=ReasoningKind.NONE,
                finish_reason=FinishReason.STOP,
                usage=TokenUsage(prompt_tokens=1),
            ),
        ),
        (
            parse_message,
            {
                "id": "msg_1",
                "content": [
                    {"type": "thinking", "thinking": "hmm"},
                    {"type": "redacted_thinking", "data": "x"},
                    {"type": "text", "text": "4"},
                ],
                "stop_reason": "max_tokens",
                "usage": {"input_tokens": 7, "output_tokens": 3},
            },
            Reply(
                reasoning="hmm",
                answer="4",
                reasoning_kind=ReasoningKind.SUMMARY,
                finish_reason=FinishReason.LENGTH,
                usage=TokenUsage(prompt_tokens=7, completion_tokens=3),
                metadata={"response_id": "msg_1", "redacted_thinking_blocks": 1},
            ),
        ),
    ],
)
def test_parsers_return_what_the_constructor_builds(parse, body, expected) -> None:  # type: ignore[no-untyped-def]
    reply = parse(body)
    assert type(reply) is Reply
    assert reply == expected


@pytest.mark.parametrize(
    "raw",
    [
        (),
        ((b"content-type", b"application/json"), (b"content-length", b"615")),
        (
            (b"X-RateLimit-Limit", b"20"),
            (b"x-ratelimit-remaining-requests", b"19"),
            (b"Retry-After", b"2"),
            (b"ANTHROPIC-RATELIMIT-INPUT-TOKENS-RESET", b"2026-01-01T00:00:00Z"),
            (b"anthropic-organization-id", b"org"),
            (b"x-request-id", b"abc"),
            (b"retry-after-ms", b"250"),
            (b"access-control-expose-headers", b"X-Request-ID"),
            (b"Alt-Svc", b"h3"),
            (b"ratelimit-policy", b"10;w=1"),
            (b"", b"empty name"),
        ),
    ],
)
def test_rate_limit_headers_are_the_plain_scans(raw: tuple[tuple[bytes, bytes], ...]) -> None:
    assert _limit_headers(raw) == _plain_scan(raw)


def test_a_teachers_request_is_the_constructors_request() -> None:
    params = SamplingParams(max_tokens=64, extra={"reasoning": {"enabled": True}})
    teacher = OpenAICompatTeacher("m", base_url="http://127.0.0.1:9/v1", params=params)
    problem = Problem(kind="math", prompt="What is 2 + {id}?", answer="4")
    request = teacher.request(problem, sample_index=3)
    messages = teacher.messages(problem)
    expected = TeacherRequest(
        problem=problem,
        messages=messages,
        params=params,
        sample_index=3,
        key=request_key("m", messages, params, 3),
    )
    assert type(request) is TeacherRequest
    assert request == expected and repr(request) == repr(expected)


@pytest.mark.anyio
async def test_the_bare_posts_errors_keep_their_classes_and_hide_the_key() -> None:
    import aiohttp

    from tracedistill.clients.openai_compat import OpenAICompatibleSampler
    from tracedistill.errors import ProviderTimeoutError, ProviderUnavailableError

    client = OpenAICompatibleSampler(
        "m", base_url="http://127.0.0.1:9/v1", api_key="sk-secret-123", timeout_s=7.0
    )
    client._get_client()
    poster = client._poster
    assert poster is not None
    try:
        cases = [
            (aiohttp.ServerDisconnectedError(), ProviderUnavailableError, "connection lost"),
            (aiohttp.ClientPayloadError("cut"), ProviderUnavailableError, "connection lost"),
            (aiohttp.ServerTimeoutError("slow"), ProviderTimeoutError, "request timed out"),
            (TimeoutError(), ProviderTimeoutError, "no complete response within 7s"),
            (
                aiohttp.ClientOSError(61, "refused sk-secret-123"),
                ProviderUnavailableError,
                "connection error (ClientOSError",
            ),
            (ConnectionResetError("reset"), ProviderUnavailableError, "connection error"),
        ]
        for exc, cls, words in cases:
            assert isinstance(exc, poster.failures)
            error = poster.error_of(client, exc)
            assert type(error) is cls and error.retryable, exc
            assert words in str(error) and "sk-secret-123" not in str(error), str(error)
    finally:
        await client.aclose()
