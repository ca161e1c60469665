"""The Trainer interface, its configuration, the learning-rate schedule and the training records.

A :class:`Trainer` fine-tunes a student on tokenized examples (or traces it tokenizes itself)
and returns a :class:`TrainingRun`. Everything it learns along the way is written to the run
directory as it happens, so a crashed run can be resumed and inspected:

- ``config.json``: the :class:`TrainConfig` and the backend.
- ``data.json``: the data report (pool size, selection, what the length policy did).
- ``metrics.jsonl``: one :class:`StepMetrics` per line, appended after every step.
- ``checkpoints.jsonl``: one :class:`Checkpoint` per line, appended after every save.
- ``run.json``: the finished run's summary.
"""

from __future__ import annotations

import abc
import datetime as _dt
import enum
import math
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import anyio
import attrs
import orjson

from tracedistill._html import fields_html, fields_text
from tracedistill.chat import (
    ChatExample,
    ChatFormat,
    ChatRenderer,
    ChatTokenizer,
    LengthPolicy,
    LengthReport,
    load_tokenizer,
)
from tracedistill.errors import CheckpointError, ConfigurationError
from tracedistill.records import Message, Trace, utcnow

if TYPE_CHECKING:
    from tracedistill.training.data import PreparedData

__all__ = [
    "Checkpoint",
    "DataReport",
    "LRSchedule",
    "RunDirectory",
    "SamplerWeights",
    "StepCallback",
    "StepMetrics",
    "TrainConfig",
    "Trainer",
    "TrainingInput",
    "TrainingRun",
    "TrainingState",
    "learning_rate_at",
]


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
        base_model: the student (Tinker model name, Hub name or local directory).
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


# --- checkpoints -----------------------------------------------------------------------------


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


