"""The train stage: fine-tune the student on the traces the select stage chose."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio.to_thread
import orjson

from tracedistill.errors import ConfigurationError
from tracedistill.records import Trace
from tracedistill.store.base import TraceStore
from tracedistill.training.base import TrainConfig, Trainer

__all__ = ["load_train_set", "train_stage"]


def load_train_set(name: str, train_set: Path, store: TraceStore) -> list[Trace]:
    """The traces named in ``train_set.json``, read from the store (a blocking read).

    Raises:
        ConfigurationError: the select stage has not written ``train_set`` yet.
    """
    if not train_set.is_file():
        raise ConfigurationError(f"run {name!r}: run the filter stage before training")
    keys: Sequence[str] = orjson.loads(train_set.read_bytes())["keys"]
    return [t for k in keys if (t := store.get(k)) is not None]


async def train_stage(
    name: str,
    *,
    trainer: Trainer,
    config: TrainConfig,
    store: TraceStore,
    train_set: Path,
    directory: Path,
) -> dict[str, Any]:
    """Train on the selected traces in ``directory`` (resuming what is saved there).

    Raises:
        ConfigurationError: the select stage has not written ``train_set`` yet.
    """
    traces = await anyio.to_thread.run_sync(load_train_set, name, train_set, store)
    training = await trainer.train(traces, config, directory)
    final = training.final_checkpoint
    return {
        "steps": training.total_steps,
        "checkpoints": len(training.checkpoints),
        "final_nll": training.metrics[-1].nll if training.metrics else None,
        "final_sampler": None if final is None or final.sampler is None else final.sampler.path,
    }
