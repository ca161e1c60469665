"""The Trainer: the training loop every backend shares, and the narrow interface a backend writes.

:meth:`Trainer.train` owns the whole run: the training directory (see
:mod:`tracedistill.training.directory`), data preparation, resuming from the last saved state,
the learning-rate schedule, the step loop, checkpoints, metrics and recovery from failed steps.
A backend implements only what differs between places to train:

- :meth:`Trainer.open` returns a :class:`TrainingSession` for one run (cheap: checks, clients);
- :meth:`TrainingSession.start` loads the student with fresh LoRA weights or restores a saved
  :class:`~tracedistill.training.checkpoints.TrainingState` with its optimizer;
- :meth:`TrainingSession.step` submits one optimizer step (forward-backward, optimizer update,
  then the save when the :class:`StepPlan` asks for one) and returns a :class:`PendingStep`
  whose :meth:`~PendingStep.output` and :meth:`~PendingStep.saved` the loop awaits;
- :meth:`TrainingSession.close` releases what the session holds.

A session may accept ``lookahead`` more steps before the oldest one's results are awaited (a
remote service then never waits for the client between steps). A step that fails in a way a
fresh session can get past raises :class:`RecoverableTrainingError`: the loop starts the session
again from the last saved state, up to :attr:`Trainer.max_recoveries` times.

The records and the configuration live in their own modules and are importable from here too.
"""

from __future__ import annotations

import abc
import collections
import logging
import time
import warnings
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.to_thread
import attrs

from tracedistill.chat import ChatExample, ChatRenderer, ChatTokenizer, load_tokenizer
from tracedistill.errors import TrainingError
from tracedistill.records import Checkpoint, SamplerWeights, TrainingState, utcnow
from tracedistill.training.config import LRSchedule, TrainConfig, learning_rate_at
from tracedistill.training.data import (
    DataReport,
    PreparedData,
    TrainingInput,
    epoch_order,
    prepare_examples,
    steps_per_epoch,
)
from tracedistill.training.directory import StepMetrics, TrainingDirectory, TrainingResult

__all__ = [
    "Checkpoint",
    "DataReport",
    "LRSchedule",
    "PendingStep",
    "RecoverableTrainingError",
    "SamplerWeights",
    "SavedWeights",
    "SessionStatus",
    "StepCallback",
    "StepMetrics",
    "StepOutput",
    "StepPlan",
    "TrainConfig",
    "Trainer",
    "TrainingDirectory",
    "TrainingInput",
    "TrainingResult",
    "TrainingSession",
    "TrainingState",
    "learning_rate_at",
]

log = logging.getLogger(__name__)

#: Called after each step with its metrics (awaited if it returns an awaitable).
StepCallback = Callable[[StepMetrics], Awaitable[None] | None]

#: How a session ended: finished, failed, or cancelled.
SessionStatus = Literal["success", "errored", "interrupted"]


class RecoverableTrainingError(TrainingError):
    """A step failed in a way a session restarted from the last saved state can get past.

    Raised by a backend (for example: a request to a remote service failed and its training
    client can no longer be trusted); :meth:`Trainer.train` then restarts the session.
    """


def _batch_tuple(value: Sequence[ChatExample]) -> tuple[ChatExample, ...]:
    return tuple(value)


@attrs.frozen(slots=True, kw_only=True)
class StepPlan:
    """One optimizer step, as the loop hands it to a backend.

    Attributes:
        number: the 1-based step number (the step is done when ``number`` steps are).
        epoch: the 0-based pass over the data this step belongs to.
        batch: the sequences this step trains on.
        learning_rate: the step's learning rate (from the configuration's schedule).
        save_as: the name of the checkpoint this step saves (``"step_000100"``), or None.
        final: whether this is the run's last step.
    """

    number: int
    epoch: int
    batch: tuple[ChatExample, ...] = attrs.field(converter=_batch_tuple)
    learning_rate: float
    save_as: str | None = None
    final: bool = False


