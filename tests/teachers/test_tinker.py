"""TinkerTeacher against a fake of the SDK's sampling client (fast) and, when its venv exists,
end to end against the Tinker-compatible loopback server (tests/servers/tinker_server.py; slow).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
import tinker

from tracedistill import FinishReason, JsonlTraceStore, ReasoningKind, SamplingParams
from tracedistill.chat import ChatFormat, ChatRenderer, ChatTokenizer, qwen3_offline_tokenizer
from tracedistill.clients.retry import RetryPolicy
from tracedistill.clients.tinker import LiveSamplerLimit, TinkerSampler
from tracedistill.errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from tracedistill.records import split_completion
from tracedistill.teachers import generate
from tracedistill.teachers.tinker import TinkerTeacher

from .conftest import FAST_RETRY, math_problems

pytestmark = pytest.mark.anyio


class _Status(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status


class _Future:
    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value, self.error = value, error

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value

    def __await__(self) -> Any:
        async def get() -> Any:
            return self.result()

        return get().__await__()


class FakeSamplingClient:
    def __init__(self, replies: list[tuple[list[int], str]], errors: list[BaseException]) -> None:
        self.replies, self.errors = replies, errors
        self.requests: list[dict[str, Any]] = []

    def sample(self, *, prompt: Any, num_samples: int, sampling_params: Any) -> _Future:
        self.requests.append({"prompt": prompt.to_ints(), "params": sampling_params})
        if self.errors:
            return _Future(error=self.errors.pop(0))
        tokens, stop = self.replies.pop(0)
        seq = tinker.types.SampledSequence(
            stop_reason=stop, sequence_id="s", tokens_np=np.asarray(tokens, dtype=np.int32)
        )
        return _Future(tinker.types.SampleResponse(sequences=[seq]))


class FakeService:
    """Creates ``client``; fails each creation with the next of ``errors`` first (then with
    ``error``, if set); blocks ``delay_s`` first, as the SDK's first call does."""

    def __init__(
        self,
        client: FakeSamplingClient,
        error: BaseException | None = None,
        *,
        errors: list[BaseException] | None = None,
        delay_s: float = 0.0,
    ) -> None:
        self.client, self.error = client, error
        self.errors = list(errors or [])
        self.delay_s = delay_s
        self.created: list[dict[str, Any]] = []
        self.threads: list[int] = []

    def create_sampling_client(self, **kw: Any) -> _Future:
        self.created.append(kw)
        self.threads.append(threading.get_ident())
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.errors:
            return _Future(error=self.errors.pop(0))
        return _Future(self.client, self.error)


class ThreadTokenizer:
    """A tokenizer that notes the threads it is called on."""

    def __init__(self, inner: ChatTokenizer) -> None:
        self.inner = inner
        self.threads: set[int] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def encode_batch(self, texts: Any) -> Any:
        self.threads.add(threading.get_ident())
        return self.inner.encode_batch(texts)

    def decode(self, ids: Any, **kw: Any) -> str:
        self.threads.add(threading.get_ident())
        return self.inner.decode(ids, **kw)


@pytest.fixture(scope="module")
def tokenizer() -> ChatTokenizer:
    return qwen3_offline_tokenizer()


def teacher(tokenizer: ChatTokenizer, service: FakeService, **kw: Any) -> TinkerTeacher:
    kw.setdefault("params", SamplingParams(max_tokens=64, temperature=0.7))
    kw.setdefault("retry", FAST_RETRY)
    return TinkerTeacher(
        "Qwen/Qwen3-8B",
        renderer=ChatRenderer(tokenizer, ChatFormat.QWEN3),
        service_client=service,
        **kw,
    )


def answered(tokenizer: ChatTokenizer, text: str = "<think>\nr\n</think>\n\n4") -> list[int]:
    return [*tokenizer.encode(text), ChatRenderer(tokenizer).stop_token_id]


