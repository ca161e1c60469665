"""Deprecated: the checkpoint records moved to :mod:`tracedistill.records` (kept one release)."""

from tracedistill.records.models import Checkpoint, SamplerWeights, TrainingState

__all__ = ["Checkpoint", "SamplerWeights", "TrainingState"]
