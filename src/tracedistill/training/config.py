"""How a student is fine-tuned: :class:`TrainConfig` and the learning-rate schedule.

The same configuration drives every training backend; it is validated when built, so a bad
value fails at once with a :class:`~tracedistill.errors.ConfigurationError` naming the field.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from typing import Any, Self

import attrs

from tracedistill.chat import ChatFormat, LengthPolicy
from tracedistill.errors import ConfigurationError

__all__ = ["LRSchedule", "TrainConfig", "learning_rate_at"]


class LRSchedule(enum.StrEnum):
    """Shape of the learning rate over the run (after the optional warm-up)."""

    COSINE = "cosine"
    LINEAR = "linear"
    CONSTANT = "constant"


def _positive_int(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigurationError(
            f"TrainConfig.{attribute.name} must be a positive int, got {value!r}"
        )


def _optional_positive_int(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _positive_int(_inst, attribute, value)


def _non_negative_int(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigurationError(f"TrainConfig.{attribute.name} must be an int >= 0, got {value!r}")


def _in_range(
    low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> Callable[[object, attrs.Attribute[Any], float], None]:
    def check(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
        ok = math.isfinite(value) and (value > low if low_open else value >= low)
        ok = ok and (value < high if high_open else value <= high)
        if not ok:
            lo = "(" if low_open else "["
            hi = ")" if high_open else "]"
            raise ConfigurationError(
                f"TrainConfig.{attribute.name} must be in {lo}{low}, {high}{hi}, got {value!r}"
            )

    return check


def _enum_value(kind: type[enum.StrEnum], value: object) -> Any:
    try:
        return kind(str(value))
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in kind)
        raise ConfigurationError(
            f"{kind.__name__} must be one of {allowed}, got {value!r}"
        ) from None


def _schedule(value: object) -> LRSchedule:
    return _enum_value(LRSchedule, value)  # type: ignore[no-any-return]


def _policy(value: object) -> LengthPolicy:
    return _enum_value(LengthPolicy, value)  # type: ignore[no-any-return]


def _format(value: object) -> ChatFormat:
    return _enum_value(ChatFormat, value)  # type: ignore[no-any-return]


def _model_name(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(
            "TrainConfig.base_model must name the student (a Tinker model name, a Hub name or a "
            f"local model directory), got {value!r}"
        )


@attrs.frozen(slots=True, kw_only=True)
class TrainConfig:
    """How a student is fine-tuned. Validated at construction; the same for every backend.

    The defaults are the study's recipe (LoRA rank 32, batch 50 sequences, cosine schedule, AdamW
    0.9/0.95, 4,096 tokens, one epoch, a checkpoint every 100 steps) except the base model, which
    is always given: served models are retired, and a config must say which one it trained.

    Attributes:
        base_model: the student: the pretrained model whose LoRA adapters are trained (a
            Tinker model name, a Hub name or a local directory). Not to be confused with the
            Experiment's evaluated baseline; the name stays for compatibility with stored
            ``config.json`` files.
        lora_rank: LoRA rank.
        train_attention / train_mlp / train_experts / train_unembed: which weights get LoRA
            adapters (experts: the per-expert weights of a mixture-of-experts MLP; Tinker trains
            them as part of the MLP).
        lora_alpha: LoRA scaling numerator for local training (None: equal to the rank).
        batch_size: sequences per optimizer step.
        learning_rate: peak learning rate.
        lr_schedule: cosine, linear or constant decay after warm-up.
        warmup_steps: linear warm-up from 0 to the peak over this many steps.
        lr_floor: the decay ends at ``lr_floor * learning_rate``.
        adam_beta1 / adam_beta2 / adam_eps / weight_decay: AdamW (decoupled weight decay).
        grad_clip_norm: clip the global gradient norm to this (0: no clipping).
        max_length: tokens per sequence; longer examples follow ``length_policy``.
        length_policy: drop or truncate over-long examples.
        chat_format: Qwen3 chat (with the ``<think>`` block) or plain ``User:/Assistant:``.
        epochs: passes over the data (None: as many as ``max_steps`` needs).
        max_steps: stop after this many steps (None: ``epochs`` full passes).
        num_samples: train on this many examples drawn by ``seed`` from the larger pool
            (None: all of it).
        checkpoint_every: save a checkpoint every this many steps (the last step always saves).
        seed: seeds sampling of the pool, shuffling, LoRA initialisation.
        shuffle: shuffle the examples each epoch (deterministically from ``seed``).
    """

    base_model: str = attrs.field(validator=_model_name)
    lora_rank: int = attrs.field(default=32, validator=_positive_int)
    train_attention: bool = True
    train_mlp: bool = True
    train_experts: bool = True
    train_unembed: bool = True
    lora_alpha: float | None = attrs.field(default=None)
    batch_size: int = attrs.field(default=50, validator=_positive_int)
    learning_rate: float = attrs.field(
        default=2e-4, converter=float, validator=_in_range(0.0, 1.0, low_open=True)
    )
    lr_schedule: LRSchedule = attrs.field(default=LRSchedule.COSINE, converter=_schedule)
    warmup_steps: int = attrs.field(default=0, validator=_non_negative_int)
    lr_floor: float = attrs.field(default=0.0, converter=float, validator=_in_range(0.0, 1.0))
    adam_beta1: float = attrs.field(
        default=0.9, converter=float, validator=_in_range(0.0, 1.0, high_open=True)
    )
    adam_beta2: float = attrs.field(
        default=0.95, converter=float, validator=_in_range(0.0, 1.0, high_open=True)
    )
    adam_eps: float = attrs.field(
        default=1e-12, converter=float, validator=_in_range(0.0, 1.0, low_open=True)
    )
    weight_decay: float = attrs.field(default=0.0, converter=float, validator=_in_range(0.0, 1.0))
    grad_clip_norm: float = attrs.field(
        default=0.0, converter=float, validator=_in_range(0.0, math.inf, high_open=True)
    )
    max_length: int = attrs.field(default=4096, validator=_positive_int)
    length_policy: LengthPolicy = attrs.field(default=LengthPolicy.DROP, converter=_policy)
    chat_format: ChatFormat = attrs.field(default=ChatFormat.QWEN3, converter=_format)
    epochs: int | None = attrs.field(default=1, validator=_optional_positive_int)
    max_steps: int | None = attrs.field(default=None, validator=_optional_positive_int)
    num_samples: int | None = attrs.field(default=None, validator=_optional_positive_int)
    checkpoint_every: int = attrs.field(default=100, validator=_positive_int)
    seed: int = attrs.field(default=0, validator=_non_negative_int)
    shuffle: bool = True

    def __attrs_post_init__(self) -> None:
        if self.epochs is None and self.max_steps is None:
            raise ConfigurationError("TrainConfig needs epochs or max_steps (or both)")
        if self.max_length < 2:
            raise ConfigurationError("TrainConfig.max_length must be >= 2")
        if not (self.train_attention or self.train_mlp or self.train_experts or self.train_unembed):
            raise ConfigurationError(
                "TrainConfig trains no module: enable at least one of "
                "train_attention, train_mlp, train_experts, train_unembed"
            )
        if self.lora_alpha is not None and not (
            math.isfinite(self.lora_alpha) and self.lora_alpha > 0
        ):
            raise ConfigurationError(f"TrainConfig.lora_alpha must be > 0, got {self.lora_alpha}")

    def total_steps(self, num_examples: int) -> int:
        """Optimizer steps the run makes over ``num_examples`` examples.

        Each epoch makes ``num_examples // batch_size`` steps (an incomplete last batch is left
        out, so every step sees ``batch_size`` sequences); ``max_steps`` caps the total.

        Raises:
            ConfigurationError: fewer examples than one batch.
        """
        per_epoch = num_examples // self.batch_size
        if per_epoch == 0:
            raise ConfigurationError(
                f"{num_examples} examples do not fill one batch of {self.batch_size}: lower "
                "batch_size or give more data"
            )
        if self.epochs is None:
            assert self.max_steps is not None
            return self.max_steps
        total = per_epoch * self.epochs
        return total if self.max_steps is None else min(total, self.max_steps)

    def learning_rate_at(self, step: int, total_steps: int) -> float:
        """The learning rate of 0-based ``step`` in a run of ``total_steps`` steps."""
        return learning_rate_at(
            step,
            total_steps,
            peak=self.learning_rate,
            schedule=self.lr_schedule,
            warmup_steps=self.warmup_steps,
            floor=self.lr_floor,
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict."""
        return {
            f.name: (str(v) if isinstance(v, enum.Enum) else v)
            for f in attrs.fields(TrainConfig)
            for v in (getattr(self, f.name),)
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build from :meth:`to_dict`'s output."""
        names = {f.name for f in attrs.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ConfigurationError(f"TrainConfig: unknown field(s) {sorted(unknown)}")
        return cls(**data)


def learning_rate_at(
    step: int,
    total_steps: int,
    *,
    peak: float,
    schedule: LRSchedule | str = LRSchedule.COSINE,
    warmup_steps: int = 0,
    floor: float = 0.0,
) -> float:
    """The learning rate at 0-based ``step``.

    Warm-up rises linearly to ``peak`` (step ``k`` of ``warmup_steps`` gets
    ``peak * (k + 1) / warmup_steps``); then the schedule decays from ``peak`` at the first
    post-warm-up step towards ``floor * peak`` at ``total_steps``. Without warm-up and floor the
    cosine is tinker-cookbook's ``0.5 * (1 + cos(pi * step / total))``.
    """
    if total_steps <= 0:
        raise ConfigurationError(f"total_steps must be > 0, got {total_steps}")
    schedule = LRSchedule(schedule)
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min(max((step - warmup_steps) / decay_steps, 0.0), 1.0)
    if schedule is LRSchedule.CONSTANT:
        factor = 1.0
    elif schedule is LRSchedule.LINEAR:
        factor = 1.0 - progress
    else:
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    return peak * (floor + (1.0 - floor) * factor)
