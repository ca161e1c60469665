from __future__ import annotations

import sys
from pathlib import Path

import anyio
import orjson
import pytest

from tracedistill.chat import ChatRenderer, ChatTokenizer
from tracedistill.errors import ModelNotAvailableError
from tracedistill.training.base import StepMetrics, TrainConfig
from tracedistill.training.local import (
    LocalTrainer,
    build_tiny_model,
    greedy_generate,
    load_for_sampling,
    warm_up_full,
)

from .conftest import arithmetic

pytest.importorskip("peft")


def _config(model: Path, **kw: object) -> TrainConfig:
    base: dict[str, object] = {
        "base_model": str(model),
        "lora_rank": 8,
        "batch_size": 4,
        "learning_rate": 1e-2,
        "lr_schedule": "constant",
        "max_length": 128,
        "epochs": None,
        "max_steps": 12,
        "checkpoint_every": 6,
        "seed": 1,
    }
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


@pytest.mark.anyio
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dense", "moe"])
async def test_loss_falls_on_a_memorizable_set(
    kind: str, tiny_dense: Path, tiny_moe: Path, tmp_path: Path
) -> None:
    model = tiny_dense if kind == "dense" else tiny_moe
    cfg = _config(model, max_steps=15, checkpoint_every=5)
    seen: list[StepMetrics] = []
    run = await LocalTrainer(device="cpu").train(arithmetic(8), cfg, tmp_path, on_step=seen.append)
    nll = [m.nll for m in run.metrics]
    assert len(nll) == 15
    assert [m.step for m in seen] == list(range(1, 16))
    assert nll[-1] < 0.6 * nll[0]
    assert min(nll[-3:]) < min(nll[:3])
    assert [c.step for c in run.checkpoints] == [5, 10, 15]
    assert run.checkpoints[-1].final
    assert all(m.loss_tokens > 0 and m.tokens > m.loss_tokens for m in run.metrics)
    # Everything reached the run directory as it happened.
    lines = (tmp_path / "metrics.jsonl").read_bytes().splitlines()
    assert len(lines) == 15
    assert (tmp_path / "run.json").is_file()
    adapter = Path(run.checkpoints[-1].sampler.path)  # type: ignore[union-attr]
    adapter_cfg = orjson.loads((adapter / "adapter_config.json").read_bytes())
    if kind == "moe":
        # transformers 5 stores experts as 3-D parameters: PEFT reaches them as parameters.
        assert adapter_cfg["target_parameters"]
        from safetensors import safe_open

        with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as f:
            assert any("experts" in k for k in f.keys())  # noqa: SIM118


_GEN_SCRIPT = """
import sys, json
from tracedistill.chat import ChatRenderer, load_tokenizer
from tracedistill.records import Message
from tracedistill.training.local import greedy_generate, load_for_sampling
model = load_for_sampling(sys.argv[1], device="cpu")
renderer = ChatRenderer(load_tokenizer(sys.argv[2]))
print(json.dumps(greedy_generate(model, renderer, [Message("user", sys.argv[3])],
                                 max_new_tokens=12)))
"""


@pytest.mark.anyio
@pytest.mark.slow
async def test_reloaded_adapter_greedy_output_survives_restart(
    tiny_dense: Path, tmp_path: Path, tokenizer: ChatTokenizer
) -> None:
    cfg = _config(tiny_dense, max_steps=20, checkpoint_every=20, learning_rate=1e-2)
    data = arithmetic(4)
    run = await LocalTrainer(device="cpu").train(data, cfg, tmp_path)
    sampler = run.checkpoints[-1].sampler
    assert sampler is not None
    renderer = ChatRenderer(tokenizer)
    question = data[0][1][0].content

    def generate() -> list[int]:
        model = load_for_sampling(sampler, device="cpu")
        return greedy_generate(model, renderer, [data[0][1][0]], max_new_tokens=12)

    before = await anyio.to_thread.run_sync(generate)
    assert len(before) > 0
    proc = await anyio.run_process(
        [sys.executable, "-c", _GEN_SCRIPT, sampler.path, str(tiny_dense), question],
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    after = orjson.loads(proc.stdout.strip().splitlines()[-1])
    assert after == before
    # The adapter matters: the base model alone answers differently.
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(tiny_dense))
    plain = greedy_generate(base, renderer, [data[0][1][0]], max_new_tokens=12)
    assert plain != before


