"""Trainers: LoRA fine-tuning of the student on Tinker or locally with transformers + PEFT.

:class:`Trainer` runs the loop (training directory, data, resume, schedule, checkpoints,
metrics); a backend implements :meth:`Trainer.open` and a :class:`TrainingSession`.
The backends import heavy, optional libraries, so they are imported from their modules
(``tracedistill.training.tinker``, ``tracedistill.training.local``) and not here.
"""

from typing import Any

from tracedistill.training import base as _base
from tracedistill.training.base import (
    Checkpoint,
    DataReport,
    LRSchedule,
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
    learning_rate_at,
)
from tracedistill.training.data import PreparedData, prepare_examples

__all__ = [
    "Checkpoint",
    "DataReport",
    "LRSchedule",
    "PendingStep",
    "PreparedData",
    "RecoverableTrainingError",
    "SamplerWeights",
    "SavedWeights",
    "StepMetrics",
    "StepOutput",
    "StepPlan",
    "TrainConfig",
    "Trainer",
    "TrainingDirectory",
    "TrainingResult",
    "TrainingSession",
    "TrainingState",
    "learning_rate_at",
    "prepare_examples",
]


def __getattr__(name: str) -> Any:
    # RunDirectory and TrainingRun: renamed, kept (with a DeprecationWarning) for one release.
    return _base.__getattr__(name)
