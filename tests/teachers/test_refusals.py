"""What a refusal means: "not now" (a 429) is asked again, "not this account" stops the run.

The bodies are the providers' own, as their users report them: OpenAI answers an account out of
quota with a 429 whose ``error.type``/``error.code`` is ``insufficient_quota`` (or one of the
billing codes documented beside it), Anthropic answers an account without credit with a 400
``invalid_request_error`` "Your credit balance is too low to access the Anthropic API". Waiting
brings neither back, so retrying them (or failing every problem one by one) only burns the run.
A plain 429 with neither ``Retry-After`` nor rate headers is the opposite case: the provider
will accept later, so a request keeps its place instead of failing after ``max_attempts``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers.raw import read_request
from tracedistill.clients.retry import RetryPolicy, error_body_code, error_for_status
from tracedistill.errors import InsufficientCreditsError, RateLimitError
from tracedistill.records import SamplingParams
from tracedistill.store import JsonlTraceStore
from tracedistill.teachers import AnthropicTeacher, OpenAICompatTeacher, generate

from .conftest import math_problems

pytestmark = pytest.mark.anyio

ANSWER = {
    "id": "gen-1",
    "choices": [{"message": {"content": "4"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1},
}
OPENAI_QUOTA = {
    "error": {
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "type": "insufficient_quota",
        "param": None,
        "code": "insufficient_quota",
    }
}
ANTHROPIC_CREDIT = {
    "type": "error",
    "error": {
        "type": "invalid_request_error",
        "message": "Your credit balance is too low to access the Anthropic API. Please go to "
        "Plans & Billing to upgrade or purchase credits.",
    },
}
OPENAI_RATE = {
    "error": {
        "message": "Rate limit reached for requests",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}


class CannedServer:
    """Answers the first ``refusals`` requests with ``status`` and ``body``, then with ``ANSWER``
    (no rate headers, no ``Retry-After``); counts requests."""

    def __init__(self, status: int, body: dict[str, Any], *, refusals: int = 10**9) -> None:
        self.status, self.body, self.refusals = status, body, refusals
        self.requests = 0
        self.url = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                await read_request(reader)
                self.requests += 1
                refused = self.requests <= self.refusals
                status, body = (self.status, self.body) if refused else (200, ANSWER)
                data = json.dumps(body).encode()
                writer.write(
                    f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n".encode()
                    + f"content-length: {len(data)}\r\n\r\n".encode()
                    + data
                )
                await writer.drain()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[CannedServer]:
        server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            yield self
        finally:
            server.close()


FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02)


def openai(url: str, retry: RetryPolicy = FAST) -> OpenAICompatTeacher:
    return OpenAICompatTeacher(
        "m", base_url=url + "/v1", api_key="k", params=SamplingParams(max_tokens=8), retry=retry
    )


async def test_openai_out_of_quota_stops_the_run(tmp_path: Path) -> None:
    async with CannedServer(429, OPENAI_QUOTA).running() as server, openai(server.url) as teacher:
        with JsonlTraceStore(tmp_path) as store, pytest.raises(InsufficientCreditsError) as info:
            await generate(teacher, math_problems(50), store, concurrency=1)
        assert server.requests == 1  # asked once: no retry, no second problem
        assert len(store) == 0
    assert "quota" in str(info.value)


async def test_anthropic_credit_too_low_stops_the_run(tmp_path: Path) -> None:
    async with CannedServer(400, ANTHROPIC_CREDIT).running() as server:
        teacher = AnthropicTeacher("claude-x", base_url=server.url, api_key="k", thinking=None)
        async with teacher:
            with JsonlTraceStore(tmp_path) as store, pytest.raises(InsufficientCreditsError):
                await generate(teacher, math_problems(50), store, concurrency=1)
            assert server.requests == 1 and len(store) == 0


async def test_a_bare_429_does_not_use_up_the_attempts(tmp_path: Path) -> None:
    # more refusals than max_attempts, fewer than max_throttled: the problem is answered
    server = CannedServer(429, OPENAI_RATE, refusals=5)
    async with server.running(), openai(server.url) as teacher:
        with JsonlTraceStore(tmp_path) as store:
            summary = await generate(teacher, math_problems(1), store, concurrency=1)
            trace = next(store.traces())
    assert summary.failed == 0 and summary.done == 1
    assert trace.ok and trace.attempts == 6 and server.requests == 6


async def test_429s_have_their_own_bound(tmp_path: Path) -> None:
    policy = RetryPolicy(max_attempts=3, max_throttled=4, base_delay=0.01, max_delay=0.02)
    server = CannedServer(429, OPENAI_RATE)
    async with server.running(), openai(server.url, policy) as teacher:
        with JsonlTraceStore(tmp_path) as store:
            summary = await generate(teacher, math_problems(1), store, concurrency=1)
    assert summary.failed == 1 and server.requests == 4


def test_the_budgets_are_kept_apart() -> None:
    policy = RetryPolicy(max_attempts=3, max_throttled=5)
    rate, down = RateLimitError("429"), error_for_status(502, "502")
    assert policy.should_retry(rate, 7, throttled=4)  # 4 of 5 429s used
    assert not policy.should_retry(down, 7, throttled=4)  # 3 non-429 attempts made: the bound
    assert policy.should_retry(down, 6, throttled=4)
    assert not policy.should_retry(rate, 9, throttled=5)
    # without the split (callers that count every attempt alike): the old bound
    assert not policy.should_retry(rate, 3) and policy.should_retry(rate, 2)


def test_quota_codes_are_read_from_code_or_type() -> None:
    assert error_body_code(OPENAI_QUOTA) == "insufficient_quota"
    null_code = {"error": {"type": "insufficient_quota", "code": None, "message": "x"}}
    assert error_body_code(null_code) == "insufficient_quota"
    billing = {"error": {"type": "insufficient_quota", "code": "credit_balance_exhausted"}}
    assert error_body_code(billing) == "credit_balance_exhausted"
    assert error_body_code(OPENAI_RATE) == "rate_limit_exceeded"
    assert error_body_code(["not", "a", "body"]) is None
    quota = error_for_status(429, "429", code=error_body_code(billing))
    assert isinstance(quota, InsufficientCreditsError) and quota.fatal
    assert isinstance(error_for_status(429, "429", code="rate_limit_exceeded"), RateLimitError)