class _Crash(Exception):
    pass


@pytest.mark.anyio
@pytest.mark.slow
async def test_interrupted_run_resumes_to_the_same_weights(
    tiny_dense: Path, tmp_path: Path
) -> None:
    cfg = _config(tiny_dense, max_steps=8, checkpoint_every=3, lr_schedule="cosine")
    data = arithmetic(10)
    full = await LocalTrainer(device="cpu").train(data, cfg, tmp_path / "full")

    def crash_after_4(m: StepMetrics) -> None:
        if m.step == 4:
            raise _Crash

    with pytest.raises(_Crash):
        await LocalTrainer(device="cpu").train(
            data, cfg, tmp_path / "resumed", on_step=crash_after_4
        )
    resumed = await LocalTrainer(device="cpu").train(data, cfg, tmp_path / "resumed")
    assert resumed.resumed_from == 3
    assert [c.step for c in resumed.checkpoints] == [3, 6, 8]
    assert [m.step for m in resumed.metrics] == list(range(1, 9))
    for a, b in zip(full.metrics, resumed.metrics, strict=True):
        assert a.nll == pytest.approx(b.nll, rel=1e-4)
        assert a.learning_rate == b.learning_rate
    from safetensors.torch import load_file

    wa = load_file(str(Path(full.checkpoints[-1].sampler.path) / "adapter_model.safetensors"))  # type: ignore[union-attr]
    wb = load_file(str(Path(resumed.checkpoints[-1].sampler.path) / "adapter_model.safetensors"))  # type: ignore[union-attr]
    assert wa.keys() == wb.keys()
    import torch

    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-4, atol=1e-6)
    # A finished run is not trained again.
    again = await LocalTrainer(device="cpu").train(data, cfg, tmp_path / "resumed")
    assert again.resumed_from == 8
    assert len(again.metrics) == 8


@pytest.mark.anyio
async def test_unknown_model_is_a_clear_error(tmp_path: Path) -> None:
    cfg = TrainConfig(base_model=str(tmp_path / "missing-model"), batch_size=2, max_steps=1)
    with pytest.raises(ModelNotAvailableError, match="missing-model"):
        await LocalTrainer(device="cpu", tokenizer="qwen3-offline").train(
            arithmetic(4), cfg, tmp_path / "run"
        )


@pytest.mark.anyio
async def test_event_loop_stays_responsive(tiny_dense: Path, tmp_path: Path) -> None:
    cfg = _config(tiny_dense, max_steps=3, checkpoint_every=3)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        with anyio.fail_after(120):
            run = await LocalTrainer(device="cpu").train(arithmetic(4), cfg, tmp_path)
        tg.cancel_scope.cancel()
    elapsed = sum(m.seconds for m in run.metrics)
    # The loop kept ticking while torch worked (a blocked loop would tick ~0 times).
    assert ticks > 0.3 * elapsed / 0.01


def test_full_warm_up_trains_and_saves_in_place(tmp_path: Path, tokenizer: ChatTokenizer) -> None:
    model_dir = build_tiny_model(tmp_path / "m", tokenizer=tokenizer, hidden_size=32)
    before = (model_dir / "model.safetensors").read_bytes()
    renderer = ChatRenderer(tokenizer)
    texts = [renderer.render_text(msgs) for _, msgs in arithmetic(6)]
    losses = warm_up_full(model_dir, texts, tokenizer=tokenizer, steps=8, batch_size=4)
    assert len(losses) == 8
    assert losses[-1] < losses[0]
    assert (model_dir / "model.safetensors").read_bytes() != before
