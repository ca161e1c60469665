"""Trainers: LoRA fine-tuning of the student on Tinker or locally with transformers + PEFT.

The backends import heavy, optional libraries, so they are imported from their modules
(``tracedistill.training.tinker``, ``tracedistill.training.local``) and not here.
"""

from tracedistill.training.base import (
    Checkpoint,
    DataReport,
    LRSchedule,
    RunDirectory,
    SamplerWeights,
    StepMetrics,
    TrainConfig,
    Trainer,
    TrainingRun,
    TrainingState,
    learning_rate_at,
)
from tracedistill.training.data import PreparedData, prepare_examples

__all__ = [
    "Checkpoint",
    "DataReport",
    "LRSchedule",
    "PreparedData",
    "RunDirectory",
    "SamplerWeights",
    "StepMetrics",
    "TrainConfig",
    "Trainer",
    "TrainingRun",
    "TrainingState",
    "learning_rate_at",
    "prepare_examples",
]
