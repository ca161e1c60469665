"""Training data: traces to tokenized examples, the pool sample, and the batch of every step.

Everything here is deterministic in the configuration's seed: the same pool and configuration
give the same examples, the same selection and the same batch at every step, which is what lets
a resumed run skip exactly the batches already trained.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, Self

import attrs
import numpy as np

from tracedistill.chat import (
    ChatExample,
    ChatFormat,
    ChatRenderer,
    LengthReport,
    apply_length_policy,
)
from tracedistill.errors import ConfigurationError
from tracedistill.records import Message, Trace
from tracedistill.training.config import TrainConfig

__all__ = [
    "DataReport",
    "PreparedData",
    "TrainingInput",
    "batch_indices",
    "conversations",
    "epoch_order",
    "prepare_examples",
    "select_indices",
    "steps_per_epoch",
]

log = logging.getLogger(__name__)

#: What a trainer accepts: tokenized examples, traces, or (id, messages) conversations.
TrainingInput = Sequence[ChatExample] | Sequence[Trace] | Sequence[tuple[str, Sequence[Message]]]


def _str_tuple(value: Sequence[str]) -> tuple[str, ...]:
    return tuple(value)


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


def _examples_tuple(value: Sequence[ChatExample]) -> tuple[ChatExample, ...]:
    return tuple(value)


@attrs.frozen(slots=True, kw_only=True)
class PreparedData:
    """The examples a run trains on, in selection order, and the report of how they were made."""

    examples: tuple[ChatExample, ...] = attrs.field(converter=_examples_tuple)
    report: DataReport


def conversations(
    items: Sequence[Trace] | Sequence[tuple[str, Sequence[Message]]],
) -> tuple[list[tuple[str, Sequence[Message]]], list[str]]:
    """Turn traces (or ``(id, messages)`` pairs) into ``(id, messages)`` training conversations.

    A trace's id is its key; its conversation is the prompt plus the assistant turn with the
    reasoning in a ``<think>`` block. Traces without a response (errors) or with neither
    reasoning nor answer are skipped; their ids are returned second.
    """
    convs: list[tuple[str, Sequence[Message]]] = []
    skipped: list[str] = []
    for item in items:
        if isinstance(item, Trace):
            if not item.ok or not (item.reasoning or item.answer):
                skipped.append(item.key)
                continue
            convs.append((item.key, item.messages()))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            convs.append((item[0], item[1]))
        else:
            raise ConfigurationError(
                "training data must be ChatExamples, Traces or (id, messages) pairs, got "
                f"{type(item).__name__}"
            )
    return convs, skipped


def select_indices(n: int, k: int | None, seed: int) -> list[int]:
    """Indices of ``k`` of ``n`` items drawn without replacement by ``seed``, in drawn order.

    ``k`` None (or >= ``n``) keeps all ``n`` in their order.
    """
    if k is None or k >= n:
        return list(range(n))
    rng = np.random.default_rng([seed, 0x5E1EC7])
    return [int(i) for i in rng.choice(n, size=k, replace=False)]


def batch_indices(config: TrainConfig, num_examples: int, step: int) -> tuple[int, list[int]]:
    """The epoch of 0-based ``step`` and the indices of the examples its batch trains on.

    Each epoch is a permutation of the examples determined by ``(seed, epoch)`` (identity when
    ``shuffle`` is off); step ``s`` of the epoch takes the ``s``-th run of ``batch_size``.
    """
    epoch, within = divmod(step, steps_per_epoch(config, num_examples))
    start = within * config.batch_size
    return epoch, epoch_order(config, num_examples, epoch)[start : start + config.batch_size]


def steps_per_epoch(config: TrainConfig, num_examples: int) -> int:
    """How many whole batches one pass over ``num_examples`` examples makes.

    Raises:
        ConfigurationError: the examples do not fill one batch.
    """
    per_epoch = num_examples // config.batch_size
    if per_epoch == 0:
        raise ConfigurationError(
            f"{num_examples} examples do not fill one batch of {config.batch_size}"
        )
    return per_epoch


def epoch_order(config: TrainConfig, num_examples: int, epoch: int) -> list[int]:
    """The order in which 0-based ``epoch`` visits the examples (see :func:`batch_indices`).

    A permutation determined by ``(seed, epoch)``, or the identity when ``shuffle`` is off. A
    loop computes it once per epoch and slices its batches from it.
    """
    if not config.shuffle:
        return list(range(num_examples))
    order: list[int] = (
        np.random.default_rng([config.seed, epoch]).permutation(num_examples).tolist()
    )
    return order


def prepare_examples(
    items: TrainingInput, renderer: ChatRenderer, config: TrainConfig
) -> PreparedData:
    """Tokenize a pool, apply the length policy, then draw ``config.num_samples`` by seed.

    Sampling comes after the length policy so that dropping over-long examples does not leave
    the run short. Already tokenized :class:`ChatExample` inputs only go through the length
    policy and the draw. Blocking (CPU-bound): trainers call it in a worker thread.

    Raises:
        ConfigurationError: empty data, or no example survives the length policy.
    """
    if len(items) == 0:
        raise ConfigurationError("no training data: the pool is empty")
    if renderer.format is not config.chat_format:
        raise ConfigurationError(
            f"renderer writes {renderer.format} but the config asks for {config.chat_format}"
        )
    started = time.perf_counter()
    skipped: list[str] = []
    if all(isinstance(x, ChatExample) for x in items):
        pool = [x for x in items if isinstance(x, ChatExample)]
        kept, length = apply_length_policy(
            ((e.id, e.tokens, e.loss_start, e.truncated) for e in pool),
            config.max_length,
            config.length_policy,
        )
    else:
        convs, skipped = conversations(items)  # type: ignore[arg-type]
        kept, length = renderer.build_examples(
            convs, max_length=config.max_length, policy=config.length_policy
        )
    # Sorting by id makes the draw independent of the order the store returned the pool in.
    kept.sort(key=lambda e: e.id)
    ids = [e.id for e in kept]
    if len(set(ids)) != len(ids):
        dup = next(i for i, a in enumerate(ids[1:]) if a == ids[i])
        raise ConfigurationError(f"training data holds the id {ids[dup]!r} more than once")
    if not kept:
        raise ConfigurationError(
            f"no example fits max_length={config.max_length} ({length.summary()})"
        )
    if config.num_samples is not None and config.num_samples > len(kept):
        log.warning(
            "num_samples=%d but only %d examples are usable: training on all of them",
            config.num_samples,
            len(kept),
        )
    chosen = [kept[i] for i in select_indices(len(kept), config.num_samples, config.seed)]
    seconds = time.perf_counter() - started
    report = DataReport(
        pool_size=len(items),
        selected=len(chosen),
        length=length,
        tokenizer=renderer.tokenizer.name,
        chat_format=renderer.format,
        seconds=seconds,
        skipped=tuple(skipped),
    )
    if length.affected:
        log.warning("training data: %s", length.summary())
    log.info("training data: %s", report.summary())
    return PreparedData(examples=chosen, report=report)


def batch_tokens(batch: Sequence[ChatExample]) -> tuple[int, int]:
    """Total tokens and loss tokens of a batch."""
    return sum(len(e) for e in batch), sum(e.num_loss_tokens for e in batch)


def describe(data: PreparedData) -> dict[str, Any]:
    """A JSON-compatible summary of prepared data (for logs and notebooks)."""
    return data.report.to_dict()
