"""The whole study in one object: runs declared, stages driven, everything in one directory.

An :class:`Experiment` holds a list of :class:`Run` (a teacher, a task, a problem pool and a
training configuration each) and drives every run through five stages::

    generate -> verify -> filter -> train -> evaluate

plus one evaluation of the base model. Each stage is resumable on its own (stored request keys,
stored verdicts, saved checkpoints, per-problem evaluation logs), so calling :meth:`Experiment.run`
again after a crash or a Ctrl-C continues where it stopped and redoes nothing that finished.

The run directory::

    experiment.json              provenance: version, configuration hash, benchmark hashes,
                                 Tinker run ids, spend (rewritten after each stage)
    experiment.log               the log of every call to run()
    traces/<teacher>-<task>/     one TraceStore per teacher and task (shared by runs that only
                                 differ in training, so no trace is bought twice)
    runs/<run>/pool.jsonl        the run's problem pool (sampled once, then reused)
    runs/<run>/train_set.json    the request keys selected for training, and why the rest not
    runs/<run>/training/         the trainer's run directory (config, metrics, checkpoints)
    runs/<run>/stages.json       which stages finished, with their configuration hash
    evaluations/<label>/<benchmark>.jsonl   per-problem responses and grades
"""

from __future__ import annotations

import contextlib
import html
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import attrs
import orjson

from tracedistill import _json
from tracedistill._html import table_html, table_markdown
from tracedistill._version import __version__
from tracedistill.chat import LengthReport
from tracedistill.clients.base import Sampler
from tracedistill.clients.ratelimit import RateLimits
from tracedistill.errors import ConfigurationError, TeacherError
from tracedistill.evaluation.benchmarks import Benchmark
from tracedistill.evaluation.evaluator import Evaluator
from tracedistill.evaluation.results import EvalStore
from tracedistill.problems.base import ProblemSource
from tracedistill.problems.dedup import Decontaminator
from tracedistill.records import Problem, TaskKind, Trace, content_hash
from tracedistill.report import BASE, Results, RunInfo, Score, TraceQuality, trace_quality
from tracedistill.store.jsonl import JsonlTraceStore
from tracedistill.teachers.base import Teacher
from tracedistill.teachers.engine import GenerationSummary, generate
from tracedistill.training.base import DataReport, TrainConfig, Trainer, TrainingDirectory
from tracedistill.verifiers.base import Verifier

__all__ = ["STAGES", "Experiment", "Filters", "Generation", "Plan", "Run"]

logger = logging.getLogger(__name__)

#: The stages of every run, in order.
STAGES = ("generate", "verify", "filter", "train", "evaluate")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

#: Called with the evaluated object to build its sampler (a Checkpoint or the base model).
SamplerFactory = Callable[[Any, "Run | None"], Sampler]


def _name(_inst: object, _attr: attrs.Attribute[Any], value: str) -> None:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ConfigurationError(
            f"run name {value!r} must be letters, digits, '.', '_' or '-' (it names a folder)"
        )


@attrs.frozen(slots=True, kw_only=True)
class Generation:
    """How a run's traces are generated.

    ``expected_completion_tokens`` and ``expected_pass_rate`` only feed the dry run's estimate
    (defaults: half of ``max_tokens``, and 70% as the study's Sonnet pools had).
    """

    samples_per_problem: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    concurrency: int = attrs.field(default=64, validator=attrs.validators.ge(1))
    budget_usd: float | None = None
    limits: RateLimits | None = None
    resample_truncated: bool = False
    expected_completion_tokens: int | None = None
    expected_pass_rate: float = attrs.field(
        default=0.7, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)]
    )


@attrs.frozen(slots=True, kw_only=True)
class Filters:
    """Which verified traces a run trains on.

    Attributes:
        correct_only: keep only traces with a passing verdict.
        max_completion_tokens: drop traces longer than this (provider-counted completion
            tokens); the trainer's tokenizer-exact length policy applies on top.
        one_per_problem: keep at most one trace per problem (the lowest sample index).
        decontaminate: drop pool problems that share a word 8-gram with a benchmark prompt.
        include_truncated: keep responses cut at ``max_tokens`` (they rarely hold an answer).
    """

    correct_only: bool = True
    max_completion_tokens: int | None = None
    one_per_problem: bool = True
    decontaminate: bool = True
    include_truncated: bool = False


