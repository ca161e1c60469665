"""TinkerSampler: request building and error handling against a fake of the SDK's sampling
client (fast), and end to end against the Tinker-compatible loopback server when its venv exists
(tests/servers/tinker_server.py; slow)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
import tinker

from tracedistill.chat import ChatFormat, ChatRenderer, ChatTokenizer
from tracedistill.clients.retry import RetryPolicy
from tracedistill.clients.tinker import LiveSamplerLimit, TinkerSampler
from tracedistill.errors import CheckpointError, ConfigurationError
from tracedistill.evaluation import SamplerError, greedy
from tracedistill.evaluation.samplers import make_sampler
from tracedistill.records import FinishReason, Message
from tracedistill.training.base import Checkpoint


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
    """Answers with scripted token sequences and records every request."""

    def __init__(self, replies: list[tuple[list[int], str]], errors: list[BaseException]) -> None:
        self.replies, self.errors = replies, errors
        self.requests: list[dict[str, Any]] = []

    def sample(self, *, prompt: Any, num_samples: int, sampling_params: Any) -> _Future:
        self.requests.append(
            {"prompt": prompt.to_ints(), "n": num_samples, "params": sampling_params}
        )
        if self.errors:
            return _Future(error=self.errors.pop(0))
        tokens, stop = self.replies.pop(0)
        seq = tinker.types.SampledSequence(
            stop_reason=stop, sequence_id="s", tokens_np=np.asarray(tokens, dtype=np.int32)
        )
        return _Future(tinker.types.SampleResponse(sequences=[seq]))


class FakeService:
    def __init__(
        self, client: FakeSamplingClient, create_error: BaseException | None = None
    ) -> None:
        self.client, self.create_error = client, create_error
        self.created: list[dict[str, Any]] = []

    def create_sampling_client(self, **kw: Any) -> _Future:
        self.created.append(kw)
        return _Future(self.client, self.create_error)


PATH = "tinker://run-1/sampler_weights/step-100"


def _sampler(tokenizer: ChatTokenizer, service: FakeService, **kw: Any) -> TinkerSampler:
    return TinkerSampler(
        PATH,
        base_model="Qwen/Qwen3-8B",
        renderer=ChatRenderer(tokenizer, ChatFormat.QWEN3),
        service_client=service,
        retry=RetryPolicy(base_delay=0.01, max_delay=0.02),
        live_samplers=LiveSamplerLimit(2),
        **kw,
    )


async def test_request_is_greedy_and_rendered_like_training(tokenizer: ChatTokenizer) -> None:
    renderer = ChatRenderer(tokenizer, ChatFormat.QWEN3)
    answer = "<think>\nsmall\n</think>\n\n\\boxed{4}"
    ids = [*tokenizer.encode(answer), renderer.stop_token_id]
    client = FakeSamplingClient([(ids, "stop"), (tokenizer.encode("cut"), "length")], [])
    service = FakeService(client)
    messages = [Message("user", "What is 2+2?")]
    async with _sampler(tokenizer, service) as sampler:
        done = await sampler.sample(messages, greedy(128))
        cut = await sampler.sample(messages, greedy(3))
    assert service.created == [{"model_path": PATH, "base_model": None}]
    req = client.requests[0]
    assert req["prompt"] == list(renderer.generation_prompt(messages).tokens)
    params = req["params"]
    assert (params.temperature, params.top_k, params.max_tokens) == (0.0, 1, 128)
    assert params.stop == [renderer.stop_token_id]
    assert done.text == answer and done.finish_reason is FinishReason.STOP
    assert done.completion_tokens == len(ids) and done.prompt_tokens == len(req["prompt"])
    assert cut.finish_reason is FinishReason.LENGTH and cut.text == "cut"


async def test_completion_prompt_and_stop_strings(tokenizer: ChatTokenizer) -> None:
    client = FakeSamplingClient(
        [(tokenizer.encode("def f():\n    return 1\nassert f()"), "stop")], []
    )
    async with _sampler(tokenizer, FakeService(client)) as sampler:
        out = await sampler.sample('"""\nWrite f.\n"""\n', greedy(64, stop=["\nassert "]))
    assert client.requests[0]["prompt"] == tokenizer.encode('"""\nWrite f.\n"""\n')
    assert "\nassert " in client.requests[0]["params"].stop
    assert out.text == "def f():\n    return 1" and out.finish_reason is FinishReason.STOP


async def test_rate_limit_retried_then_fatal_errors(tokenizer: ChatTokenizer) -> None:
    ids = [*tokenizer.encode("ok"), 151645]
    client = FakeSamplingClient([(ids, "stop")], [_Status(429, "too many concurrent LoRA")])
    async with _sampler(tokenizer, FakeService(client)) as sampler:
        out = await sampler.sample([Message("user", "hi")], greedy(8))
        assert out.text == "ok" and len(client.requests) == 2
        client.errors.append(_Status(400, "bad prompt"))
        with pytest.raises(SamplerError) as info:
            await sampler.sample([Message("user", "hi")], greedy(8))
        assert not info.value.fatal
    bad = FakeService(client, create_error=_Status(401, "invalid key"))
    with pytest.raises(SamplerError, match="401") as info:
        await _sampler(tokenizer, bad).start()
    assert info.value.fatal


class FlakyService(FakeService):
    """Fails the first creations with ``errors``, then creates the client."""

    def __init__(self, client: FakeSamplingClient, errors: list[BaseException]) -> None:
        super().__init__(client)
        self.errors = errors

    def create_sampling_client(self, **kw: Any) -> _Future:
        self.created.append(kw)
        return _Future(error=self.errors.pop(0)) if self.errors else _Future(self.client)


async def test_evaluation_retries_a_transient_start_and_stops_on_a_permanent_one(
    tokenizer: ChatTokenizer,
) -> None:
    ids = [*tokenizer.encode("ok"), 151645]
    flaky = FlakyService(FakeSamplingClient([(ids, "stop")], []), [_Status(503, "warming up")])
    sampler = _sampler(tokenizer, flaky)
    out = await sampler.sample([Message("user", "hi")], greedy(8))  # retried, not fatal
    assert out.text == "ok" and len(flaky.created) == 2
    await sampler.aclose()
    gone = FlakyService(FakeSamplingClient([], []), [_Status(404, "no such weights")] * 3)
    sampler = _sampler(tokenizer, gone)
    for _ in range(2):
        with pytest.raises(SamplerError, match="no such weights") as info:
            await sampler.sample([Message("user", "hi")], greedy(8))
        assert info.value.fatal
    assert len(gone.created) == 1  # kept: the service is not asked again
    await sampler.aclose()


def test_sdk_errors_are_classified_by_the_status_they_were_raised_from() -> None:
    import httpx

    from tracedistill.clients.tinker import tinker_error
    from tracedistill.errors import InvalidRequestError, RateLimitError

    request = httpx.Request("POST", "http://tinker.test/api/v1/retrieve_future")

    def api_error(status: int) -> tinker.APIStatusError:
        response = httpx.Response(status, request=request)
        return tinker.APIStatusError(f"Error code: {status}", response=response, body=None)

    # What the SDK's futures raise once their own retries are spent: a ValueError from the
    # API error ("Engine is configured for X but request specified Y" on an unknown model).
    try:
        try:
            raise api_error(400)
        except tinker.APIStatusError as exc:
            raise ValueError("Error retrieving result: ... (status 400)") from exc
    except ValueError as wrapped:
        error = tinker_error(wrapped, "sample")
    assert isinstance(error, InvalidRequestError) and error.status == 400
    assert isinstance(tinker_error(api_error(429), "sample"), RateLimitError)
    assert tinker_error(ValueError("not an API error"), "sample") is None


def test_training_state_path_is_refused_with_the_fix() -> None:
    with pytest.raises(CheckpointError, match="sampler_weights"):
        TinkerSampler("tinker://run-1/weights/step-100")
    with pytest.raises(CheckpointError, match="sampler_weights"):
        make_sampler("tinker://run-1/weights/step-100")
    with pytest.raises(ConfigurationError):
        TinkerSampler()
    ckpt = Checkpoint(
        step=100, samples_seen=5000, sampler=PATH, state=None, base_model="Qwen/Qwen3-30B-A3B-Base"
    )
    sampler = make_sampler(ckpt)
    assert isinstance(sampler, TinkerSampler)
    assert sampler.model == PATH and sampler.base_model == "Qwen/Qwen3-30B-A3B-Base"


async def test_live_sampler_bound(tokenizer: ChatTokenizer) -> None:
    limit = LiveSamplerLimit(2)
    ids = [*tokenizer.encode("x"), 151645]
    samplers = [
        TinkerSampler(
            f"tinker://run-{i}/sampler_weights/step-100",  # one slot per weights path
            renderer=ChatRenderer(tokenizer),
            live_samplers=limit,
            service_client=FakeService(FakeSamplingClient([(ids, "stop")] * 4, [])),
        )
        for i in range(3)
    ]
    await samplers[0].start()
    await samplers[1].start()
    assert limit.in_use == 2
    with anyio.move_on_after(0.3) as scope:
        await samplers[2].start()
    assert scope.cancel_called and limit.in_use == 2  # the third waits for a slot
    await samplers[0].aclose()
    await samplers[2].start()
    assert limit.peak == 2
    for s in samplers:
        await s.aclose()
    assert limit.in_use == 0


# --- end to end against the Tinker-compatible loopback server --------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Any]:
    from tests.servers.tinker_server import SETUP_SCRIPT, TinkerServer, venv_ready

    if not venv_ready():
        reason = f"Tinker-compatible server venv missing: run bash {SETUP_SCRIPT}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    srv = TinkerServer(tiny_model, tmp_path_factory.mktemp("tinker-eval"), max_lora_adapters=4)
    srv.start()
    yield srv
    srv.stop()


@pytest.mark.slow
async def test_end_to_end_base_and_sampler_weights(
    server: Any, tiny_model: Path, tokenizer: ChatTokenizer, tmp_path: Path
) -> None:
    service = tinker.ServiceClient(base_url=server.base_url, api_key=server.api_key)
    renderer = ChatRenderer(tokenizer, ChatFormat.QWEN3)
    prompts = [[Message("user", f"What is {i} plus {i}?")] for i in range(3)]
    async with TinkerSampler(
        base_model=str(tiny_model), renderer=renderer, service_client=service
    ) as base:
        first = [await base.sample(p, greedy(12)) for p in prompts]
        again = [await base.sample(p, greedy(12)) for p in prompts]
    assert [c.text for c in first] == [c.text for c in again]  # greedy is deterministic
    assert all(c.completion_tokens and c.completion_tokens <= 12 for c in first)

    # A fresh LoRA adapter (B = 0) saved for sampling must sample like the base model.
    def save() -> str:
        trainer = service.create_lora_training_client(base_model=str(tiny_model), rank=4).result()
        return str(trainer.save_weights_for_sampler("eval-test").result().path)

    path = await anyio.to_thread.run_sync(save)
    if "/sampler_weights/" not in path:
        # SkyRL answers tinker://<model>/<name>; it serves the .../sampler_weights/<name> form too.
        model_id, _, name = path.removeprefix("tinker://").partition("/")
        path = f"tinker://{model_id}/sampler_weights/{name}"
    async with TinkerSampler(
        path, base_model=str(tiny_model), renderer=renderer, service_client=service
    ) as tuned:
        lora = [await tuned.sample(p, greedy(12)) for p in prompts]
    assert [c.text for c in lora] == [c.text for c in first]
