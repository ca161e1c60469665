"""TinkerTrainer end to end with the real tinker SDK against a Tinker-compatible server on
127.0.0.1 (SkyRL's Tinker API, JAX backend, CPU; see tests/servers/tinker_server.py).

In CI (CI=true) a server that cannot start fails the tests; elsewhere they skip with the reason
when the server venv has not been made (bash tests/servers/setup_tinker_server.sh).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from tests.servers.tinker_server import SETUP_SCRIPT, TinkerServer, venv_ready
from tracedistill.chat import ChatExample, ChatRenderer, ChatTokenizer
from tracedistill.errors import ModelNotAvailableError, TrainingError
from tracedistill.training.base import StepMetrics, TrainConfig
from tracedistill.training.tinker import TinkerTrainer, to_datum

from .conftest import arithmetic


def test_datum_layout() -> None:
    ex = ChatExample(id="a", tokens=[5, 6, 7, 8], loss_start=2)
    datum = to_datum(ex)
    assert datum.model_input.to_ints() == [5, 6, 7]
    assert list(datum.loss_fn_inputs["target_tokens"].to_numpy()) == [6, 7, 8]
    assert list(datum.loss_fn_inputs["weights"].to_numpy()) == [0.0, 1.0, 1.0]


_UNREACHABLE = """
import anyio, time
from tracedistill.errors import TrainingError
from tracedistill.training.base import TrainConfig
from tracedistill.training.tinker import TinkerTrainer
from tracedistill.records import Message
trainer = TinkerTrainer(base_url="http://127.0.0.1:9", api_key="tml-x", connect_timeout=3.0)
assert "tml-x" not in repr(trainer)
data = [(f"c{i}", [Message("user", "q"), Message("assistant", "a")]) for i in range(4)]
cfg = TrainConfig(base_model="m", batch_size=2, max_steps=1)
async def main():
    started = time.monotonic()
    try:
        await trainer.train(data, cfg, "RUN_DIR")
    except TrainingError as exc:
        print("ERROR", round(time.monotonic() - started), exc, flush=True)
