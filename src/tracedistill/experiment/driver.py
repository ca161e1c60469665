"""The :class:`Experiment`: declares the runs and drives each through the stage modules."""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from tracedistill._version import __version__
from tracedistill.errors import ConfigurationError
from tracedistill.evaluation.benchmarks import Benchmark
from tracedistill.evaluation.evaluator import Evaluator, protocol_of
from tracedistill.experiment.collect import collect_results
from tracedistill.experiment.config import STAGES, Baseline, ExperimentSamplerFactory, Run
from tracedistill.experiment.evaluate import (
    checkpoint_label,
    evaluate_model,
    evaluate_stage,
    make_sampler,
)
from tracedistill.experiment.generate import draw_pool, generate_stage
from tracedistill.experiment.plan import Plan, make_plan
from tracedistill.experiment.rundir import ExperimentDirectory
from tracedistill.experiment.select import select_stage
from tracedistill.experiment.train import train_stage
from tracedistill.experiment.verify import verify_stage
from tracedistill.problems.dedup import Decontaminator
from tracedistill.records import Problem, TaskKind
from tracedistill.report import BASE, Results
from tracedistill.store.jsonl import JsonlTraceStore
from tracedistill.training.base import Trainer
from tracedistill.verifiers.base import Verifier

__all__ = ["Experiment"]

logger = logging.getLogger(__name__)


