"""Teachers hold a model client: one ``client.reply`` per attempt, one connection pool."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from tests.teachers.conftest import FAST_RETRY, math_problems
from tracedistill.clients import AnthropicClient, ModelClient, OpenAICompatibleSampler
from tracedistill.clients.base import Observer, Prompt, Reply
from tracedistill.errors import ProviderUnavailableError
from tracedistill.records import Completion, FinishReason, ReasoningKind, SamplingParams
from tracedistill.teachers import AnthropicTeacher, OpenAICompatTeacher
from tracedistill.teachers.client import ClientTeacher

pytestmark = pytest.mark.anyio

CHAT_ANSWER = {
    "id": "r1",
    "model": "m",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "<think>\nadd\n</think>\n\n4"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 7, "completion_tokens": 3},
}


class Server:
    """A MockTransport factory that counts the pools built and the requests by path."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response]) -> None:
        self.answer = answer
        self.pools = 0
        self.paths: list[str] = []

    def __call__(self) -> httpx.AsyncBaseTransport:
        self.pools += 1
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return self.answer(request)


def openai(server: Server, **kwargs: Any) -> OpenAICompatTeacher:
    return OpenAICompatTeacher(
        "m", base_url="http://api.test/v1", api_key="sk-test-key", transport=server, **kwargs
    )


async def test_complete_is_one_reply_of_the_teachers_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    teacher = openai(Server(lambda _r: httpx.Response(200, json=CHAT_ANSWER)))
    assert isinstance(teacher.client, OpenAICompatibleSampler)
    calls: list[tuple[Prompt, SamplingParams | None, Observer | None]] = []
    reply = teacher.client.reply

    async def spy(
        prompt: Prompt, params: SamplingParams | None, *, observe: Observer | None = None
    ) -> Reply:
        calls.append((prompt, params, observe))
        return await reply(prompt, params, observe=observe)

    monkeypatch.setattr(teacher.client, "reply", spy)
    request = teacher.request(math_problems(1)[0])
    completion = await teacher.complete(request)
    assert calls == [(request.messages, request.params, None)]
    # Parsed as a teacher stores it: the inline think block taken out as the reasoning.
    assert (completion.reasoning, completion.answer) == ("add", "4")
    await teacher.aclose()


async def test_one_pool_serves_requests_and_the_batch_api() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/files"):
            return httpx.Response(200, json={"id": "file-1"})
        if request.url.path.endswith("/batches"):
            return httpx.Response(200, json={"id": "batch-1"})
        if "/batches/" in request.url.path:
            return httpx.Response(200, json={"status": "in_progress"})
        return httpx.Response(200, json=CHAT_ANSWER)

    server = Server(answer)
    async with openai(server) as teacher:
        requests = [teacher.request(p) for p in math_problems(2)]
        trace = await teacher.run(requests[0])
        batch = await teacher.submit_batch(requests)
        status = await teacher.poll_batch(batch)
    assert trace.answer == "4" and batch == "batch-1" and not status.done
    assert server.pools == 1
    assert server.paths == [
        "/v1/chat/completions",
        "/v1/files",
        "/v1/batches",
        "/v1/batches/batch-1",
    ]


async def test_an_error_body_is_one_request_and_one_error_trace_named_after_the_teacher() -> None:
    body = {"error": {"message": "max_tokens too large", "type": "invalid_request_error"}}
    server = Server(lambda _r: httpx.Response(400, json=body))
    async with openai(server, name="my-teacher", retry=FAST_RETRY) as teacher:
        trace = await teacher.run(teacher.request(math_problems(1)[0]))
    assert trace.finish_reason is FinishReason.ERROR and trace.attempts == 1
    assert (trace.error or "").startswith("my-teacher: HTTP 400: invalid_request_error")
    assert "max_tokens too large" in (trace.error or "")
    assert trace.metadata == {"error_type": "InvalidRequestError", "status": 400}
    assert server.paths == ["/v1/chat/completions"]


async def test_the_teacher_retries_through_the_shared_loop() -> None:
    answers = [httpx.Response(502, json={"error": {"message": "bad gateway"}})] * 2
    server = Server(lambda _r: answers.pop() if answers else httpx.Response(200, json=CHAT_ANSWER))
    async with openai(server, retry=FAST_RETRY) as teacher:
        trace = await teacher.run(teacher.request(math_problems(1)[0]))
    assert trace.answer == "4" and trace.attempts == 3 and len(server.paths) == 3


async def test_anthropic_teacher_holds_an_anthropic_client() -> None:
    message = {
        "id": "msg_1",
        "type": "message",
        "model": "c",
        "content": [
            {"type": "thinking", "thinking": "add", "signature": "s"},
            {"type": "text", "text": "4"},
        ],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 5, "output_tokens": 2},
    }
    sent: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(orjson.loads(request.content))
        return httpx.Response(200, json=message)

    server = Server(answer)
    params = SamplingParams(max_tokens=4096, temperature=1.0)
    teacher = AnthropicTeacher(
        "c",
        api_key="sk-test-key",
        thinking=2048,
        params=params,
        summarized_thinking=False,
        transport=server,
    )
    assert isinstance(teacher.client, AnthropicClient)
    async with teacher:
        completion = await teacher.complete(teacher.request(math_problems(1)[0]))
    assert (completion.reasoning, completion.answer) == ("add", "4")
    assert completion.reasoning_kind is ReasoningKind.RAW  # the teacher's setting reached it
    assert sent[0]["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert server.pools == 1


class Scripted(ModelClient):
    """A client that only implements ``_sample``: fails retryably ``failures`` times first."""

    name = "scripted"

    def __init__(self, failures: int) -> None:
        super().__init__(max_concurrency=4)
        self.model = "scripted-1"
        self.failures = failures
        self.closed = False

    async def _sample(self, prompt: Prompt, params: SamplingParams) -> Completion:
        if self.failures:
            self.failures -= 1
            raise ProviderUnavailableError("try again")
        text = prompt if isinstance(prompt, str) else prompt[-1].content
        return Completion(text=text.upper(), finish_reason=FinishReason.STOP, prompt_tokens=3)

    async def aclose(self) -> None:
        self.closed = True


async def test_a_client_teacher_wraps_any_model_client() -> None:
    client = Scripted(failures=2)
    params = SamplingParams(max_tokens=16, temperature=0.0)
    async with ClientTeacher(client, params=params, retry=FAST_RETRY) as teacher:
        trace = await teacher.generate(math_problems(1)[0])
        assert teacher.describe()["client"] == {"backend": "scripted", "model": "scripted-1"}
    assert client.closed
    assert trace.model == "scripted-1" and trace.attempts == 3
    assert trace.answer.startswith("P0: WHAT IS 0 + 0?")
    assert trace.usage.prompt_tokens == 3
