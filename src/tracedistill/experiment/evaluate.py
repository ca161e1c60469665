"""The evaluate stage: every saved checkpoint of a run (and the base model) on every benchmark.

Each (model, benchmark) evaluation resumes from its per-problem log, so a finished one costs
nothing when the stage runs again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from tracedistill.clients.base import Sampler
from tracedistill.errors import ConfigurationError
from tracedistill.evaluation.benchmarks import Benchmark
from tracedistill.evaluation.evaluator import Evaluator
from tracedistill.experiment.config import ExperimentSamplerFactory, Run
from tracedistill.training.base import TrainingDirectory

__all__ = ["checkpoint_label", "evaluate_model", "evaluate_stage", "make_sampler"]

logger = logging.getLogger(__name__)


def checkpoint_label(run: Run, step: int) -> str:
    """The evaluation label of a checkpoint: ``<run>@<step>``."""
    return f"{run.name}@{step}"


def make_sampler(model: Any, run: Run | None, factory: ExperimentSamplerFactory | None) -> Sampler:
    """The sampler of an evaluated object: itself, the factory's, or the default backend's."""
    if isinstance(model, Sampler):
        return model
    if factory is not None:
        return factory(model, run)
    from tracedistill.evaluation.samplers import make_sampler as default_sampler

    kwargs: dict[str, Any] = {}
    if run is not None:
        kwargs["chat_format"] = run.train.chat_format
        kwargs["base_model"] = run.train.base_model
    return default_sampler(model, **kwargs)


async def evaluate_model(
    evaluator: Evaluator,
    sampler: Sampler,
    benchmarks: Sequence[Benchmark],
    label: str,
) -> None:
    """Evaluate one sampler on every benchmark under ``label``, then close it."""
    # Not `async with`: a sampler starts (loads a model, opens a session) on its first
    # request, so a finished evaluation resumed costs nothing.
    try:
        for bench in benchmarks:
            await evaluator.evaluate(sampler, bench, label=label)
    finally:
        with anyio.CancelScope(shield=True):
            await sampler.aclose()


async def evaluate_stage(
    run: Run,
    *,
    evaluator: Evaluator,
    benchmarks: Sequence[Benchmark],
    training_dir: Path,
    factory: ExperimentSamplerFactory | None,
) -> dict[str, Any]:
    """Evaluate every saved checkpoint of a run; return how many were evaluated.

    Raises:
        ConfigurationError: the run has no checkpoint with sampler weights.
    """
    checkpoints = TrainingDirectory(training_dir).checkpoints()
    checkpoints = [c for c in checkpoints if c.sampler is not None]
    if not checkpoints:
        raise ConfigurationError(f"run {run.name!r}: no checkpoint to evaluate; train first")
    done = 0
    seen_steps: set[int] = set()
    for ckpt in checkpoints:
        if ckpt.step in seen_steps:
            continue
        seen_steps.add(ckpt.step)
        if benchmarks:
            sampler = make_sampler(ckpt, run, factory)
            await evaluate_model(evaluator, sampler, benchmarks, checkpoint_label(run, ckpt.step))
        done += 1
    return {"checkpoints_evaluated": done}
