"""The training directory: everything a training run learns, written as it happens.

A crashed run can be resumed and inspected from it:

- ``config.json``: the :class:`~tracedistill.training.config.TrainConfig` and the backend.
- ``data.json``: the data report (pool size, selection, what the length policy did).
- ``metrics.jsonl``: one :class:`StepMetrics` per line, appended after every step.
- ``checkpoints.jsonl``: one :class:`~tracedistill.training.checkpoints.Checkpoint` per line,
  appended after every save.
- ``run.json``: the finished run's :class:`TrainingResult` summary.

The two JSONL files are append-only: a line torn by a crash mid-write is cut (kept in
``<file>.torn``) before the next append, so every later step and checkpoint stays visible.

Durability: a checkpoint line is on disk (fsync) before the loop goes on, and so is every
metrics line written before it. A step's metrics line is handed to the operating system when
the step ends (it survives the process being killed) and reaches the disk with the next
checkpoint: a power loss can lose only the metrics of steps after the last checkpoint, which a
resumed run trains, and records, again.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import attrs
import orjson

from tracedistill._html import fields_html, fields_text
from tracedistill._jsonl import JsonlFile, write_json_atomic
from tracedistill.errors import CheckpointError
from tracedistill.records import Checkpoint, utcnow
from tracedistill.training.config import TrainConfig
from tracedistill.training.data import DataReport

__all__ = ["StepMetrics", "TrainingDirectory", "TrainingResult"]


def _as_datetime(value: _dt.datetime | str) -> _dt.datetime:
    return value if isinstance(value, _dt.datetime) else _dt.datetime.fromisoformat(value)


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
    created_at: _dt.datetime = attrs.field(factory=utcnow, converter=_as_datetime)

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


def _checkpoints(value: Sequence[Checkpoint]) -> tuple[Checkpoint, ...]:
    return tuple(value)


def _metrics(value: Sequence[StepMetrics]) -> tuple[StepMetrics, ...]:
    return tuple(value)


@attrs.frozen(slots=True, kw_only=True)
class TrainingResult:
    """What a finished (or resumed-and-finished) training run made: checkpoints and metrics.

    Formerly ``TrainingRun`` (still importable, deprecated): "run" also names the
    Experiment's runs, and this is the outcome of training one student.
    """

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
            f"<TrainingResult {self.backend} {self.config.base_model}: {len(self.metrics)} of "
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


class TrainingDirectory:
    """The files of one training run (see the module docstring for the layout).

    Formerly ``RunDirectory`` (still importable, deprecated): the Experiment has run
    directories too, and this is the training stage's directory inside one.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # Readers skip a torn last line; the writer cuts it before its first append. Lines an
        # older version glued onto a torn one are salvaged rather than hiding what follows.
        self._metrics = JsonlFile(self.path / "metrics.jsonl")
        self._checkpoints = JsonlFile(self.path / "checkpoints.jsonl")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

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
        write_json_atomic(config_file, wanted)

    def checkpoints(self) -> list[Checkpoint]:
        """Checkpoints saved so far, oldest first."""
        return [Checkpoint.from_dict(r) for r in self._checkpoints.records(salvage=True)]

    def metrics(self) -> list[StepMetrics]:
        """Step metrics so far, one per step (the latest record of a step wins)."""
        by_step: dict[int, StepMetrics] = {}
        for row in self._metrics.records(salvage=True):
            m = StepMetrics.from_dict(row)
            by_step[m.step] = m
        return [by_step[k] for k in sorted(by_step)]

    def last_resumable(self) -> Checkpoint | None:
        """The latest checkpoint with a training state."""
        found = [c for c in self.checkpoints() if c.state is not None]
        return found[-1] if found else None

    def open(self) -> None:
        """Cut torn last lines and open both files for appending (blocking: file I/O).

        Afterwards :meth:`add_metrics` with ``sync=False`` only hands a line to the operating
        system, cheap enough for an event loop.
        """
        for file in (self._metrics, self._checkpoints):
            file.append_bytes(b"")  # appending nothing opens the file, repairing it first

    def add_metrics(self, metrics: StepMetrics, *, sync: bool = True) -> None:
        """Append one step's metrics (on disk before returning unless ``sync`` is False)."""
        self._metrics.append(metrics.to_dict(), sync=sync)

    def add_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Append one checkpoint; it and every metrics line before it are on disk on return."""
        self._metrics.sync()
        self._checkpoints.append(checkpoint.to_dict(), sync=True)

    def write_data_report(self, report: DataReport) -> None:
        """Write the data report."""
        write_json_atomic(self.path / "data.json", report.to_dict())

    def write_run(self, result: TrainingResult) -> None:
        """Write the finished run's summary (``run.json``)."""
        write_json_atomic(self.path / "run.json", result.to_dict())

    def close(self) -> None:
        """Close the files kept open for appending (appending again reopens them)."""
        self._metrics.close()
        self._checkpoints.close()
