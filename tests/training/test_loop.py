"""Trainer.train's loop against a small in-process backend that implements only the narrow
interface (open, start, step, close): resume, torn checkpoint lines, lookahead, recovery.

The backend's "model" is one number updated by every step from the step's batch and learning
rate, saved to and restored from a JSON file, so a resumed run must reach exactly the same value.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import anyio.to_thread
import orjson
import pytest

from tracedistill.errors import TrainingError
from tracedistill.training import (
    PendingStep,
    RecoverableTrainingError,
    SamplerWeights,
    SavedWeights,
    StepMetrics,
    StepOutput,
    StepPlan,
    TrainConfig,
    Trainer,
    TrainingDirectory,
    TrainingResult,
    TrainingSession,
    TrainingState,
)
from tracedistill.training.base import SessionStatus
from tracedistill.training.data import batch_indices

from .conftest import arithmetic


class _Step(PendingStep):
    def __init__(self, session: _Session, plan: StepPlan, nll: float, saved: SavedWeights | None):
        self.session = session
        self.plan = plan
        self.nll = nll
        self._saved = saved

    async def output(self) -> StepOutput:
        self.session.log.append(("output", self.plan.number))
        if self.plan.number in self.session.trainer.fail_outputs:
            self.session.trainer.fail_outputs.discard(self.plan.number)
            raise RecoverableTrainingError(f"step {self.plan.number} failed")
        return StepOutput(nll=self.nll, loss_tokens=sum(e.num_loss_tokens for e in self.plan.batch))

    async def saved(self) -> SavedWeights:
        assert self._saved is not None
        return self._saved


class _Session(TrainingSession):
    def __init__(self, trainer: _Backend, directory: Path) -> None:
        self.trainer = trainer
        self.directory = directory
        self.lookahead = trainer.lookahead
        self.weight = 0.0
        self.log: list[tuple[str, Any]] = trainer.log

    async def start(self, state: TrainingState | None) -> None:
        self.log.append(("start", None if state is None else Path(state.path).name))
        self.weight = 0.0
        if state is not None:
            self.weight = orjson.loads((Path(state.path) / "state.json").read_bytes())["weight"]

    async def step(self, plan: StepPlan) -> PendingStep:
        self.log.append(("step", plan.number))
        ids = sum(int(e.tokens.sum()) for e in plan.batch) % 97
        self.weight = self.weight * 0.5 + plan.learning_rate * ids
        saved = None
        if plan.save_as is not None:
            where = self.directory / "checkpoints" / plan.save_as
            where.mkdir(parents=True, exist_ok=True)
            (where / "state.json").write_bytes(orjson.dumps({"weight": self.weight}))
            saved = SavedWeights(SamplerWeights(str(where / "adapter")), TrainingState(str(where)))
        return _Step(self, plan, 1.0 / (1.0 + self.weight), saved)

    async def close(self, status: SessionStatus) -> None:
        self.log.append(("close", status))


class _Backend(Trainer):
    backend = "fake"

    def __init__(self, tokenizer: Any, *, lookahead: int = 0, max_recoveries: int = 0) -> None:
        self._tokenizer = tokenizer
        self.lookahead = lookahead
        self.max_recoveries = max_recoveries
        self.fail_outputs: set[int] = set()
        self.log: list[tuple[str, Any]] = []

    async def open(self, config: TrainConfig, directory: Path) -> TrainingSession:
        return _Session(self, directory)


def _config(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "base_model": "fake",
        "batch_size": 2,
        "learning_rate": 0.1,
        "max_length": 64,
        "epochs": None,
        "max_steps": 8,
        "checkpoint_every": 3,
        "seed": 2,
    }
    base.update(kw)
    return TrainConfig(**base)


class _Crash(Exception):
    pass


@pytest.mark.anyio
async def test_loop_records_every_step_and_checkpoint(tmp_path: Path, tokenizer: Any) -> None:
    trainer = _Backend(tokenizer)
    seen: list[StepMetrics] = []
    result = await trainer.train(arithmetic(6), _config(), tmp_path, on_step=seen.append)
    assert isinstance(result, TrainingResult)
    assert [m.step for m in result.metrics] == list(range(1, 9))
    assert [m.step for m in seen] == list(range(1, 9))
    assert [c.step for c in result.checkpoints] == [3, 6, 8]
    assert [c.final for c in result.checkpoints] == [False, False, True]
    assert all(c.base_model == "fake" for c in result.checkpoints)
    assert result.metrics[0].samples_seen == 2 and result.metrics[-1].samples_seen == 16
    lrs = [m.learning_rate for m in result.metrics]
    assert lrs == [_config().learning_rate_at(i, 8) for i in range(8)]
    assert trainer.log[0] == ("start", None) and trainer.log[-1] == ("close", "success")
    assert (tmp_path / "run.json").is_file() and (tmp_path / "data.json").is_file()


@pytest.mark.anyio
@pytest.mark.parametrize("lookahead", [0, 1, 3])
async def test_lookahead_keeps_steps_in_flight(
    tmp_path: Path, tokenizer: Any, lookahead: int
) -> None:
    trainer = _Backend(tokenizer, lookahead=lookahead)
    result = await trainer.train(arithmetic(6), _config(max_steps=5), tmp_path)
    assert [m.step for m in result.metrics] == [1, 2, 3, 4, 5]
    events = [e for e in trainer.log if e[0] in ("step", "output")]
    # Step n+lookahead is submitted before step n's output is awaited, never later.
    for n in range(1, 6):
        submitted = events.index(("step", min(n + lookahead, 5)))
        assert submitted < events.index(("output", n))
        if n + lookahead + 1 <= 5:
            assert events.index(("output", n)) < events.index(("step", n + lookahead + 1))


@pytest.mark.anyio
async def test_resume_after_a_torn_checkpoint_line(tmp_path: Path, tokenizer: Any) -> None:
    data = arithmetic(6)
    full = await _Backend(tokenizer).train(data, _config(), tmp_path / "full")

    def crash(m: StepMetrics) -> None:
        if m.step == 4:
            raise _Crash

    run_dir = tmp_path / "resumed"
    first = _Backend(tokenizer)
    with pytest.raises(_Crash):
        await first.train(data, _config(), run_dir, on_step=crash)
    assert first.log[-1] == ("close", "errored")
    with (run_dir / "checkpoints.jsonl").open("ab") as f:
        f.write(b'{"step": 6, "samples_seen": 12, "sampl')  # power lost mid-write
    resumed = await _Backend(tokenizer).train(data, _config(), run_dir)
    assert resumed.resumed_from == 3
    # Every checkpoint saved after the torn line is visible to resume, evaluation and reports.
    assert [c.step for c in resumed.checkpoints] == [3, 6, 8]
    assert [c.step for c in TrainingDirectory(run_dir).checkpoints()] == [3, 6, 8]
    assert [m.step for m in resumed.metrics] == list(range(1, 9))
    for a, b in zip(full.metrics, resumed.metrics, strict=True):
        assert (a.nll, a.learning_rate) == (b.nll, b.learning_rate)
    assert (run_dir / "checkpoints.jsonl.torn").is_file()
    # A finished run is not trained again and opens nothing heavy.
    again_trainer = _Backend(tokenizer)
    again = await again_trainer.train(data, _config(), run_dir)
    assert again.resumed_from == 8 and len(again.metrics) == 8
    assert not any(e[0] == "start" for e in again_trainer.log)


@pytest.mark.anyio
async def test_recovery_restarts_from_the_last_state(tmp_path: Path, tokenizer: Any) -> None:
    data = arithmetic(6)
    full = await _Backend(tokenizer).train(data, _config(), tmp_path / "full")
    trainer = _Backend(tokenizer, lookahead=1, max_recoveries=2)
    trainer.fail_outputs = {5}
    result = await trainer.train(data, _config(), tmp_path / "flaky")
    starts = [e[1] for e in trainer.log if e[0] == "start"]
    assert starts == [None, "step_000003"]
    assert [c.step for c in result.checkpoints] == [3, 6, 8]
    assert [m.nll for m in result.metrics] == [m.nll for m in full.metrics]

    failing = _Backend(tokenizer, lookahead=1, max_recoveries=1)
    failing.fail_outputs = {1}

    async def fail_again(m: StepMetrics) -> None:
        failing.fail_outputs.add(m.step + 1)

    with pytest.raises(TrainingError, match="kept failing after 1 recoveries"):
        await failing.train(data, _config(), tmp_path / "failing", on_step=fail_again)
    assert failing.log[-1] == ("close", "errored")


@pytest.mark.anyio
async def test_batches_follow_batch_indices_across_epochs(tmp_path: Path, tokenizer: Any) -> None:
    # The loop draws one permutation per epoch; its batches are batch_indices', step by step.
    trainer = _Backend(tokenizer)
    batches: list[list[str]] = []
    session_step = _Session.step

    async def recording(self: _Session, plan: StepPlan) -> PendingStep:
        batches.append([e.id for e in plan.batch])
        return await session_step(self, plan)

    config = _config(max_steps=11, checkpoint_every=11)  # 3 examples a batch of 2: 5 epochs+
    pool = (await trainer.prepare(arithmetic(7), config)).examples
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_Session, "step", recording)
        await trainer.train(arithmetic(7), config, tmp_path)
    expected = [[pool[i].id for i in batch_indices(config, len(pool), s)[1]] for s in range(11)]
    assert batches == expected
    assert len({tuple(b) for b in batches}) > 3  # shuffled: epochs differ


def _fd_name(fd: int) -> str:
    return Path(os.readlink(f"/proc/self/fd/{fd}")).name


@pytest.mark.anyio
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names open files via /proc")
async def test_a_checkpoint_reaches_the_disk_after_the_metrics_before_it(
    tmp_path: Path, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Power loss can only lose metrics of steps after the last checkpoint (retrained on
    # resume): each checkpoint line is written after the metrics file is forced to disk, and
    # is forced to disk itself before the next step is recorded.
    events: list[tuple[str, str]] = []
    real_write, real_fsync = os.write, os.fsync

    def write(fd: int, data: Any) -> int:
        if _fd_name(fd).endswith(".jsonl"):
            events.append(("write", _fd_name(fd)))
        return real_write(fd, data)

    def fsync(fd: int) -> None:
        if _fd_name(fd).endswith(".jsonl"):
            events.append(("fsync", _fd_name(fd)))
        real_fsync(fd)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "fsync", fsync)
    await _Backend(tokenizer).train(arithmetic(6), _config(), tmp_path)
    metrics, checkpoints = "metrics.jsonl", "checkpoints.jsonl"
    assert events.count(("write", metrics)) == 8
    assert events.count(("write", checkpoints)) == 3  # steps 3, 6, 8
    for i, event in enumerate(events):
        if event == ("write", checkpoints):
            before = events[:i]
            last_metrics = len(before) - before[::-1].index(("write", metrics))
            assert ("fsync", metrics) in before[last_metrics:], events
            assert events[i + 1] == ("fsync", checkpoints), events
    # Steps between checkpoints are not forced to disk one by one (the loop's cost per step).
    assert events.count(("fsync", metrics)) == 3


@pytest.mark.anyio
async def test_power_loss_after_a_checkpoint_loses_no_step(tmp_path: Path, tokenizer: Any) -> None:
    data = arithmetic(6)
    full = await _Backend(tokenizer).train(data, _config(), tmp_path / "full")

    def crash(m: StepMetrics) -> None:
        if m.step == 5:
            raise _Crash

    run_dir = tmp_path / "run"
    with pytest.raises(_Crash):
        await _Backend(tokenizer).train(data, _config(), run_dir, on_step=crash)
    # What a power loss may leave: the lines up to the checkpoint at step 3 (synced with it),
    # then a torn part of step 4's line; step 5's line never reached the disk.
    lines = (run_dir / "metrics.jsonl").read_bytes().splitlines(keepends=True)
    assert len(lines) == 5
    (run_dir / "metrics.jsonl").write_bytes(b"".join(lines[:3]) + lines[3][:20])
    resumed = await _Backend(tokenizer).train(data, _config(), run_dir)
    assert resumed.resumed_from == 3
    assert [m.step for m in resumed.metrics] == list(range(1, 9))
    assert [m.nll for m in resumed.metrics] == [m.nll for m in full.metrics]
    assert (run_dir / "metrics.jsonl.torn").is_file()


@pytest.mark.anyio
async def test_steps_between_checkpoints_use_no_worker_thread(
    tmp_path: Path, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker-thread hop costs more than a step of the loop itself (bench_training.py): a
    # step that saves nothing records its metrics without one.
    calls = 0
    real = anyio.to_thread.run_sync

    async def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await real(*args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    hops = []
    for steps in (12, 24):
        calls = 0
        config = _config(max_steps=steps, checkpoint_every=12)
        await _Backend(tokenizer).train(arithmetic(6), config, tmp_path / str(steps))
        hops.append(calls)
    assert hops[1] == hops[0] + 1  # twelve more steps, one more checkpoint, one more hop


def test_renamed_names_warn_and_still_work() -> None:
    import tracedistill
    import tracedistill.training.base as base

    with pytest.warns(DeprecationWarning, match="TrainingDirectory"):
        from tracedistill.training import RunDirectory
    assert RunDirectory is TrainingDirectory
    with pytest.warns(DeprecationWarning, match="TrainingResult"):
        assert base.TrainingRun is TrainingResult
    with pytest.warns(DeprecationWarning, match="TrainingResult"):
        assert tracedistill.TrainingRun is TrainingResult
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from tracedistill import TrainingResult as top  # the new names do not warn

        assert top is TrainingResult


def test_a_backend_that_still_overrides_train_keeps_working() -> None:
    with pytest.warns(DeprecationWarning, match="implement Trainer.open"):

        class Legacy(Trainer):
            async def train(self, *args: Any, **kwargs: Any) -> Any:
                return "trained"

    assert isinstance(Legacy(), Trainer)  # type: ignore[abstract] # not abstract: it can be made and used as before