def _task(value: TaskKind | str) -> TaskKind:
    try:
        return TaskKind(value)
    except ValueError:
        raise ConfigurationError(f"task must be 'math' or 'code', got {value!r}") from None


@attrs.frozen(slots=True, kw_only=True, eq=False)
class Run:
    """One training run of the study: a teacher's traces on one task, then a student.

    Args:
        name: the run's name (a folder name; e.g. ``sonnet-math``).
        task: ``math`` or ``code``; decides the verifier and the in-domain benchmark.
        teacher: who answers the problems (a replay teacher brings its own problems).
        train: the training configuration.
        problems: the problem source or list (default: the teacher's own, for replay).
        pool_size: how many problems to draw (None: all of them).
        seed: the pool's sampling seed.
        generation: concurrency, budget, samples per problem.
        filters: which verified traces are trained on.
    """

    name: str = attrs.field(validator=_name)
    task: TaskKind = attrs.field(converter=_task)
    teacher: Teacher
    train: TrainConfig
    problems: ProblemSource | Iterable[Problem] | None = None
    pool_size: int | None = None
    seed: int = 0
    generation: Generation = attrs.field(factory=Generation)
    filters: Filters = attrs.field(factory=Filters)

    def __attrs_post_init__(self) -> None:
        if self.problems is None and not hasattr(self.teacher, "problems"):
            raise ConfigurationError(
                f"run {self.name!r}: give problems= (the teacher {self.teacher.name!r} has no "
                "problems of its own)"
            )
        if self.pool_size is not None and self.pool_size < 1:
            raise ConfigurationError(f"run {self.name!r}: pool_size must be >= 1")

    def describe(self) -> dict[str, Any]:
        """A JSON-compatible description (no secret) used for provenance and the stage hash."""
        return {
            "name": self.name,
            "task": str(self.task),
            "teacher": dict(self.teacher.describe()),
            "train": self.train.to_dict(),
            "problems": _describe_problems(self.problems, self.teacher),
            "pool_size": self.pool_size,
            "seed": self.seed,
            "generation": {
                "samples_per_problem": self.generation.samples_per_problem,
                "resample_truncated": self.generation.resample_truncated,
            },
            "filters": attrs.asdict(self.filters),
        }


def _describe_problems(problems: object, teacher: Teacher) -> str:
    if problems is None:
        return f"from teacher {teacher.name}"
    name = getattr(problems, "name", None)
    return f"{type(problems).__name__}:{name}" if name else type(problems).__name__


@attrs.frozen(slots=True, kw_only=True)
class PlanRow:
    """The dry-run estimate of one run."""

    run: str
    teacher: str
    task: str
    pool: int | None
    requests: int | None
    stored: int
    prompt_tokens: int | None
    completion_tokens: int | None
    generation_usd: float | None
    train_examples: int | None
    train_steps: int | None
    checkpoints: int | None
    eval_requests: int
    note: str = ""


def _unavailable(
    value: Mapping[str, str] | Iterable[tuple[str, str]],
) -> tuple[tuple[str, str], ...]:
    items = value.items() if isinstance(value, Mapping) else value
    return tuple((str(what), str(why)) for what, why in items)