@attrs.frozen(slots=True)
class StepOutput:
    """What a backend measured in a step: mean NLL per trained token, and trained tokens."""

    nll: float
    loss_tokens: int


@attrs.frozen(slots=True)
class SavedWeights:
    """Where a backend saved a checkpoint: weights to sample from, and the state to resume."""

    sampler: SamplerWeights
    state: TrainingState | None


class PendingStep(abc.ABC):
    """A submitted step whose results the loop awaits (in submission order)."""

    @abc.abstractmethod
    async def output(self) -> StepOutput:
        """Wait for the step's forward-backward and optimizer update; what they measured.

        Raises:
            RecoverableTrainingError: the step failed; a restarted session can redo it.
        """

    @abc.abstractmethod
    async def saved(self) -> SavedWeights:
        """Wait for the checkpoint the step's plan asked for (only called when it did)."""


class TrainingSession(abc.ABC):
    """One backend's hold on a student being trained, driven by :meth:`Trainer.train`."""

    #: How many later steps may be submitted before the oldest one's results are awaited.
    lookahead: int = 0

    @abc.abstractmethod
    async def start(self, state: TrainingState | None) -> None:
        """Load fresh LoRA weights (``state`` None) or restore ``state`` with its optimizer.

        Called before the first step, and again (replacing what the session trained) after a
        :class:`RecoverableTrainingError`.
        """

    @abc.abstractmethod
    async def step(self, plan: StepPlan) -> PendingStep:
        """Submit one optimizer step; when ``plan.save_as`` is set, then save a checkpoint."""

    async def close(self, status: SessionStatus) -> None:  # noqa: B027 # optional
        """Release what the session holds (called once, also after errors and cancellation)."""


class Trainer(abc.ABC):
    """Fine-tunes a student and saves checkpoints to sample from and to resume from.

    A backend subclasses it and implements :meth:`open` (see the module docstring).
    """

    #: Short backend name recorded in the training directory ("tinker", "local").
    backend: str = "trainer"
    #: How many times a session is restarted after a :class:`RecoverableTrainingError`.
    max_recoveries: int = 0
    #: The tokenizer given to the trainer, if any (else the student's own is loaded).
    _tokenizer: Any = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "train" in cls.__dict__ and getattr(cls.open, "__isabstractmethod__", False):
            # A backend written before Trainer owned the loop: it still works for one release.
            warnings.warn(
                f"{cls.__name__} overrides Trainer.train; implement Trainer.open (a "
                "TrainingSession) instead and let Trainer.train run the loop",
                DeprecationWarning,
                stacklevel=2,
            )
            cls.open = Trainer._no_session  # type: ignore[method-assign]

    async def _no_session(self, config: TrainConfig, directory: Path) -> TrainingSession:
        raise NotImplementedError(f"{type(self).__name__} does not implement Trainer.open")

    def tokenizer_for(self, config: TrainConfig) -> ChatTokenizer:
        """The tokenizer used for ``config``'s student (found without the Hub)."""
        return load_tokenizer(self._tokenizer if self._tokenizer is not None else config.base_model)

    async def prepare(self, examples: TrainingInput, config: TrainConfig) -> PreparedData:
        """Tokenize and select the run's examples (in a worker thread)."""

        def work() -> PreparedData:
            renderer = ChatRenderer(self.tokenizer_for(config), config.chat_format)
            return prepare_examples(examples, renderer, config)

        result: PreparedData = await anyio.to_thread.run_sync(work)
        return result

    @abc.abstractmethod
    async def open(self, config: TrainConfig, directory: Path) -> TrainingSession:
        """A session for one run of ``config`` whose files go to ``directory``.

        Cheap (checks, clients); the student is loaded by :meth:`TrainingSession.start`, which
        is not called when the run has nothing left to train.

        Raises:
            ModelNotAvailableError: the backend cannot train ``config.base_model``.
            TrainingError: the backend cannot be reached.
        """

    async def train(
        self,
        examples: TrainingInput,
        config: TrainConfig,
        run_dir: str | Path,
        *,
        on_step: StepCallback | None = None,
    ) -> TrainingResult:
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
        started = utcnow()
        directory = TrainingDirectory(run_dir)
        await anyio.to_thread.run_sync(directory.prepare, config, self.backend)
        session = await self.open(config, directory.path)
        status: SessionStatus = "interrupted"
        try:
            data = await self.prepare(examples, config)
            await anyio.to_thread.run_sync(directory.write_data_report, data.report)
            loop = _Loop(self, session, config, directory, data.examples, on_step)
            await loop.run()
            status = "success"
        except Exception:
            status = "errored"
            raise
        finally:
            # Also on errors and cancellation, so a service frees the session's resources now.
            with anyio.CancelScope(shield=True):
                await session.close(status)
            directory.close()
        return await anyio.to_thread.run_sync(loop.result, data.report, started)