anyio.run(main)
"""


@pytest.mark.anyio
async def test_unreachable_service_is_bounded_and_clear(tmp_path: Path) -> None:
    # In a child process: the SDK keeps retrying an unreachable URL on its shared loop thread
    # for minutes after we stop waiting, which would stall later SDK calls in this process.
    script = _UNREACHABLE.replace("RUN_DIR", str(tmp_path))
    async with await anyio.open_process([sys.executable, "-c", script]) as proc:
        assert proc.stdout is not None
        received = b""
        with anyio.fail_after(60):
            async for chunk in proc.stdout:
                received += chunk
                if b"\n" in received:
                    break
        proc.kill()
    text = received.decode()
    assert text.startswith("ERROR"), text
    assert "127.0.0.1:9" in text
    assert int(text.split()[1]) < 20  # bounded by connect_timeout, not the SDK's retries


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_dense: Path) -> Iterator[TinkerServer]:
    if not venv_ready():
        reason = f"Tinker-compatible server venv missing: run bash {SETUP_SCRIPT}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    srv = TinkerServer(tiny_dense, tmp_path_factory.mktemp("tinker-server"), max_lora_adapters=8)
    try:
        srv.start()
    except Exception as exc:
        pytest.fail(f"the Tinker-compatible server did not start: {exc}")
    yield srv
    srv.stop()


def _trainer(server: TinkerServer, **kw: Any) -> TinkerTrainer:
    return TinkerTrainer(
        base_url=server.base_url, api_key=server.api_key, connect_timeout=120, **kw
    )


def _config(server: TinkerServer, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "base_model": server.base_model,
        "lora_rank": 8,
        "batch_size": 4,
        "learning_rate": 1e-2,
        "lr_schedule": "cosine",
        "max_length": 64,
        "epochs": None,
        "max_steps": 6,
        "checkpoint_every": 3,
        "seed": 3,
    }
    base.update(kw)
    return TrainConfig(**base)


class _Crash(Exception):
    pass


@pytest.mark.anyio
@pytest.mark.slow
async def test_train_checkpoint_resume_and_sample(
    server: TinkerServer, tmp_path: Path, tokenizer: ChatTokenizer
) -> None:
    trainer = _trainer(server)
    assert server.base_model in await trainer.served_models()
    with pytest.raises(ModelNotAvailableError, match="it serves:.*" + Path(server.base_model).name):
        await trainer.train(
            arithmetic(8), _config(server, base_model="Qwen/Retired"), tmp_path / "x"
        )

    data = arithmetic(8)
    cfg = _config(server)
    full = await _trainer(server).train(data, cfg, tmp_path / "full")
    assert [m.step for m in full.metrics] == [1, 2, 3, 4, 5, 6]
    assert [c.step for c in full.checkpoints] == [3, 6]
    assert full.metrics[-1].nll < full.metrics[0].nll
    for ckpt in full.checkpoints:
        assert ckpt.sampler is not None and ckpt.sampler.path.startswith("tinker://")
        assert ckpt.state is not None and ckpt.state.path.startswith("tinker://")
        assert ckpt.sampler.path != ckpt.state.path

    # Interrupted after step 4 (its checkpoint is step 3), then resumed from the run directory.
    def crash(m: StepMetrics) -> None:
        if m.step == 4:
            raise _Crash

    with pytest.raises(_Crash):
        await _trainer(server).train(data, cfg, tmp_path / "resumed", on_step=crash)
    resumed = await _trainer(server).train(data, cfg, tmp_path / "resumed")
    assert resumed.resumed_from == 3
    assert [c.step for c in resumed.checkpoints] == [3, 6]
    assert [m.step for m in resumed.metrics] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(full.metrics, resumed.metrics, strict=True):
        # Same batches, same state restored with its optimizer: the same losses.
        assert b.nll == pytest.approx(a.nll, rel=2e-3, abs=2e-3)

    # Sample greedily from the saved sampler weights with the real SDK.
    import tinker
    from tinker import types

    sampler = full.checkpoints[-1].sampler
    assert sampler is not None
    renderer = ChatRenderer(tokenizer)
    prompt = renderer.generation_prompt([data[0][1][0]])

    def sample() -> list[int]:
        service = tinker.ServiceClient(base_url=server.base_url, api_key=server.api_key)
        client = service.create_sampling_client(model_path=sampler.path).result(timeout=120)
        result = client.sample(
            prompt=types.ModelInput.from_ints(list(prompt.tokens)),
            num_samples=1,
            sampling_params=types.SamplingParams(
                max_tokens=8, temperature=0.0, top_k=1, stop=list(prompt.stop_token_ids)
            ),
        ).result(timeout=120)
        return [int(t) for t in result.sequences[0].tokens]

    with anyio.fail_after(240):
        tokens = await anyio.to_thread.run_sync(sample)
    assert 0 < len(tokens) <= 8
    assert all(0 <= t < tokenizer.vocab_size for t in tokens)


class _FlakyTrainer(TinkerTrainer):
    """Fails one request, as a service error would, to exercise the poisoned-client recovery."""

    def __init__(self, fail_at_calls: set[int], **kw: Any) -> None:
        super().__init__(**kw)
        self.fail_at_calls = fail_at_calls
        self.calls = 0

    def _submit(
        self,
        client: Any,
        config: TrainConfig,
        batch: list[ChatExample],
        lr: float,
        save: str | None,
    ) -> Any:
        self.calls += 1
        fwd, opt, saves = super()._submit(client, config, batch, lr, save)
        if self.calls in self.fail_at_calls:

            class _Failed:
                def result(self, timeout: float | None = None) -> Any:
                    raise RuntimeError("simulated request failure")

            return _Failed(), opt, saves
        return fwd, opt, saves


@pytest.mark.anyio
@pytest.mark.slow
async def test_poisoned_client_recovers_from_last_state(
    server: TinkerServer, tmp_path: Path
) -> None:
    cfg = _config(server, lr_schedule="linear")
    trainer = _FlakyTrainer(
        {5}, base_url=server.base_url, api_key=server.api_key, connect_timeout=120
    )
    run = await trainer.train(arithmetic(8), cfg, tmp_path)
    # Step 5 failed; steps 4-6 were trained again on a client restored from step 3's state.
    assert trainer.calls == 6 + 3
    assert [c.step for c in run.checkpoints] == [3, 6]
    assert [m.step for m in run.metrics] == [1, 2, 3, 4, 5, 6]

    # A service that keeps failing ends in a clear error after max_recoveries, not a loop.
    failing = _FlakyTrainer(
        {1, 3},  # pipelined: call 2 is submitted before call 1 fails, then discarded
        base_url=server.base_url,
        api_key=server.api_key,
        connect_timeout=120,
        max_recoveries=1,
    )
    with pytest.raises(TrainingError, match="kept failing after 1 recoveries"):
        await failing.train(arithmetic(8), cfg, tmp_path / "failing")