@attrs.frozen(slots=True, kw_only=True)
class Plan:
    """What :meth:`Experiment.run` would do, with counts and an estimated cost. No key needed.

    ``unavailable`` names what the plan could not include and why (a benchmark or a run whose
    data is not reachable offline), as ``(what, why)`` pairs; the text and HTML forms list them.
    """

    rows: tuple[PlanRow, ...]
    base_eval_requests: int
    benchmarks: tuple[str, ...]
    unavailable: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_unavailable)

    @property
    def generation_usd(self) -> float | None:
        """Estimated generation spend over every run (None if any price is unknown)."""
        costs = [r.generation_usd for r in self.rows if r.requests]
        return None if any(c is None for c in costs) else sum(c or 0.0 for c in costs)

    def with_unavailable(self, what: str, why: str) -> Plan:
        """A copy of the plan with one more item marked unavailable."""
        return attrs.evolve(self, unavailable=(*self.unavailable, (what, why)))

    def table(self) -> list[dict[str, Any]]:
        """One row per run (``None`` where a figure is unknown) and a total row."""
        rows: list[dict[str, Any]] = [
            {
                "run": r.run,
                "teacher": r.teacher,
                "task": r.task,
                "pool": r.pool,
                "to request": r.requests,
                "already stored": r.stored,
                "prompt tokens": r.prompt_tokens,
                "completion tokens": r.completion_tokens,
                "generation cost": r.generation_usd,
                "train examples": r.train_examples,
                "steps": r.train_steps,
                "checkpoints": r.checkpoints,
                "eval requests": r.eval_requests,
            }
            for r in self.rows
        ]
        rows.append(
            {
                "run": "total",
                "to request": _total(r.requests for r in self.rows),
                "already stored": sum(r.stored for r in self.rows),
                "prompt tokens": _total(r.prompt_tokens for r in self.rows),
                "completion tokens": _total(r.completion_tokens for r in self.rows),
                "generation cost": self.generation_usd,
                "eval requests": sum(r.eval_requests for r in self.rows) + self.base_eval_requests,
            }
        )
        return rows

    def _display_rows(self) -> list[dict[str, str]]:
        def fmt(key: str, value: Any) -> str:
            if value is None:
                return "—" if key in ("teacher", "task") else "?"
            if key == "generation cost":
                return f"${value:,.2f}"
            return f"{value:,}" if isinstance(value, int) else str(value)

        return [{k: fmt(k, v) for k, v in row.items()} for row in self.table()]

    def _notes(self) -> list[str]:
        notes = [
            f"benchmarks: {', '.join(self.benchmarks) or 'none'}; base model evaluation: "
            f"{self.base_eval_requests:,} requests",
        ]
        total = self.generation_usd
        notes.append(
            "estimated generation cost: "
            + (f"${total:,.2f}" if total is not None else "unknown for some runs (see notes)")
        )
        notes.extend(f"{r.run}: {r.note}" for r in self.rows if r.note)
        return notes

    def __str__(self) -> str:
        lines = [
            "Experiment plan (dry run: nothing is requested, trained or evaluated)",
            "",
            table_markdown(self._display_rows()),
            "",
        ]
        lines.extend(f"- {note}" for note in self._notes())
        if self.unavailable:
            lines.append("")
            lines.append("Not available (left out of the figures above):")
            lines.extend(f"- {what}: {why}" for what, why in self.unavailable)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.__str__()

    def _repr_html_(self) -> str:
        parts = [
            "<p><b>Experiment plan</b> (dry run: nothing is requested, trained or evaluated)</p>",
            table_html(self._display_rows()),
            "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in self._notes()) + "</ul>",
        ]
        if self.unavailable:
            parts.append("<p><b>Not available</b> (left out of the figures above):</p>")
            parts.append(
                "<ul>"
                + "".join(
                    f"<li><b>{html.escape(what)}</b>: {html.escape(why)}</li>"
                    for what, why in self.unavailable
                )
                + "</ul>"
            )
        return "".join(parts)


def _total(values: Iterable[int | None]) -> int | None:
    items = list(values)
    return None if any(v is None for v in items) else sum(v or 0 for v in items)


