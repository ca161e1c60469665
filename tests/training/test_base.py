from __future__ import annotations

import itertools
import math
from pathlib import Path

import orjson
import pytest

from tracedistill.chat import ChatFormat, LengthPolicy, LengthReport
from tracedistill.errors import CheckpointError, ConfigurationError
from tracedistill.training.base import (
    Checkpoint,
    DataReport,
    LRSchedule,
    SamplerWeights,
    StepMetrics,
    TrainConfig,
    TrainingDirectory,
    TrainingState,
    learning_rate_at,
)


def test_config_defaults_are_the_study_recipe_but_model_is_required() -> None:
    with pytest.raises(TypeError):
        TrainConfig()  # type: ignore[call-arg]
    cfg = TrainConfig(base_model="some/model")
    assert (cfg.lora_rank, cfg.batch_size, cfg.max_length, cfg.checkpoint_every) == (
        32,
        50,
        4096,
        100,
    )
    assert cfg.lr_schedule is LRSchedule.COSINE
    assert (cfg.adam_beta1, cfg.adam_beta2) == (0.9, 0.95)
    assert cfg.total_steps(25_000) == 500
    assert TrainConfig.from_dict(orjson.loads(orjson.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("base_model", "  ", "base_model"),
        ("lora_rank", 0, "lora_rank"),
        ("batch_size", -1, "batch_size"),
        ("learning_rate", 0.0, "learning_rate"),
        ("learning_rate", math.nan, "learning_rate"),
        ("adam_beta2", 1.0, "adam_beta2"),
        ("lr_schedule", "exponential", "cosine"),
        ("length_policy", "cut", "drop"),
        ("chat_format", "chatml", "qwen3"),
        ("lr_floor", 1.5, "lr_floor"),
        ("checkpoint_every", 0, "checkpoint_every"),
        ("lora_rank", True, "lora_rank"),
    ],
)
def test_config_validation_names_the_field(field: str, value: object, match: str) -> None:
    kwargs: dict[str, object] = {"base_model": "m", field: value}
    with pytest.raises(ConfigurationError, match=match):
        TrainConfig(**kwargs)  # type: ignore[arg-type]


def test_config_needs_epochs_or_steps_and_a_target() -> None:
    with pytest.raises(ConfigurationError, match="epochs or max_steps"):
        TrainConfig(base_model="m", epochs=None)
    with pytest.raises(ConfigurationError, match="trains no module"):
        TrainConfig(
            base_model="m",
            train_attention=False,
            train_mlp=False,
            train_experts=False,
            train_unembed=False,
        )
    with pytest.raises(ConfigurationError, match="one batch"):
        TrainConfig(base_model="m", batch_size=8).total_steps(7)
    assert TrainConfig(base_model="m", batch_size=4, epochs=3).total_steps(10) == 6
    assert TrainConfig(base_model="m", batch_size=4, epochs=3, max_steps=5).total_steps(10) == 5
    assert TrainConfig(base_model="m", batch_size=4, epochs=None, max_steps=9).total_steps(4) == 9


def test_schedules() -> None:
    # The cookbook's cosine: 0.5 * (1 + cos(pi * step / total)).
    for step in (0, 10, 250, 499):
        expected = 2e-4 * 0.5 * (1 + math.cos(math.pi * step / 500))
        assert learning_rate_at(step, 500, peak=2e-4) == pytest.approx(expected)
    assert learning_rate_at(50, 100, peak=1.0, schedule="linear") == pytest.approx(0.5)
    assert learning_rate_at(99, 100, peak=1.0, schedule="constant") == 1.0
    # Warm-up rises linearly, then the decay starts from the peak and ends at the floor.
    lrs = [learning_rate_at(s, 20, peak=1.0, warmup_steps=4, floor=0.1) for s in range(21)]
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4] == pytest.approx(1.0)
    assert lrs[20] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(lrs[4:]))
    cfg = TrainConfig(base_model="m", learning_rate=1e-3, lr_schedule="linear", warmup_steps=2)
    assert cfg.learning_rate_at(0, 10) == pytest.approx(5e-4)


