"""What a model answered, and the checkpoints of a training run to sample or resume from.

A :class:`Completion` is one model's answer to one prompt. A :class:`Checkpoint` holds two
paths of two types that are never mixed up: :class:`SamplerWeights` (evaluate:
``tinker://<run>/sampler_weights/<name>`` or a local adapter directory) and
:class:`TrainingState` (resume: ``tinker://<run>/weights/<name>`` or a local directory with the
optimizer state).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Mapping
from typing import Any, Self

import attrs

from tracedistill.errors import CheckpointError
from tracedistill.records.base import FinishReason, utcnow

__all__ = ["Checkpoint", "Completion", "SamplerWeights", "TrainingState"]


@attrs.frozen(slots=True, kw_only=True)
class Completion:
    """What a model produced for one prompt.

    ``text`` is the whole assistant turn as the model wrote it (its ``<think>`` block
    included); ``completion_tokens`` is None when the backend does not say.
    """

    text: str = attrs.field(validator=attrs.validators.instance_of(str))
    finish_reason: FinishReason = attrs.field(converter=FinishReason)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float = 0.0

    @property
    def truncated(self) -> bool:
        """Whether generation stopped at ``max_tokens``."""
        return self.finish_reason is FinishReason.LENGTH

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict."""
        return {
            "text": self.text,
            "finish_reason": str(self.finish_reason),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency_s": self.latency_s,
        }


def _check_uri(kind: str, forbidden: str) -> Callable[[object, Any, str], None]:
    # Only the other kind's marker is refused: self-hosted Tinker-compatible servers may name
    # sampler weights tinker://<run>/<name> without the /sampler_weights/ segment.
    def check(_inst: object, _attr: Any, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise CheckpointError(f"{kind} path must be a non-empty string, got {value!r}")
        if value.startswith("tinker://") and f"/{forbidden}/" in value:
            raise CheckpointError(
                f"{value} is a {forbidden!r} path, not a {kind} path: "
                + (
                    "sample from the checkpoint's sampler weights "
                    "(tinker://.../sampler_weights/...), not its training state"
                    if kind == "sampler weights"
                    else "resume from the checkpoint's training state "
                    "(tinker://.../weights/...), not its sampler weights"
                )
            )

    return check


@attrs.frozen(slots=True)
class SamplerWeights:
    """Weights to sample from: ``tinker://<run>/sampler_weights/<name>`` or a local adapter dir.

    Kept a distinct type from :class:`TrainingState`: sampling a training-state path fails.
    """

    path: str = attrs.field(converter=str, validator=_check_uri("sampler weights", "weights"))

    @property
    def is_tinker(self) -> bool:
        """Whether the weights live on a Tinker(-compatible) service."""
        return self.path.startswith("tinker://")

    def __str__(self) -> str:
        return self.path


@attrs.frozen(slots=True)
class TrainingState:
    """Weights and optimizer state to resume from: ``tinker://<run>/weights/<name>`` or a dir."""

    path: str = attrs.field(
        converter=str, validator=_check_uri("training state", "sampler_weights")
    )

    @property
    def is_tinker(self) -> bool:
        """Whether the state lives on a Tinker(-compatible) service."""
        return self.path.startswith("tinker://")

    def __str__(self) -> str:
        return self.path


def _time(value: _dt.datetime | str) -> _dt.datetime:
    return value if isinstance(value, _dt.datetime) else _dt.datetime.fromisoformat(value)


def _sampler_weights(value: SamplerWeights | str | None) -> SamplerWeights | None:
    return value if value is None or isinstance(value, SamplerWeights) else SamplerWeights(value)


def _training_state(value: TrainingState | str | None) -> TrainingState | None:
    return value if value is None or isinstance(value, TrainingState) else TrainingState(value)


@attrs.frozen(slots=True, kw_only=True)
class Checkpoint:
    """A saved point of a training run.

    ``sampler`` is what evaluation samples from; ``state`` is what a crashed run resumes from
    (weights plus optimizer state). ``samples_seen`` counts training sequences up to this step;
    ``base_model`` is the student the adapters apply to (``TrainConfig.base_model``).
    """

    step: int = attrs.field(validator=attrs.validators.ge(0))
    samples_seen: int = attrs.field(validator=attrs.validators.ge(0))
    sampler: SamplerWeights | None = attrs.field(converter=_sampler_weights)
    state: TrainingState | None = attrs.field(converter=_training_state)
    base_model: str = ""
    final: bool = False
    created_at: _dt.datetime = attrs.field(factory=utcnow, converter=_time)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict."""
        return {
            "step": self.step,
            "samples_seen": self.samples_seen,
            "sampler": None if self.sampler is None else self.sampler.path,
            "state": None if self.state is None else self.state.path,
            "base_model": self.base_model,
            "final": self.final,
            "created_at": self.created_at.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build from :meth:`to_dict`'s output."""
        return cls(**data)