class Experiment:
    """A distillation study: runs, their stages, the baseline's evaluation and the report.

    Args:
        directory: the run directory (created if missing) that holds all state.
        runs: the runs of the study.
        trainer: the training backend (e.g. ``TinkerTrainer()`` or ``LocalTrainer()``).
        benchmarks: what every checkpoint and the baseline are evaluated on.
        baseline: the model evaluated as the study's baseline (the untrained student, under
            the label ``base``): a Sampler, or a model name or path that ``sampler_factory``
            (or the default backend) takes; None skips the baseline evaluation.
        verifiers: graders per task kind. They verify the traces (default: MathVerifier and
            CodeVerifier) and, when given, grade the evaluations too, in place of each
            benchmark's own grader; without one, a benchmark grades with its own
            (``verifier_factory``, e.g. a boxed-only ``MathVerifier``). Each evaluation records
            its grader's protocol, which the report shows.
        sampler_factory: ``(checkpoint or baseline, run or None) -> Sampler`` (default:
            :func:`tracedistill.evaluation.samplers.make_sampler` with the run's chat format).
        progress: progress bars (default: on unless ``TRACEDISTILL_PROGRESS=0``).
        base_model: deprecated name of ``baseline`` (kept one release; it warns): not to be
            confused with the student a run trains, ``TrainConfig.base_model``.
    """

    def __init__(
        self,
        directory: str | Path,
        runs: Sequence[Run],
        *,
        trainer: Trainer,
        benchmarks: Sequence[Benchmark] = (),
        baseline: Baseline | None = None,
        verifiers: Mapping[TaskKind | str, Verifier] | None = None,
        sampler_factory: ExperimentSamplerFactory | None = None,
        progress: bool | None = None,
        base_model: Baseline | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.folders = ExperimentDirectory(self.directory)
        self.runs = list(runs)
        names = [r.name for r in self.runs]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ConfigurationError(f"run names must be unique; repeated: {duplicated}")
        self.trainer = trainer
        self.benchmarks = list(benchmarks)
        bench_names = [b.name for b in self.benchmarks]
        if len(set(bench_names)) != len(bench_names):
            raise ConfigurationError(f"benchmark names must be unique: {bench_names}")
        self.baseline = _baseline(baseline, base_model)
        self._given_verifiers = {TaskKind(k): v for k, v in (verifiers or {}).items()}
        self._verifiers: dict[TaskKind, Verifier] = {}
        self.sampler_factory = sampler_factory
        self.progress = progress
        self._stores: dict[Path, JsonlTraceStore] = {}

    @property
    def base_model(self) -> Baseline | None:
        """Deprecated name of :attr:`baseline` (kept one release)."""
        warnings.warn(_RENAMED, DeprecationWarning, stacklevel=2)
        return self.baseline

    # --- paths ---------------------------------------------------------------------------------

    def run_dir(self, run: Run) -> Path:
        """The folder of one run."""
        return self.folders.run_dir(run)

    def store_dir(self, run: Run) -> Path:
        """The trace store of a run's teacher and task (shared by runs with the same ones)."""
        return self.folders.store_dir(run)

    def checkpoint_label(self, run: Run, step: int) -> str:
        """The evaluation label of a checkpoint."""
        return checkpoint_label(run, step)

    # --- public entry points ---------------------------------------------------------------------

    async def run(
        self, *, stages: Iterable[str] = STAGES, runs: Iterable[str] | None = None
    ) -> Results:
        """Run (or resume) the selected stages of the selected runs, then return the results.

        ``stages`` may name any subset of :data:`STAGES` (a skipped stage must have finished
        in an earlier call for a later stage that needs it). Stopping at any point (a crash,
        Ctrl-C, a cancel scope) loses nothing finished; calling again continues.
        """
        wanted = tuple(stages)
        unknown = [s for s in wanted if s not in STAGES]
        if unknown:
            raise ConfigurationError(f"unknown stage(s) {unknown}; stages are {list(STAGES)}")
        selected = self._select(runs)
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.folders.log_to_file():
            logger.info(
                "experiment %s: stages %s for runs %s (tracedistill %s)",
                self.directory,
                list(wanted),
                [r.name for r in selected],
                __version__,
            )
            try:
                async with self._evaluator() as evaluator:
                    for run in selected:
                        await self._run_one(run, wanted, evaluator)
                    if "evaluate" in wanted and self.baseline is not None:
                        await self._evaluate_base(evaluator)
            finally:
                await self._close()
                with anyio.CancelScope(shield=True):  # written even when cancelled
                    await self._write_provenance()
        return await anyio.to_thread.run_sync(self.results)

    def run_sync(self, **kwargs: Any) -> Results:
        """:meth:`run` for scripts; in a notebook (a running event loop) ``await`` :meth:`run`.

        Raises:
            RuntimeError: called inside a running event loop (a Jupyter notebook, an async
                function); the message gives the ``await experiment.run()`` form to use.
        """
        loop = _running_loop()
        if loop is not None:
            args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
            raise RuntimeError(
                f"Experiment.run_sync() cannot start an event loop inside the running {loop} "
                f"loop (a notebook or an async function runs one): use "
                f"`results = await experiment.run({args})` instead"
            )
        return anyio.run(lambda: self.run(**kwargs))

    def plan(self, *, unavailable: Mapping[str, str] | None = None) -> Plan:
        """Estimate what :meth:`run` would do (requests, tokens, steps, cost) without any key.

        ``unavailable`` maps what could not be included (a benchmark or run whose data is not
        reachable) to why; the plan lists it.
        """
        return make_plan(
            self.folders,
            self.runs,
            self.benchmarks,
            evaluates_base=self.baseline is not None,
            unavailable=unavailable,
        )

    def results(self) -> Results:
        """The study's tables from what is on disk now (finished or not); runs nothing.

        A stored evaluation that cannot be read is left out with a warning naming its file
        and line, and listed in the results (``Results.unreadable``).
        """
        graders: dict[str, tuple[str, str | None]] = {}

        def grader_of(name: str) -> tuple[str, str | None]:
            # Only for evaluations stored before protocols were recorded (built once each).
            if name not in graders:
                bench = next(b for b in self.benchmarks if b.name == name)
                verifier = self._given_verifiers.get(bench.kind) or bench.make_verifier()
                graders[name] = (Evaluator.grader_id(bench, verifier), protocol_of(verifier, bench))
            return graders[name]

        return collect_results(self.folders, self.runs, self.benchmarks, grader_of=grader_of)

    # --- stages ----------------------------------------------------------------------------------

    async def _run_one(self, run: Run, stages: Sequence[str], evaluator: Evaluator) -> None:
        status = self.folders.stages(run)
        for stage in STAGES:
            if stage not in stages:
                continue
            if stage != "evaluate" and status.done(stage):
                logger.info("%s: %s already finished", run.name, stage)
                continue
            started = time.monotonic()
            logger.info("%s: %s", run.name, stage)
            info = await self._stage(stage, run, evaluator)
            info["seconds"] = round(time.monotonic() - started, 3)
            status.finish(stage, info)
            await self._write_provenance()

    async def _stage(self, stage: str, run: Run, evaluator: Evaluator) -> dict[str, Any]:
        """Run one stage of one run through its module; return what it reports."""
        if stage == "evaluate":
            return await evaluate_stage(
                run,
                evaluator=evaluator,
                benchmarks=self.benchmarks,
                training_dir=self.folders.training_dir(run),
                factory=self.sampler_factory,
            )
        if stage == "train":
            return await train_stage(
                run.name,
                trainer=self.trainer,
                config=run.train,
                store=await self._store(run),
                train_set=self.folders.train_set_file(run),
                directory=self.folders.training_dir(run),
            )
        pool = await self._pool(run)
        store = await self._store(run)
        if stage == "generate":
            return await generate_stage(run, pool, store, progress=self.progress)
        found: dict[str, Any] = {
            "teacher": run.teacher.name,
            "task": run.task,
            "pool": pool,
            "store": store,
        }
        verifier = self._verifier(run.task)
        if stage == "verify":
            return await verify_stage(run.name, **found, verifier=verifier, progress=self.progress)
        train_set = self.folders.train_set_file(run)
        return await select_stage(
            run.name, **found, filters=run.filters, verifier=verifier, train_set=train_set
        )

    async def _evaluate_base(self, evaluator: Evaluator) -> None:
        if not self.benchmarks:
            return
        logger.info("evaluating the baseline")
        sampler = make_sampler(self.baseline, None, self.sampler_factory)
        await evaluate_model(evaluator, sampler, self.benchmarks, BASE)

    # --- helpers ---------------------------------------------------------------------------------

    def _select(self, names: Iterable[str] | None) -> list[Run]:
        if names is None:
            return list(self.runs)
        wanted = list(names)
        known = {r.name for r in self.runs}
        missing = [n for n in wanted if n not in known]
        if missing:
            raise ConfigurationError(f"unknown run(s) {missing}; runs are {sorted(known)}")
        return [r for r in self.runs if r.name in wanted]

    def _verifier(self, task: TaskKind) -> Verifier:
        given = self._given_verifiers.get(task)
        if given is not None:
            return given
        verifier = self._verifiers.get(task)
        if verifier is None:
            if task is TaskKind.MATH:
                from tracedistill.verifiers.math import MathVerifier

                verifier = MathVerifier()
            else:
                from tracedistill.verifiers.code import CodeVerifier

                verifier = CodeVerifier()
            self._verifiers[task] = verifier
        return verifier

    @contextlib.asynccontextmanager
    async def _evaluator(self) -> AsyncIterator[Evaluator]:
        # Only the graders the user gave: otherwise each benchmark grades with its own (its
        # verifier_factory, e.g. a boxed-only MathVerifier), which the evaluator closes.
        verifiers: dict[TaskKind | str, Verifier] = {k: v for k, v in self._given_verifiers.items()}
        async with Evaluator(self.directory, verifiers=verifiers, progress=self.progress) as ev:
            yield ev

    async def _close(self) -> None:
        for verifier in self._verifiers.values():
            with anyio.CancelScope(shield=True):
                await verifier.aclose()
        self._verifiers.clear()
        for store in self._stores.values():
            store.close()
        self._stores.clear()

    async def _store(self, run: Run) -> JsonlTraceStore:
        path = self.store_dir(run)
        store = self._stores.get(path)
        if store is None:
            store = self._stores[path] = await JsonlTraceStore.aopen(path)
        return store

    def _decontaminator(self) -> Decontaminator | None:
        if not self.benchmarks:
            return None
        return Decontaminator(
            {b.name: {p.id: p.prompt for p in b.problems} for b in self.benchmarks}
        )

    async def _pool(self, run: Run) -> list[Problem]:
        path = self.folders.pool_file(run)
        # The decontaminator indexes every benchmark prompt: built only when a pool is drawn.
        drawing = run.filters.decontaminate and not path.is_file()
        decontaminate = self._decontaminator() if drawing else None
        return await draw_pool(run, path, decontaminate=decontaminate, progress=self.progress)

    async def _write_provenance(self) -> None:
        """Rewrite ``experiment.json`` in a worker thread: it opens and scans every trace store
        that is not open and reads each run's checkpoints, which would block the event loop.
        """
        stores = dict(self._stores)
        await anyio.to_thread.run_sync(
            lambda: self.folders.write_provenance(self.runs, self.benchmarks, self.baseline, stores)
        )


_RENAMED = (
    "Experiment(base_model=...) is now Experiment(baseline=...) (the model evaluated as the "
    "baseline, not the student a run trains, TrainConfig.base_model); base_model= goes away "
    "in the next release"
)


def _baseline(baseline: Baseline | None, base_model: Baseline | None) -> Baseline | None:
    """The baseline given under its name or under the deprecated ``base_model``."""
    if base_model is None:
        return baseline
    if baseline is not None:
        raise ConfigurationError(
            "give the baseline once: baseline= (base_model= is its deprecated name)"
        )
    warnings.warn(_RENAMED, DeprecationWarning, stacklevel=3)
    return base_model


def _running_loop() -> str | None:
    """``"asyncio"`` when an asyncio event loop runs in this thread (a notebook), else None."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return None
    return "asyncio"