def _str_tuple(value: Sequence[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen(slots=True, kw_only=True)
class Checkpoint:
    """A saved point of a training run.

    ``sampler`` is what evaluation samples from; ``state`` is what a crashed run resumes from
    (weights plus optimizer state). ``samples_seen`` counts training sequences up to this step.
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


@attrs.frozen(slots=True, kw_only=True)
class StepMetrics:
    """What one optimizer step did.

    ``nll`` is the mean negative log-likelihood per trained token (weight-1 tokens) of the
    step's batch, measured in the forward pass before the update.
    """

    step: int
    epoch: int
    samples_seen: int
    nll: float
    tokens: int
    loss_tokens: int
    learning_rate: float
    seconds: float
    created_at: _dt.datetime = attrs.field(factory=utcnow, converter=_time)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict."""
        return {
            "step": self.step,
            "epoch": self.epoch,
            "samples_seen": self.samples_seen,
            "nll": self.nll,
            "tokens": self.tokens,
            "loss_tokens": self.loss_tokens,
            "learning_rate": self.learning_rate,
            "seconds": self.seconds,
            "created_at": self.created_at.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build from :meth:`to_dict`'s output."""
        return cls(**data)


@attrs.frozen(slots=True, kw_only=True)
class DataReport:
    """What data preparation did: pool, selection, the length policy and the time it took."""

    pool_size: int
    selected: int
    length: LengthReport
    tokenizer: str
    chat_format: ChatFormat = attrs.field(converter=ChatFormat)
    seconds: float = 0.0
    skipped: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)

    @property
    def tokens_per_second(self) -> float:
        """Tokenization throughput over the whole pool."""
        total = self.length.mean_tokens * self.length.total
        return total / self.seconds if self.seconds > 0 else math.inf

    def summary(self) -> str:
        """One line for logs and reports."""
        return (
            f"pool {self.pool_size}, selected {self.selected}; {self.length.summary()}; "
            f"tokenized in {self.seconds:.2f}s"
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict."""
        return {
            "pool_size": self.pool_size,
            "selected": self.selected,
            "length": self.length.to_dict(),
            "tokenizer": self.tokenizer,
            "chat_format": str(self.chat_format),
            "seconds": self.seconds,
            "skipped": list(self.skipped),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build from :meth:`to_dict`'s output."""
        fields = dict(data)
        fields["length"] = LengthReport.from_dict(fields["length"])
        return cls(**fields)


def _checkpoints(value: Sequence[Checkpoint]) -> tuple[Checkpoint, ...]:
    return tuple(value)


def _metrics(value: Sequence[StepMetrics]) -> tuple[StepMetrics, ...]:
    return tuple(value)


@attrs.frozen(slots=True, kw_only=True)
class TrainingRun:
    """A finished (or resumed-and-finished) training run."""

    run_dir: Path = attrs.field(converter=Path)
    backend: str
    config: TrainConfig
    total_steps: int
    checkpoints: tuple[Checkpoint, ...] = attrs.field(converter=_checkpoints)
    metrics: tuple[StepMetrics, ...] = attrs.field(converter=_metrics)
    data: DataReport | None = None
    resumed_from: int | None = None
    started_at: _dt.datetime = attrs.field(factory=utcnow)
    finished_at: _dt.datetime = attrs.field(factory=utcnow)

    @property
    def final_checkpoint(self) -> Checkpoint | None:
        """The last checkpoint saved."""
        return self.checkpoints[-1] if self.checkpoints else None

    def checkpoint_at(self, step: int) -> Checkpoint:
        """The checkpoint saved at ``step``."""
        for ckpt in self.checkpoints:
            if ckpt.step == step:
                return ckpt
        steps = [c.step for c in self.checkpoints]
        raise CheckpointError(f"no checkpoint at step {step}; saved steps: {steps}")

    def _fields(self) -> dict[str, Any]:
        last = self.metrics[-1] if self.metrics else None
        return {
            "backend": self.backend,
            "base model": self.config.base_model,
            "steps": f"{len(self.metrics):,} of {self.total_steps:,}"
            + ("" if self.resumed_from is None else f" (resumed from step {self.resumed_from})"),
            "final NLL": None if last is None else f"{last.nll:.4f}",
            "checkpoints": ", ".join(str(c.step) for c in self.checkpoints) or None,
            "data": None if self.data is None else self.data.summary(),
            "directory": str(self.run_dir),
        }

    def __repr__(self) -> str:
        last = f", final NLL {self.metrics[-1].nll:.4f}" if self.metrics else ""
        return (
            f"<TrainingRun {self.backend} {self.config.base_model}: {len(self.metrics)} of "
            f"{self.total_steps} steps, {len(self.checkpoints)} checkpoints{last}>"
        )

    def __str__(self) -> str:
        return fields_text("Training run", self._fields())

    def _repr_html_(self) -> str:
        return fields_html("Training run", self._fields())

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible summary (metrics and checkpoints have their own files)."""
        return {
            "run_dir": str(self.run_dir),
            "backend": self.backend,
            "config": self.config.to_dict(),
            "total_steps": self.total_steps,
            "checkpoints": [c.to_dict() for c in self.checkpoints],
            "steps_done": len(self.metrics),
            "final_nll": self.metrics[-1].nll if self.metrics else None,
            "data": None if self.data is None else self.data.to_dict(),
            "resumed_from": self.resumed_from,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
        }


# --- the run directory -----------------------------------------------------------------------


def _append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    with path.open("ab") as f:
        f.write(orjson.dumps(record) + b"\n")
        f.flush()
        os.fsync(f.fileno())


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows: list[dict[str, Any]] = []
    with path.open("rb") as f:
        for raw in f:
            if not raw.strip():
                continue
            try:
                rows.append(orjson.loads(raw))
            except orjson.JSONDecodeError:
                # A line torn by a crash mid-write is the last one: everything before it holds.
                break
    return rows


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    os.replace(tmp, path)


class RunDirectory:
    """The files of one training run (see the module docstring for the layout)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def prepare(self, config: TrainConfig, backend: str) -> None:
        """Create the directory; refuse to mix a different config into an existing run.

        Raises:
            CheckpointError: the directory holds a run with a different configuration.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        config_file = self.path / "config.json"
        wanted: dict[str, Any] = {"backend": backend, "config": config.to_dict()}
        if config_file.is_file():
            found: dict[str, Any] = orjson.loads(config_file.read_bytes())
            if found != wanted:
                old: dict[str, Any] = found.get("config", {})
                new: dict[str, Any] = wanted["config"]
                diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                raise CheckpointError(
                    f"{self.path} holds a {found.get('backend')} run with a different "
                    f"configuration (differs in: {diff or ['backend']}); use a new run "
                    "directory or the same configuration to resume"
                )
            return
        _write_json(config_file, wanted)

    def checkpoints(self) -> list[Checkpoint]:
        """Checkpoints saved so far, oldest first."""
        return [Checkpoint.from_dict(r) for r in _read_jsonl(self.path / "checkpoints.jsonl")]

    def metrics(self) -> list[StepMetrics]:
        """Step metrics so far, one per step (the latest record of a step wins)."""
        by_step: dict[int, StepMetrics] = {}
        for row in _read_jsonl(self.path / "metrics.jsonl"):
            m = StepMetrics.from_dict(row)
            by_step[m.step] = m
        return [by_step[k] for k in sorted(by_step)]

    def last_resumable(self) -> Checkpoint | None:
        """The latest checkpoint with a training state."""
        found = [c for c in self.checkpoints() if c.state is not None]
        return found[-1] if found else None

    def add_metrics(self, metrics: StepMetrics) -> None:
        """Append one step's metrics (flushed to disk before returning)."""
        _append_jsonl(self.path / "metrics.jsonl", metrics.to_dict())

    def add_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Append one checkpoint (flushed to disk before returning)."""
        _append_jsonl(self.path / "checkpoints.jsonl", checkpoint.to_dict())

    def write_data_report(self, report: DataReport) -> None:
        """Write the data report."""
        _write_json(self.path / "data.json", report.to_dict())

    def write_run(self, run: TrainingRun) -> None:
        """Write the finished run's summary."""
        _write_json(self.path / "run.json", run.to_dict())


# --- the interface ---------------------------------------------------------------------------

#: What a trainer accepts: tokenized examples, traces, or (id, messages) conversations.
TrainingInput = Sequence[ChatExample] | Sequence[Trace] | Sequence[tuple[str, Sequence[Message]]]

#: Called after each step with its metrics (awaited if it returns an awaitable).
StepCallback = Callable[[StepMetrics], Awaitable[None] | None]


class Trainer(abc.ABC):
    """Fine-tunes a student and saves checkpoints to sample from and to resume from."""

    #: Short backend name recorded in the run directory ("tinker", "local").
    backend: str = "trainer"
    #: The tokenizer given to the trainer, if any (else the student's own is loaded).
    _tokenizer: Any = None

    def tokenizer_for(self, config: TrainConfig) -> ChatTokenizer:
        """The tokenizer used for ``config``'s student (found without the Hub)."""
        return load_tokenizer(self._tokenizer if self._tokenizer is not None else config.base_model)

    async def prepare(self, examples: TrainingInput, config: TrainConfig) -> PreparedData:
        """Tokenize and select the run's examples (in a worker thread)."""
        from tracedistill.training.data import prepare_examples  # data builds on this module

        def work() -> PreparedData:
            renderer = ChatRenderer(self.tokenizer_for(config), config.chat_format)
            return prepare_examples(examples, renderer, config)

        result: PreparedData = await anyio.to_thread.run_sync(work)
        return result

    @abc.abstractmethod
    async def train(
        self,
        examples: TrainingInput,
        config: TrainConfig,
        run_dir: str | Path,
        *,
        on_step: StepCallback | None = None,
    ) -> TrainingRun:
        """Train on ``examples`` with ``config``, writing progress to ``run_dir``.

        Traces and conversations are tokenized in the student's chat format with the
        backend's tokenizer; the pool is sampled down to ``config.num_samples``. When
        ``run_dir`` already holds checkpoints of the same configuration, training resumes from
        the last saved state, skipping the batches already trained.

        Raises:
            ConfigurationError: the data or the configuration cannot make a run.
            ModelNotAvailableError: the backend cannot train ``config.base_model``.
            TrainingError: training failed (nothing already saved is lost).
        """
