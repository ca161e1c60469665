"""TinkerTeacher against a fake of the SDK's sampling client (fast) and, when its venv exists,
end to end against the Tinker-compatible loopback server (tests/servers/tinker_server.py; slow).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tinker

from tracedistill import JsonlTraceStore, ReasoningKind, SamplingParams
from tracedistill.chat import ChatFormat, ChatRenderer, ChatTokenizer, qwen3_offline_tokenizer
from tracedistill.errors import AuthenticationError, ConfigurationError
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
    def __init__(self, client: FakeSamplingClient, error: BaseException | None = None) -> None:
        self.client, self.error = client, error
        self.created: list[dict[str, Any]] = []

    def create_sampling_client(self, **kw: Any) -> _Future:
        self.created.append(kw)
        return _Future(self.client, self.error)


@pytest.fixture(scope="module")
def tokenizer() -> ChatTokenizer:
    return qwen3_offline_tokenizer()


def teacher(tokenizer: ChatTokenizer, service: FakeService, **kw: Any) -> TinkerTeacher:
    return TinkerTeacher(
        "Qwen/Qwen3-8B",
        renderer=ChatRenderer(tokenizer, ChatFormat.QWEN3),
        service_client=service,
        params=SamplingParams(max_tokens=64, temperature=0.7),
        retry=FAST_RETRY,
        **kw,
    )


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
        first = store.get(t.request_key(problems[0]))
        assert first is not None and first.reasoning == "2 and 2" and first.answer == "\\boxed{4}"
        assert first.reasoning_kind is ReasoningKind.RAW and first.attempts == 2
        assert first.usage.completion_tokens == len(done)
        second = store.get(t.request_key(problems[1]))
        assert second is not None and second.truncated and second.reasoning == "long"
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