def test_path_kinds_are_kept_apart() -> None:
    sampler = SamplerWeights("tinker://run-1/sampler_weights/step_000100")
    state = TrainingState("tinker://run-1/weights/step_000100")
    assert sampler.is_tinker
    assert state.is_tinker
    with pytest.raises(CheckpointError, match="sampler weights"):
        SamplerWeights("tinker://run-1/weights/step_000100")
    with pytest.raises(CheckpointError, match="training state"):
        TrainingState("tinker://run-1/sampler_weights/step_000100")
    local = SamplerWeights("/runs/a/checkpoints/step_000010/adapter")
    assert not local.is_tinker
    ckpt = Checkpoint(step=100, samples_seen=5000, sampler=sampler.path, state=state)
    assert ckpt.sampler == sampler
    assert ckpt.state == state
    assert Checkpoint.from_dict(orjson.loads(orjson.dumps(ckpt.to_dict()))) == ckpt


def test_run_directory_round_trip_and_torn_line(tmp_path: Path) -> None:
    cfg = TrainConfig(base_model="m", batch_size=2)
    rd = TrainingDirectory(tmp_path / "run")
    rd.prepare(cfg, "local")
    rd.prepare(cfg, "local")  # same config: fine (resume)
    with pytest.raises(CheckpointError, match="learning_rate"):
        rd.prepare(TrainConfig(base_model="m", batch_size=2, learning_rate=1e-3), "local")
    for step in (1, 2, 2):
        rd.add_metrics(
            StepMetrics(
                step=step,
                epoch=0,
                samples_seen=2 * step,
                nll=1.0 / step,
                tokens=10,
                loss_tokens=5,
                learning_rate=1e-4,
                seconds=0.1,
            )
        )
    rd.add_checkpoint(Checkpoint(step=2, samples_seen=4, sampler="/a", state="/b"))
    rd.add_checkpoint(Checkpoint(step=3, samples_seen=6, sampler="/c", state=None))
    with (rd.path / "checkpoints.jsonl").open("ab") as f:
        f.write(b'{"step": 4, "sampl')  # a crash mid-write
    assert [m.step for m in rd.metrics()] == [1, 2]
    assert [c.step for c in rd.checkpoints()] == [2, 3]
    last = rd.last_resumable()
    assert last is not None
    assert last.step == 2
    report = DataReport(
        pool_size=3,
        selected=2,
        length=LengthReport(
            max_length=8, policy=LengthPolicy.DROP, total=3, kept=2, dropped=("x",)
        ),
        tokenizer="t",
        chat_format=ChatFormat.QWEN3,
        seconds=0.5,
    )
    rd.write_data_report(report)
    assert DataReport.from_dict(orjson.loads((rd.path / "data.json").read_bytes())) == report


def test_torn_checkpoint_line_hides_no_later_checkpoint(tmp_path: Path) -> None:
    rd = TrainingDirectory(tmp_path / "run")
    rd.add_checkpoint(Checkpoint(step=2, samples_seen=4, sampler="/a", state="/b"))
    with (rd.path / "checkpoints.jsonl").open("ab") as f:
        f.write(b'{"step": 4, "sampl')  # a crash mid-write
    writer = TrainingDirectory(rd.path)  # a resumed run appends after the crash
    writer.add_checkpoint(Checkpoint(step=4, samples_seen=8, sampler="/c", state="/d"))
    writer.add_checkpoint(Checkpoint(step=6, samples_seen=12, sampler="/e", state="/f"))
    writer.close()
    assert [c.step for c in TrainingDirectory(rd.path).checkpoints()] == [2, 4, 6]
    last = TrainingDirectory(rd.path).last_resumable()
    assert last is not None and last.step == 6
    # A file an older version wrote, with the next record glued onto the torn line, still
    # shows every checkpoint.
    glued = rd.path / "legacy" / "checkpoints.jsonl"
    glued.parent.mkdir()
    lines = (rd.path / "checkpoints.jsonl").read_bytes().splitlines(keepends=True)
    glued.write_bytes(lines[0] + b'{"step": 4, "sampl' + lines[1] + lines[2])
    assert [c.step for c in TrainingDirectory(glued.parent).checkpoints()] == [2, 4, 6]
