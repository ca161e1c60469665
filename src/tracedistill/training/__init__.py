"""Trainers: LoRA fine-tuning of the student on Tinker or locally with transformers + PEFT.

:class:`Trainer` runs the loop (training directory, data, resume, schedule, checkpoints,
metrics); a backend implements :meth:`Trainer.open` and a :class:`TrainingSession`.
The backends import heavy, optional libraries, so they are imported from their modules
(``tracedistill.training.tinker``, ``tracedistill.training.local``) and not here.
"""

from typing import TYPE_CHECKING, Any

from tracedistill import _lazy

if TYPE_CHECKING:
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

    # Deprecated names (kept one release; not exported): plain aliases for type checkers, since
    # PEP 702's @deprecated cannot mark a type alias; at run time `_renamed` returns them with a
    # DeprecationWarning.
    RunDirectory = TrainingDirectory
    TrainingRun = TrainingResult

#: Public name -> the module defining it, imported on first use (see ``tracedistill._lazy``).
_EXPORTS = {
    "Checkpoint": "tracedistill.training.base",
    "DataReport": "tracedistill.training.base",
    "LRSchedule": "tracedistill.training.base",
    "PendingStep": "tracedistill.training.base",
    "PreparedData": "tracedistill.training.data",
    "RecoverableTrainingError": "tracedistill.training.base",
    "SamplerWeights": "tracedistill.training.base",
    "SavedWeights": "tracedistill.training.base",
    "StepMetrics": "tracedistill.training.base",
    "StepOutput": "tracedistill.training.base",
    "StepPlan": "tracedistill.training.base",
    "TrainConfig": "tracedistill.training.base",
    "Trainer": "tracedistill.training.base",
    "TrainingDirectory": "tracedistill.training.base",
    "TrainingResult": "tracedistill.training.base",
    "TrainingSession": "tracedistill.training.base",
    "TrainingState": "tracedistill.training.base",
    "learning_rate_at": "tracedistill.training.base",
    "prepare_examples": "tracedistill.training.data",
}

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


def _renamed(name: str) -> Any:
    # RunDirectory and TrainingRun: renamed, kept (with a DeprecationWarning) for one release.
    # Not `from tracedistill.training import base`: that asks this package for `base` first,
    # which comes back here before the module is imported.
    import tracedistill.training.base as base

    try:
        return base.__getattr__(name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


if not TYPE_CHECKING:  # type checkers see the imports above instead
    __getattr__, __dir__ = _lazy.attach(__name__, _EXPORTS, globals(), _renamed)