async def test_traces_from_sampled_tokens(tokenizer: ChatTokenizer, tmp_path: Path) -> None:
    renderer = ChatRenderer(tokenizer, ChatFormat.QWEN3)
    done = [*tokenizer.encode("<think>\n2 and 2\n</think>\n\n\\boxed{4}"), renderer.stop_token_id]
    cut = tokenizer.encode("<think>\nlong")
    client = FakeSamplingClient(
        [(done, "stop"), (cut, "length")], [_Status(429, "too many concurrent LoRA samplers")]
    )
    service = FakeService(client)
    t = teacher(tokenizer, service)
    problems = math_problems(2)
    with JsonlTraceStore(tmp_path / "s") as store:
        summary = await generate(t, problems, store, concurrency=1)
        assert summary.done == 2 and summary.truncated == 1 and summary.throttled == 1
        # the first problem's 429 sends it into a back-off, during which the second takes the
        # slot (and the next sampled answer): which problem gets which answer is not fixed
        first = store.get(t.request_key(problems[0]))
        second = store.get(t.request_key(problems[1]))
        assert first is not None and second is not None
        assert (first.attempts, second.attempts) == (2, 1)
        finished, cut_short = sorted((first, second), key=lambda trace: trace.truncated)
        assert finished.reasoning == "2 and 2" and finished.answer == "\\boxed{4}"
        assert finished.reasoning_kind is ReasoningKind.RAW
        assert finished.usage.completion_tokens == len(done)
        assert cut_short.truncated and cut_short.reasoning == "long"
    assert service.created == [{"model_path": None, "base_model": "Qwen/Qwen3-8B"}]
    request = client.requests[0]
    messages = t.messages(problems[0])
    assert request["prompt"] == list(renderer.generation_prompt(messages).tokens)
    params = request["params"]
    assert (params.max_tokens, params.temperature, params.stop) == (
        64,
        0.7,
        [renderer.stop_token_id],
    )


async def test_start_failure_stops_the_run(tokenizer: ChatTokenizer, tmp_path: Path) -> None:
    service = FakeService(FakeSamplingClient([], []), error=_Status(401, "bad key"))
    with JsonlTraceStore(tmp_path / "s") as store, pytest.raises(AuthenticationError):
        await generate(teacher(tokenizer, service), math_problems(5), store)
    assert len(service.created) == 1


async def test_teacher_holds_a_tinker_sampler(tokenizer: ChatTokenizer) -> None:
    service = FakeService(FakeSamplingClient([(answered(tokenizer), "stop")] * 3, []))
    t = teacher(tokenizer, service, name="tk")
    assert isinstance(t.client, TinkerSampler) and t.client.label == "tk"
    assert t.connection is t.client.connection and t.start_timeout_s == 300.0
    for problem in math_problems(3):
        reply = await t.complete(t.request(problem))
        assert (reply.reasoning, reply.answer) == ("r", "4")
    assert len(service.created) == 1  # one sampling client, reused
    with pytest.warns(DeprecationWarning, match="reply_of"):
        assert t.parse(_sampled(tokenizer), 5).answer == "4"
    await t.aclose()


def _sampled(tokenizer: ChatTokenizer) -> Any:
    seq = tinker.types.SampledSequence(
        stop_reason="stop", sequence_id="s", tokens_np=np.asarray(answered(tokenizer))
    )
    return tinker.types.SampleResponse(sequences=[seq])


# --- (a) start failures: permanent ones kept and fatal, transient ones retried -------------


async def test_unknown_model_is_fatal_and_kept_until_closed(
    tokenizer: ChatTokenizer, tmp_path: Path
) -> None:
    service = FakeService(FakeSamplingClient([], []), error=_Status(404, "unknown base model"))
    t = teacher(tokenizer, service)
    with JsonlTraceStore(tmp_path / "s") as store, pytest.raises(InvalidRequestError) as info:
        await generate(t, math_problems(5), store, concurrency=3)
    assert info.value.fatal and "404" in str(info.value) and "unknown base model" in str(info.value)
    with pytest.raises(InvalidRequestError, match="unknown base model"):
        await t.start()  # kept: the service is not asked again
    assert len(service.created) == 1
    await t.aclose()  # closing forgets it: a fixed service is tried again
    service.error = None
    await t.start()
    assert len(service.created) == 2