@attrs.define
class _InFlight:
    plan: StepPlan
    pending: PendingStep
    submitted: float


class _Loop:
    """One call of :meth:`Trainer.train` after data preparation: resume, steps, recovery."""

    def __init__(
        self,
        trainer: Trainer,
        session: TrainingSession,
        config: TrainConfig,
        directory: TrainingDirectory,
        pool: Sequence[ChatExample],
        on_step: StepCallback | None,
    ) -> None:
        self.trainer = trainer
        self.session = session
        self.config = config
        self.directory = directory
        self.pool = pool
        self.on_step = on_step
        self.total = config.total_steps(len(pool))
        self.resumed_from: int | None = None
        self._last_finish = 0.0
        # Every step's metrics by step (a retrained step's latest record wins), as the file
        # holds them: the result is built from here instead of reading the file back.
        self._metrics: dict[int, StepMetrics] = {}
        # The current epoch's order of the pool: one permutation per epoch, not per step.
        self._order: tuple[int, list[int]] = (-1, [])

    async def _last_resumable(self) -> Checkpoint | None:
        return await anyio.to_thread.run_sync(self.directory.last_resumable)

    async def run(self) -> None:
        """Train from the last saved state to the end, restarting the session after failures."""
        await anyio.to_thread.run_sync(self.directory.open)
        last = await self._last_resumable()
        self.resumed_from = None if last is None else last.step
        if last is not None:  # the steps trained before, as the result reports them
            earlier = await anyio.to_thread.run_sync(self.directory.metrics)
            self._metrics = {m.step: m for m in earlier}
        step = 0 if last is None else last.step
        recoveries = 0
        while step < self.total:
            state = None if last is None else last.state
            await self.session.start(state)
            if state is not None and recoveries == 0:
                log.info("resuming %s from step %d (%s)", self.directory.path, step, state)
            try:
                await self._steps(step)
                return
            except RecoverableTrainingError as exc:
                recoveries += 1
                if recoveries > self.trainer.max_recoveries:
                    raise TrainingError(
                        f"training requests kept failing after {self.trainer.max_recoveries} "
                        f"recoveries (last: {exc}). Saved checkpoints are in "
                        f"{self.directory.path}; run again to resume from the last one."
                    ) from exc
                last = await self._last_resumable()
                step = 0 if last is None else last.step
                log.warning(
                    "a training step failed (%s); recovering from %s (step %d), try %d of %d",
                    exc,
                    "scratch" if last is None else last.state,
                    step,
                    recoveries,
                    self.trainer.max_recoveries,
                )

    def plan(self, index: int) -> StepPlan:
        """The plan of 0-based step ``index``: its batch, learning rate and checkpoint."""
        config = self.config
        epoch, within = divmod(index, steps_per_epoch(config, len(self.pool)))
        if self._order[0] != epoch:
            self._order = (epoch, epoch_order(config, len(self.pool), epoch))
        start = within * config.batch_size
        number = index + 1
        saves = number % config.checkpoint_every == 0 or number == self.total
        return StepPlan(
            number=number,
            epoch=epoch,
            batch=[self.pool[i] for i in self._order[1][start : start + config.batch_size]],
            learning_rate=config.learning_rate_at(index, self.total),
            save_as=f"step_{number:06d}" if saves else None,
            final=number == self.total,
        )

    async def _steps(self, start: int) -> None:
        """Train steps ``start+1 .. total``, keeping up to ``lookahead`` of them in flight."""
        in_flight: collections.deque[_InFlight] = collections.deque()
        self._last_finish = time.perf_counter()
        for index in range(start, self.total):
            plan = self.plan(index)
            submitted = time.perf_counter()
            pending = await self.session.step(plan)
            in_flight.append(_InFlight(plan, pending, submitted))
            while len(in_flight) > self.session.lookahead:
                await self._finish(in_flight.popleft())
        while in_flight:
            await self._finish(in_flight.popleft())

    async def _finish(self, job: _InFlight) -> None:
        """Await one step, record its metrics and checkpoint, then call ``on_step``."""
        output = await job.pending.output()
        finished = time.perf_counter()
        plan = job.plan
        samples_seen = plan.number * self.config.batch_size
        metrics = StepMetrics(
            step=plan.number,
            epoch=plan.epoch,
            samples_seen=samples_seen,
            nll=output.nll,
            tokens=sum(map(len, plan.batch)),
            loss_tokens=output.loss_tokens,
            learning_rate=plan.learning_rate,
            # Wall time this step added to the run: from when the previous one finished (or
            # this one was submitted, if later) to when this one did.
            seconds=finished - max(self._last_finish, job.submitted),
        )
        self._last_finish = finished
        self._metrics[plan.number] = metrics
        # Handed to the operating system here, not forced to disk: the checkpoint below (or
        # the next one) syncs it, and steps after the last checkpoint are retrained on resume
        # anyway (see training/directory.py). A page-cache write needs no worker thread.
        self.directory.add_metrics(metrics, sync=False)
        if plan.save_as is not None:
            saved = await job.pending.saved()
            checkpoint = Checkpoint(
                step=plan.number,
                samples_seen=samples_seen,
                sampler=saved.sampler,
                state=saved.state,
                base_model=self.config.base_model,
                final=plan.final,
            )
            await anyio.to_thread.run_sync(self.directory.add_checkpoint, checkpoint)
        if self.on_step is not None:
            maybe = self.on_step(metrics)
            if maybe is not None:
                await maybe

    def result(self, data: DataReport, started: Any) -> TrainingResult:
        """The finished run, read back from the training directory and written to run.json."""
        result = TrainingResult(
            run_dir=self.directory.path,
            backend=self.trainer.backend,
            config=self.config,
            total_steps=self.total,
            checkpoints=self.directory.checkpoints(),
            metrics=[self._metrics[step] for step in sorted(self._metrics)],
            data=data,
            resumed_from=self.resumed_from,
            started_at=started,
            finished_at=utcnow(),
        )
        self.directory.write_run(result)
        return result


# --- names kept for one release ------------------------------------------------------------

if TYPE_CHECKING:
    # Type checkers see the old names as plain aliases: PEP 702's @deprecated cannot mark a type
    # alias (only classes, functions and overloads), so they are not flagged there; at run time
    # __getattr__ below returns them with a DeprecationWarning.
    RunDirectory = TrainingDirectory
    TrainingRun = TrainingResult

_RENAMED: dict[str, tuple[str, Any]] = {
    "RunDirectory": ("TrainingDirectory", TrainingDirectory),
    "TrainingRun": ("TrainingResult", TrainingResult),
}


def __getattr__(name: str) -> Any:
    if name in _RENAMED:
        new, value = _RENAMED[name]
        warnings.warn(
            f"tracedistill.training.{name} is deprecated; use {new}",
            DeprecationWarning,
            stacklevel=2,
        )
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