class Experiment:
    """A distillation study: runs, their stages, the base-model evaluation and the report.

    Args:
        directory: the run directory (created if missing) that holds all state.
        runs: the runs of the study.
        trainer: the training backend (e.g. ``TinkerTrainer()`` or ``LocalTrainer()``).
        benchmarks: what every checkpoint and the base model are evaluated on.
        base_model: what to evaluate as the base model (a Sampler, or anything the sampler
            factory takes); None skips the base evaluation.
        verifiers: graders per task kind (default: MathVerifier and CodeVerifier); they verify
            the traces and grade the evaluations.
        sampler_factory: ``(checkpoint or base model, run or None) -> Sampler`` (default:
            :func:`tracedistill.evaluation.samplers.make_sampler` with the run's chat format).
        progress: progress bars (default: on unless ``TRACEDISTILL_PROGRESS=0``).
    """

    def __init__(
        self,
        directory: str | Path,
        runs: Sequence[Run],
        *,
        trainer: Trainer,
        benchmarks: Sequence[Benchmark] = (),
        base_model: Any | None = None,
        verifiers: Mapping[TaskKind | str, Verifier] | None = None,
        sampler_factory: SamplerFactory | None = None,
        progress: bool | None = None,
    ) -> None:
        self.directory = Path(directory)
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
        self.base_model = base_model
        self._given_verifiers = {TaskKind(k): v for k, v in (verifiers or {}).items()}
        self._verifiers: dict[TaskKind, Verifier] = {}
        self.sampler_factory = sampler_factory
        self.progress = progress
        self._stores: dict[Path, JsonlTraceStore] = {}

    # --- paths ---------------------------------------------------------------------------------

    def run_dir(self, run: Run) -> Path:
        """The folder of one run."""
        return self.directory / "runs" / run.name

    def store_dir(self, run: Run) -> Path:
        """The trace store of a run's teacher and task (shared by runs with the same ones)."""
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", run.teacher.name).strip("_") or "teacher"
        return self.directory / "traces" / f"{slug}-{run.task}"

    def checkpoint_label(self, run: Run, step: int) -> str:
        """The evaluation label of a checkpoint."""
        return f"{run.name}@{step}"

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
        with self._log_to_file():
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
                    if "evaluate" in wanted and self.base_model is not None:
                        await self._evaluate_base(evaluator)
            finally:
                await self._close()
                self._write_provenance()
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
        rows = [self._plan_row(run) for run in self.runs]
        base = sum(len(b.problems) for b in self.benchmarks) if self.base_model is not None else 0
        return Plan(
            rows=tuple(rows),
            base_eval_requests=base,
            benchmarks=tuple(b.name for b in self.benchmarks),
            unavailable=dict(unavailable or {}),
        )

    def results(self) -> Results:
        """The study's tables from what is on disk now (finished or not); runs nothing."""
        scores: list[Score] = []
        store = EvalStore(self.directory)
        labels = set(store.labels()) if (self.directory / "evaluations").is_dir() else set()
        bench_names = [b.name for b in self.benchmarks]
        for bench in bench_names:
            if BASE in labels:
                with contextlib.suppress(Exception):
                    scores.append(self._score(store, BASE, bench, BASE, None, None))
        for run in self.runs:
            for ckpt in TrainingDirectory(self.run_dir(run) / "training").checkpoints():
                label = self.checkpoint_label(run, ckpt.step)
                if label not in labels:
                    continue
                for bench in bench_names:
                    with contextlib.suppress(Exception):
                        scores.append(
                            self._score(store, label, bench, run.name, ckpt.step, ckpt.samples_seen)
                        )
        infos = [
            RunInfo(
                name=r.name,
                teacher=r.teacher.name,
                task=str(r.task),
                in_domain=self._in_domain(r) or "",
            )
            for r in self.runs
            if self._in_domain(r)
        ]
        return Results(scores, infos, benchmarks=bench_names, quality=self._quality())

    # --- stages ----------------------------------------------------------------------------------

    async def _run_one(self, run: Run, stages: Sequence[str], evaluator: Evaluator) -> None:
        folder = self.run_dir(run)
        folder.mkdir(parents=True, exist_ok=True)
        status = _Stages(folder / "stages.json", content_hash(run.describe()))
        for stage in STAGES:
            if stage not in stages:
                continue
            if stage != "evaluate" and status.done(stage):
                logger.info("%s: %s already finished", run.name, stage)
                continue
            started = time.monotonic()
            logger.info("%s: %s", run.name, stage)
            if stage == "generate":
                info = await self._generate(run)
            elif stage == "verify":
                info = await self._verify(run)
            elif stage == "filter":
                info = await self._filter(run)
            elif stage == "train":
                info = await self._train(run)
            else:
                info = await self._evaluate_run(run, evaluator)
            info["seconds"] = round(time.monotonic() - started, 3)
            status.finish(stage, info)
            self._write_provenance()

    async def _generate(self, run: Run) -> dict[str, Any]:
        pool = await self._pool(run)
        store = await self._store(run)
        gen = run.generation
        summary: GenerationSummary = await generate(
            run.teacher,
            pool,
            store,
            n=gen.samples_per_problem,
            concurrency=gen.concurrency,
            budget_usd=gen.budget_usd,
            limits=gen.limits,
            resample_truncated=gen.resample_truncated,
            progress=self.progress,
            total=len(pool),
        )
        if summary.stopped is not None:
            raise TeacherError(
                f"run {run.name!r}: generation stopped early ({summary.stopped}): "
                f"{summary.error}. What was answered is stored; fix the cause and run again."
            )
        return {
            "pool": len(pool),
            "done": summary.done,
            "skipped": summary.skipped,
            "failed": summary.failed,
            "truncated": summary.truncated,
            "spend_usd": summary.spend_usd,
        }

    async def _verify(self, run: Run) -> dict[str, Any]:
        pool = await self._pool(run)
        ids = {p.id for p in pool}
        store = await self._store(run)
        verifier = self._verifier(run.task)
        pairs: list[tuple[Problem, Trace]] = []
        by_id = {p.id: p for p in pool}
        for trace in store.traces(teacher=run.teacher.name, kind=run.task):
            if trace.problem_id in ids:
                pairs.append((by_id[trace.problem_id], trace))
        verdicts = await verifier.verify_many(pairs, store=store, progress=self.progress)
        passed = sum(v.passed for v in verdicts)
        logger.info("%s: %d of %d traces verified correct", run.name, passed, len(verdicts))
        return {"verified": len(verdicts), "passed": passed}

    async def _filter(self, run: Run) -> dict[str, Any]:
        pool = await self._pool(run)
        ids = {p.id for p in pool}
        store = await self._store(run)
        verifier = self._verifier(run.task)
        f = run.filters
        chosen: dict[str, Trace] = {}
        seen = dropped_length = 0
        for trace in store.traces(
            teacher=run.teacher.name,
            kind=run.task,
            correct=True if f.correct_only else None,
            verifier=verifier.name,
            verifier_version=verifier.version,
            include_truncated=f.include_truncated,
        ):
            if trace.problem_id not in ids:
                continue
            seen += 1
            limit = f.max_completion_tokens
            if limit is not None and trace.usage.completion_tokens > limit:
                dropped_length += 1
                continue
            key = trace.problem_id if f.one_per_problem else trace.key
            current = chosen.get(key)
            if current is None or trace.sample_index < current.sample_index:
                chosen[key] = trace
        keys = [t.key for t in chosen.values()]
        report = {
            "pool": len(pool),
            "eligible": seen,
            "dropped_too_long": dropped_length,
            "dropped_duplicate_problem": seen - dropped_length - len(keys),
            "selected": len(keys),
        }
        if not keys:
            raise ConfigurationError(
                f"run {run.name!r}: no trace passed the filters ({report}); nothing to train on"
            )
        _write_json(self.run_dir(run) / "train_set.json", {"report": report, "keys": keys})
        logger.info("%s: training set %s", run.name, report)
        return report

    async def _train(self, run: Run) -> dict[str, Any]:
        path = self.run_dir(run) / "train_set.json"
        if not path.is_file():
            raise ConfigurationError(f"run {run.name!r}: run the filter stage before training")
        keys: list[str] = orjson.loads(path.read_bytes())["keys"]
        store = await self._store(run)
        traces = [t for k in keys if (t := store.get(k)) is not None]
        training = await self.trainer.train(traces, run.train, self.run_dir(run) / "training")
        final = training.final_checkpoint
        return {
            "steps": training.total_steps,
            "checkpoints": len(training.checkpoints),
            "final_nll": training.metrics[-1].nll if training.metrics else None,
            "final_sampler": None if final is None or final.sampler is None else final.sampler.path,
        }

    async def _evaluate_run(self, run: Run, evaluator: Evaluator) -> dict[str, Any]:
        checkpoints = TrainingDirectory(self.run_dir(run) / "training").checkpoints()
        checkpoints = [c for c in checkpoints if c.sampler is not None]
        if not checkpoints:
            raise ConfigurationError(f"run {run.name!r}: no checkpoint to evaluate; train first")
        done = 0
        seen_steps: set[int] = set()
        for ckpt in checkpoints:
            if ckpt.step in seen_steps:
                continue
            seen_steps.add(ckpt.step)
            label = self.checkpoint_label(run, ckpt.step)
            await self._evaluate_model(evaluator, ckpt, run, label)
            done += 1
        return {"checkpoints_evaluated": done}

    async def _evaluate_base(self, evaluator: Evaluator) -> None:
        logger.info("evaluating the base model")
        await self._evaluate_model(evaluator, self.base_model, None, BASE)

    async def _evaluate_model(
        self, evaluator: Evaluator, model: Any, run: Run | None, label: str
    ) -> None:
        if not self.benchmarks:
            return
        sampler = self._make_sampler(model, run)
        # Not `async with`: a sampler starts (loads a model, opens a session) on its first
        # request, so a finished evaluation resumed costs nothing.
        try:
            for bench in self.benchmarks:
                await evaluator.evaluate(sampler, bench, label=label)
        finally:
            with anyio.CancelScope(shield=True):
                await sampler.aclose()

    # --- helpers ---------------------------------------------------------------------------------

    def _make_sampler(self, model: Any, run: Run | None) -> Sampler:
        if isinstance(model, Sampler):
            return model
        if self.sampler_factory is not None:
            return self.sampler_factory(model, run)
        from tracedistill.evaluation.samplers import make_sampler

        kwargs: dict[str, Any] = {}
        if run is not None:
            kwargs["chat_format"] = run.train.chat_format
            kwargs["base_model"] = run.train.base_model
        return make_sampler(model, **kwargs)

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
        kinds = {b.kind for b in self.benchmarks}
        verifiers: dict[TaskKind | str, Verifier] = {k: self._verifier(k) for k in kinds}
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
        path = self.run_dir(run) / "pool.jsonl"
        if path.is_file():
            return await anyio.to_thread.run_sync(_read_problems, path)
        source = run.problems if run.problems is not None else _TeacherProblems(run)
        if not isinstance(source, ProblemSource):
            source = _ListSource(list(source), run.task)
        decontaminate = self._decontaminator() if run.filters.decontaminate else None
        pool = await source.sample(
            run.pool_size, run.seed, decontaminate=decontaminate, progress=self.progress
        )
        problems = [p for p in pool if p.kind is run.task]
        if len(problems) != len(pool):
            logger.warning(
                "%s: %d problems of another task left out of the pool",
                run.name,
                len(pool) - len(problems),
            )
        _write_json(self.run_dir(run) / "pool_report.json", pool.report.to_dict())
        await anyio.to_thread.run_sync(_write_problems, path, problems)
        logger.info("%s: pool of %d problems", run.name, len(problems))
        return problems

    def _in_domain(self, run: Run) -> str | None:
        for bench in self.benchmarks:
            if bench.kind is run.task:
                return bench.name
        return None

    def _score(
        self,
        store: EvalStore,
        label: str,
        bench: str,
        model: str,
        step: int | None,
        samples: int | None,
    ) -> Score:
        result = store.load(label, bench)
        return Score.from_evaluation(result, model=model, step=step, samples=samples)

    def _quality(self) -> list[TraceQuality]:
        rows: list[TraceQuality] = []
        seen: set[Path] = set()
        for run in self.runs:
            path = self.store_dir(run)
            if path in seen or not (path / "traces.jsonl").is_file():
                continue
            seen.add(path)
            try:
                store = JsonlTraceStore(path, readonly=True)
            except Exception as exc:  # a report must not fail on one unreadable store
                logger.warning("trace quality of %s unavailable: %s", path, exc)
                continue
            with store:
                rows.append(
                    trace_quality(
                        store,
                        teacher=run.teacher.name,
                        task=run.task,
                        length=self._length_report(run),
                    )
                )
        return rows

    def _length_report(self, run: Run) -> LengthReport | None:
        """What the trainer's length policy did to the run's data (student tokens), if known."""
        for other in self.runs:
            if self.store_dir(other) != self.store_dir(run):
                continue
            path = self.run_dir(other) / "training" / "data.json"
            if path.is_file():
                try:
                    return DataReport.from_dict(orjson.loads(path.read_bytes())).length
                except Exception as exc:  # a report must not fail on one unreadable file
                    logger.warning("data report %s unreadable: %s", path, exc)
        return None

    def _plan_row(self, run: Run) -> PlanRow:
        notes: list[str] = []
        pool_file = self.run_dir(run) / "pool.jsonl"
        problems: list[Problem] | None = None
        if pool_file.is_file():
            problems = _read_problems(pool_file)
        elif isinstance(run.problems, list | tuple):
            problems = list(run.problems)[: run.pool_size]
        pool = len(problems) if problems is not None else run.pool_size
        gen = run.generation
        requests = None if pool is None else pool * gen.samples_per_problem
        stored = 0
        store_path = self.store_dir(run)
        if (store_path / "traces.jsonl").is_file():
            with JsonlTraceStore(store_path, readonly=True) as store:
                if problems is not None:
                    for p in problems:
                        for i in range(gen.samples_per_problem):
                            stored += store.has(run.teacher.request_key(p, i))
                else:
                    stored = sum(1 for _ in store.traces(teacher=run.teacher.name))
        remaining = None if requests is None else max(0, requests - stored)
        if problems is not None and problems:
            mean_prompt = sum(
                sum(len(m.content) for m in run.teacher.messages(p)) / 4 for p in problems[:200]
            ) / min(len(problems), 200)
        else:
            mean_prompt = 200.0
            notes.append("prompt size assumed 200 tokens (pool not drawn yet)")
        params = run.teacher.params
        max_tokens = params.max_tokens if params is not None else None
        expected_out = gen.expected_completion_tokens or (max_tokens // 2 if max_tokens else None)
        prompt_tokens = None if remaining is None else int(remaining * mean_prompt)
        completion_tokens = (
            None if remaining is None or expected_out is None else remaining * expected_out
        )
        cost: float | None = None
        pricing = run.teacher.pricing
        if remaining == 0:
            cost = 0.0
        elif not getattr(run.teacher, "rate_limited", True) and run.teacher.reports_cost:
            cost = 0.0  # replayed traces cost nothing
        elif pricing is not None and prompt_tokens is not None and completion_tokens is not None:
            from tracedistill.records import TokenUsage

            cost = pricing.cost(
                TokenUsage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
            )
            if max_tokens is not None and remaining is not None:
                worst = pricing.cost(
                    TokenUsage(
                        prompt_tokens=prompt_tokens, completion_tokens=remaining * max_tokens
                    )
                )
                notes.append(
                    f"worst case ${worst:,.2f} if every response used max_tokens={max_tokens}"
                )
        else:
            notes.append(
                "no price known: give the teacher pricing= for an estimate (the provider's "
                "reported cost is used at run time)"
            )
        expected_correct = None if requests is None else int(requests * gen.expected_pass_rate)
        examples = (
            None
            if expected_correct is None
            else min(expected_correct, run.train.num_samples or expected_correct)
        )
        steps = None if examples is None else run.train.total_steps(max(examples, 1))
        every = run.train.checkpoint_every
        checkpoints = None if steps is None else math.ceil(steps / every) if every else 1
        bench_size = sum(len(b.problems) for b in self.benchmarks)
        eval_requests = (checkpoints or 0) * bench_size
        if expected_out is not None:
            notes.append(
                f"expects ~{expected_out} completion tokens and a {gen.expected_pass_rate:.0%} "
                "pass rate per response"
            )
        return PlanRow(
            run=run.name,
            teacher=run.teacher.name,
            task=str(run.task),
            pool=pool,
            requests=remaining,
            stored=stored,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            generation_usd=cost,
            train_examples=examples,
            train_steps=steps,
            checkpoints=checkpoints,
            eval_requests=eval_requests,
            note="; ".join(notes),
        )

    def _write_provenance(self) -> None:
        runs: dict[str, Any] = {}
        for run in self.runs:
            stages_file = self.run_dir(run) / "stages.json"
            ckpts = TrainingDirectory(self.run_dir(run) / "training").checkpoints()
            tinker_ids = sorted(
                {
                    str(c.sampler.path).removeprefix("tinker://").split("/")[0]
                    for c in ckpts
                    if c.sampler is not None and c.sampler.is_tinker
                }
            )
            runs[run.name] = {
                "config": run.describe(),
                "config_hash": content_hash(run.describe()),
                "stages": orjson.loads(stages_file.read_bytes()) if stages_file.is_file() else {},
                "tinker_run_ids": tinker_ids,
            }
        spend: dict[str, float] = {}
        for path in sorted({self.store_dir(r) for r in self.runs}):
            if (path / "traces.jsonl").is_file():
                store = self._stores.get(path)
                if store is not None:
                    spend[path.name] = store.spend_usd()
                else:
                    with JsonlTraceStore(path, readonly=True) as ro:
                        spend[path.name] = ro.spend_usd()
        data = {
            "tracedistill_version": __version__,
            "config_hash": content_hash([r["config_hash"] for r in runs.values()]),
            "benchmarks": [
                {
                    "name": b.name,
                    "kind": str(b.kind),
                    "problems": len(b.problems),
                    "source": b.source,
                    "sha256": b.sha256,
                    "notes": list(b.notes),
                }
                for b in self.benchmarks
            ],
            "base_model": None if self.base_model is None else str(self.base_model),
            "runs": runs,
            "spend_usd": spend,
            "total_spend_usd": sum(spend.values()),
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        _write_json(self.directory / "experiment.json", data)

    @contextlib.contextmanager
    def _log_to_file(self) -> Any:
        handler = logging.FileHandler(self.directory / "experiment.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.INFO)
        root = logging.getLogger("tracedistill")
        previous = root.level
        if root.level == logging.NOTSET or root.level > logging.INFO:
            root.setLevel(logging.INFO)
        root.addHandler(handler)
        try:
            yield
        finally:
            root.removeHandler(handler)
            root.setLevel(previous)
            handler.close()


# --- small pieces ----------------------------------------------------------------------------


def _running_loop() -> str | None:
    """``"asyncio"`` when an asyncio event loop runs in this thread (a notebook), else None."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return None
    return "asyncio"


class _Stages:
    """``stages.json``: which stages of a run finished, under which configuration."""

    def __init__(self, path: Path, config_hash: str) -> None:
        self.path = path
        self.config_hash = config_hash
        self.data: dict[str, Any] = {"config_hash": config_hash, "stages": {}}
        if path.is_file():
            found = orjson.loads(path.read_bytes())
            if found.get("config_hash") == config_hash:
                self.data = found
            else:
                logger.warning(
                    "%s: the run's configuration changed; every stage runs again (each resumes "
                    "from what is stored, so nothing paid for is bought twice)",
                    path.parent.name,
                )

    def done(self, stage: str) -> bool:
        return stage in self.data["stages"]

    def finish(self, stage: str, info: Mapping[str, Any]) -> None:
        stages = self.data["stages"]
        # A later stage's result depends on this one: finishing it (again) means the later
        # stages must run again too (each resumes from what is stored).
        if stage != "evaluate":
            for name in STAGES[STAGES.index(stage) + 1 :]:
                stages.pop(name, None)
        stages[stage] = dict(info)
        _write_json(self.path, self.data)


class _ListSource(ProblemSource):
    """A problem source over problems already in memory."""

    name = "problems"

    def __init__(self, problems: list[Problem], kind: TaskKind) -> None:
        self.problems = problems
        self.kind = kind

    def scan(self) -> Any:
        """Yield the problems in order."""
        yield from self.problems


class _TeacherProblems(ProblemSource):
    """The problems a replay teacher brings with its traces."""

    def __init__(self, run: Run) -> None:
        self.teacher = run.teacher
        self.kind = run.task
        self.name = run.teacher.name

    def scan(self) -> Any:
        """Yield the teacher's problems."""
        problems: Callable[[], Iterable[Problem]] = self.teacher.problems  # type: ignore[attr-defined]
        yield from problems()


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    tmp.replace(path)


def _write_problems(path: Path, problems: Sequence[Problem]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        for p in problems:
            fh.write(_json.dumps(p.to_dict(), newline=True))
    tmp.replace(path)


def _read_problems(path: Path) -> list[Problem]:
    with path.open("rb") as fh:
        return [Problem.from_dict(_json.loads(line)) for line in fh if line.strip()]