async def test_a_model_the_service_does_not_serve_is_fatal_at_start(
    tokenizer: ChatTokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tracedistill.clients.tinker as module

    client = FakeSamplingClient([(answered(tokenizer), "stop")], [])
    service = FakeService(client)
    served = ["Qwen/Qwen3-235B-A22B", "Qwen/Qwen3-30B-A3B"]
    asked: list[tuple[str | None, str | None]] = []

    def listed(*, base_url: str | None, api_key: Any) -> list[str]:
        asked.append((base_url, None if api_key is None else api_key.reveal()))
        return served

    monkeypatch.setattr(module, "new_service_client", lambda **kw: service)
    monkeypatch.setattr(module, "served_models", listed)
    t = TinkerTeacher(  # its own service: the one at base_url, with api_key
        "Qwen/Qwen3-8B",
        renderer=ChatRenderer(tokenizer),
        base_url="http://tinker.test",
        api_key="tml-key",
        retry=FAST_RETRY,
    )
    with pytest.raises(InvalidRequestError, match="not served") as info:
        await t.complete(t.request(math_problems(1)[0]))
    assert info.value.fatal and "Qwen/Qwen3-8B" in str(info.value)
    assert "Qwen/Qwen3-235B-A22B" in str(info.value) and service.created == []
    assert asked == [("http://tinker.test", "tml-key")]
    await t.aclose()
    served.append("qwen/qwen3-8b")
    assert (await t.complete(t.request(math_problems(1)[0]))).answer == "4"
    await t.aclose()


async def test_transient_start_failure_is_retried(tokenizer: ChatTokenizer, tmp_path: Path) -> None:
    client = FakeSamplingClient([(answered(tokenizer), "stop")] * 3, [])
    service = FakeService(client, errors=[_Status(503, "starting up")])
    t = teacher(tokenizer, service)
    problems = math_problems(3)
    with JsonlTraceStore(tmp_path / "s") as store:
        summary = await generate(t, problems, store, concurrency=1)
        assert summary.done == 3 and summary.failed == 0
        first = store.get(t.request_key(problems[0]))
        assert first is not None and first.attempts == 2 and first.answer == "4"
    assert len(service.created) == 2


async def test_callers_queued_behind_a_failed_start_fail_with_it(
    tokenizer: ChatTokenizer,
) -> None:
    client = FakeSamplingClient([(answered(tokenizer), "stop")], [])
    service = FakeService(client, errors=[_Status(503, "overloaded")], delay_s=0.3)
    backoff = RetryPolicy(max_attempts=4, base_delay=1.0, max_delay=1.0, jitter=False)
    t = teacher(tokenizer, service, retry=backoff)
    request = t.request(math_problems(1)[0])
    errors: list[ProviderError] = []

    async def attempt() -> None:
        try:
            await t.complete(request)
        except ProviderError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(attempt)
    assert len(service.created) == 1  # one start was waited for, not four
    assert len(errors) == 4 and len({id(e) for e in errors}) == 4
    assert all(isinstance(e, ProviderUnavailableError) and not e.fatal for e in errors)
    assert all("overloaded" in str(e) for e in errors)
    await anyio.sleep(1.1)  # the back-off after the failure passes: the next caller tries again
    assert (await t.complete(request)).answer == "4"
    assert len(service.created) == 2
    await t.aclose()


async def test_transient_start_failures_in_a_row_stop_the_run(
    tokenizer: ChatTokenizer, tmp_path: Path
) -> None:
    service = FakeService(FakeSamplingClient([], []), error=_Status(503, "down"))
    t = teacher(tokenizer, service)  # FAST_RETRY: 4 attempts
    with JsonlTraceStore(tmp_path / "s") as store, pytest.raises(ProviderUnavailableError) as info:
        await generate(t, math_problems(20), store, concurrency=1)
    assert info.value.fatal and "4 attempts in a row" in str(info.value)
    assert len(service.created) == 4


# --- (b) the live-sampler slot: one per sampler-weights path ------------------------------


async def test_live_sampler_slot_per_weights_path(tokenizer: ChatTokenizer) -> None:
    limit = LiveSamplerLimit(1)

    def service() -> FakeService:
        return FakeService(FakeSamplingClient([(answered(tokenizer), "stop")] * 2, []))

    base = teacher(tokenizer, service(), live_samplers=limit)
    await base.start()
    assert limit.in_use == 0  # a base model is no adapter the service keeps loaded
    path = "tinker://run-1/sampler_weights/step-1"
    tuned = teacher(tokenizer, service(), model_path=path, live_samplers=limit)
    await tuned.start()
    assert limit.in_use == 1
    evaluator = TinkerSampler(
        path,
        base_model="Qwen/Qwen3-8B",
        renderer=ChatRenderer(tokenizer),
        service_client=service(),
        live_samplers=limit,
    )
    await evaluator.start()  # the same weights: the same slot
    assert limit.in_use == 1
    other = teacher(
        tokenizer, service(), model_path="tinker://run-2/sampler_weights/x", live_samplers=limit
    )
    with anyio.move_on_after(0.3) as scope:
        await other.start()
    assert scope.cancel_called  # another path waits for the slot
    await tuned.aclose()
    assert limit.in_use == 1  # still held by the evaluator's sampler of that path
    await evaluator.aclose()
    await other.start()
    assert limit.in_use == 1 and limit.peak == 1
    for closing in (other, base):
        await closing.aclose()
    assert limit.in_use == 0
    refused = FakeService(FakeSamplingClient([], []), error=_Status(404, "no such weights"))
    failed = teacher(tokenizer, refused, model_path=path, live_samplers=limit)
    with pytest.raises(InvalidRequestError):
        await failed.start()
    assert limit.in_use == 0  # a failed start gives its slot back


# --- (c) the stop cut ---------------------------------------------------------------------


async def test_text_cut_at_the_first_stop_string(tokenizer: ChatTokenizer, tmp_path: Path) -> None:
    renderer = ChatRenderer(tokenizer, ChatFormat.QWEN3)
    # A service that returns the stop string and the text after it, and says "length".
    text = "<think>\nadd\n</think>\n\nThe answer is 4.\n###\nUser: and 5?"
    client = FakeSamplingClient([(tokenizer.encode(text), "length")], [])
    params = SamplingParams(max_tokens=64, temperature=0.7, stop=("User:", "###"))
    t = teacher(tokenizer, FakeService(client), params=params)
    problem = math_problems(1)[0]
    with JsonlTraceStore(tmp_path / "s") as store:
        summary = await generate(t, [problem], store)
        trace = store.get(t.request_key(problem))
    assert summary.done == 1 and summary.truncated == 0
    assert trace is not None and trace.finish_reason is FinishReason.STOP
    assert (trace.reasoning, trace.answer) == ("add", "The answer is 4.\n")
    generation = renderer.generation_prompt(t.messages(problem))
    assert client.requests[0]["params"].stop == [*generation.stop_strings, "User:", "###"]


# --- (d) threading ------------------------------------------------------------------------


async def test_blocking_sdk_and_tokenizer_stay_off_the_event_loop(
    tokenizer: ChatTokenizer,
) -> None:
    recording = ThreadTokenizer(tokenizer)
    client = FakeSamplingClient([(answered(tokenizer), "stop")], [])
    service = FakeService(client, delay_s=0.6)  # the SDK's first call blocks
    t = TinkerTeacher(
        "Qwen/Qwen3-8B",
        renderer=ChatRenderer(recording),  # type: ignore[arg-type]
        service_client=service,
        params=SamplingParams(max_tokens=64),
        retry=FAST_RETRY,
        start_timeout_s=0.2,
    )
    loop_thread = threading.get_ident()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.02)
            ticks += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        with pytest.raises(ProviderTimeoutError) as info:
            await t.start()
        tg.cancel_scope.cancel()
    # A timed-out start is transient: reported with the limit, retryable, not fatal.
    assert not info.value.fatal and "after 0.2s" in str(info.value)
    assert ticks >= 2  # the loop ran on while the SDK call blocked
    service.delay_s = 0.0
    await anyio.sleep(0.1)  # past FAST_RETRY's back-off
    reply = await t.complete(t.request(math_problems(1)[0]))
    assert reply.answer == "4" and len(service.created) == 2
    assert loop_thread not in service.threads
    assert recording.threads and loop_thread not in recording.threads
    await t.aclose()


def test_training_state_path_refused() -> None:
    with pytest.raises(ConfigurationError, match="sampler_weights"):
        TinkerTeacher("Qwen/Qwen3-8B", model_path="tinker://run/weights/step-1")
    t = TinkerTeacher("Qwen/Qwen3-8B", model_path="tinker://run/sampler_weights/step-1")
    assert t.model == "tinker://run/sampler_weights/step-1"


# --- end to end ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tinker_server(
    tmp_path_factory: pytest.TempPathFactory, tokenizer: ChatTokenizer
) -> Iterator[Any]:
    from tests.servers.tinker_server import SETUP_SCRIPT, TinkerServer, venv_ready

    if not venv_ready():
        reason = f"Tinker-compatible server venv missing: run bash {SETUP_SCRIPT}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    from tracedistill.training.local import build_tiny_model

    model = build_tiny_model(
        tmp_path_factory.mktemp("tiny") / "qwen3", kind="qwen3", tokenizer=tokenizer, seed=1
    )
    server = TinkerServer(model, tmp_path_factory.mktemp("tinker-teacher"), max_lora_adapters=2)
    server.start()
    yield server
    server.stop()


@pytest.mark.slow
async def test_end_to_end_on_tinker_api(
    tinker_server: Any, tokenizer: ChatTokenizer, tmp_path: Path
) -> None:
    service = tinker.ServiceClient(base_url=tinker_server.base_url, api_key=tinker_server.api_key)
    t = TinkerTeacher(
        tinker_server.base_model,
        renderer=ChatRenderer(tokenizer),
        service_client=service,
        params=SamplingParams(max_tokens=12, temperature=0.0, top_k=1),
    )
    with JsonlTraceStore(tmp_path / "s") as store:
        summary = await generate(t, math_problems(3), store, concurrency=2)
        assert summary.done == 3 and summary.failed == 0
        for trace in store.traces():
            assert 0 < trace.usage.completion_tokens <= 12
    await t.aclose()


@pytest.mark.slow
async def test_stop_cut_and_start_failure_on_tinker_api(
    tinker_server: Any, tokenizer: ChatTokenizer, tmp_path: Path
) -> None:
    service = tinker.ServiceClient(base_url=tinker_server.base_url, api_key=tinker_server.api_key)
    problem = math_problems(1)[0]

    def greedy_teacher(**params: Any) -> TinkerTeacher:
        return TinkerTeacher(
            tinker_server.base_model,
            renderer=ChatRenderer(tokenizer),
            service_client=service,
            params=SamplingParams(max_tokens=16, temperature=0.0, top_k=1, **params),
        )

    async def answer(t: TinkerTeacher) -> Any:
        try:
            return await t.complete(t.request(problem))
        finally:
            await t.aclose()

    whole = await answer(greedy_teacher())
    text = whole.answer
    # A stop string from the middle of the greedy answer: the same answer, cut at its first
    # occurrence, finished by "stop" (whether the server cut there or not).
    assert len(text) >= 4, repr(whole)
    stop = text[len(text) // 2 :][:2]
    cut = await answer(greedy_teacher(stop=(stop,)))
    assert cut.answer == text[: text.find(stop)] and cut.finish_reason is FinishReason.STOP

    # A model the server does not serve: one clear, fatal error, kept (the service is asked once).
    unknown = TinkerTeacher(
        "no-such/model",
        renderer=ChatRenderer(tokenizer),
        base_url=tinker_server.base_url,
        api_key=tinker_server.api_key,
        params=SamplingParams(max_tokens=4),
        start_timeout_s=120,
    )
    with anyio.fail_after(60), pytest.raises(InvalidRequestError, match="not served") as info:
        await unknown.start()  # not after each sample's own retries: at once
    assert info.value.fatal and "no-such/model" in str(info.value)
    assert tinker_server.base_model in str(info.value)  # what the service does serve
    with pytest.raises(InvalidRequestError, match="not served"):
        await unknown.complete(unknown.request(problem))
    await unknown.aclose()


@pytest.mark.slow
async def test_teacher_and_evaluator_share_a_weights_slot_on_tinker_api(
    tinker_server: Any, tokenizer: ChatTokenizer
) -> None:
    service = tinker.ServiceClient(base_url=tinker_server.base_url, api_key=tinker_server.api_key)

    def save() -> str:
        trainer = service.create_lora_training_client(
            base_model=tinker_server.base_model, rank=4
        ).result()
        return str(trainer.save_weights_for_sampler("teacher-slot").result().path)

    path = await anyio.to_thread.run_sync(save)
    if "/sampler_weights/" not in path:
        # SkyRL answers tinker://<model>/<name>; it serves the .../sampler_weights/<name> form too.
        model_id, _, name = path.removeprefix("tinker://").partition("/")
        path = f"tinker://{model_id}/sampler_weights/{name}"
    limit = LiveSamplerLimit(1)
    params = SamplingParams(max_tokens=8, temperature=0.0, top_k=1)
    t = TinkerTeacher(
        tinker_server.base_model,
        model_path=path,
        renderer=ChatRenderer(tokenizer),
        service_client=service,
        params=params,
        live_samplers=limit,
    )
    sampler = TinkerSampler(
        path,
        base_model=tinker_server.base_model,
        renderer=ChatRenderer(tokenizer),
        service_client=service,
        live_samplers=limit,
    )
    request = t.request(math_problems(1)[0])
    with anyio.fail_after(120):  # one slot for both: neither waits for the other
        async with sampler:
            taught = await t.complete(request)
            sampled = await sampler.sample(request.messages, params)
            assert limit.in_use == 1
    await t.aclose()
    assert limit.in_use == 0
    assert (taught.reasoning, taught.answer) == split_completion(sampled.text)
    assert taught.usage.completion_tokens == sampled.completion_tokens <= 8
