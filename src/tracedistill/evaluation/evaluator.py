"""The Evaluator: sample every problem of a benchmark, grade the responses, keep every outcome.

Sampling and grading run at the same time: sampling lanes (as many as the sampler's
concurrency) hand responses to grading lanes (as many as the verifier's). Each response is
written to the evaluation's log as soon as it arrives and each grade as soon as it is known, so
an evaluation killed at any point resumes where it stopped: a problem with a stored response is
never sampled again, and a stored grade by the same grader is never recomputed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
import attrs
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from tracedistill import _lazy
from tracedistill._progress import Progress
from tracedistill.clients.base import Completion, Prompt, Sampler, SamplerError, greedy
from tracedistill.errors import ConfigurationError, EvaluationError
from tracedistill.evaluation.benchmarks import Benchmark
from tracedistill.evaluation.results import (
    EvalLog,
    EvalResult,
    EvalStore,
    ProblemOutcome,
    build_result,
    format_flags,
    outcome_of,
)
from tracedistill.records import (
    THINK_CLOSE,
    THINK_OPEN,
    FinishReason,
    Problem,
    SamplingParams,
    TaskKind,
    VerdictReason,
    utcnow,
)
from tracedistill.records.messages import evaluation_request_key
from tracedistill.verifiers.base import CheckResult, Verifier

__all__ = [
    "CheckpointSamplerFactory",
    "Evaluator",
    "answer_text",
    "protocol_of",
]

log = logging.getLogger(__name__)

#: Makes the sampler of one checkpoint (what :class:`Evaluator` calls per checkpoint).
CheckpointSamplerFactory = Callable[[Any], Sampler]
OnError = Literal["raise", "partial"]

if TYPE_CHECKING:
    #: Deprecated alias of :data:`CheckpointSamplerFactory` (kept one release).
    SamplerFactory = CheckpointSamplerFactory
    #: Deprecated name of :func:`tracedistill.records.messages.evaluation_request_key` (kept
    #: one release): the request keys have one home, beside the teachers' ``request_key``.
    request_key_of = evaluation_request_key
else:
    __getattr__ = _lazy.deprecated(
        __name__,
        {
            "SamplerFactory": f"{__name__}.CheckpointSamplerFactory",
            "request_key_of": "tracedistill.records.messages.evaluation_request_key",
        },
    )


def protocol_of(verifier: Verifier, benchmark: Benchmark | None = None) -> str | None:
    """Which answers ``verifier`` counts, in words, when it says (``MathVerifier.protocol``,
    ``CodeVerifier.protocol``); with ``benchmark``, also how that benchmark hands it responses.
    """
    protocol = getattr(verifier, "protocol", None)
    if not isinstance(protocol, str):
        return None
    if benchmark is not None and benchmark.grade_with_prompt:
        protocol += "; the prompt and the response are graded as one text"
    if verifier.accept_truncated or (benchmark is not None and benchmark.accept_truncated):
        protocol += "; a response cut at max_tokens is graded too"
    return protocol


def answer_text(text: str) -> tuple[str | None, str]:
    """The part of a response that is graded, and why.

    A response that opens a ``<think>`` block is graded on what follows ``</think>``; one whose
    block never closes has no answer (None). A response without a think block is graded whole.
    """
    stripped = text.lstrip()
    if stripped.startswith(THINK_OPEN) or (THINK_CLOSE in text and THINK_OPEN not in text):
        # Some servers open the block in the prompt and return only its closing tag.
        _head, sep, tail = stripped.partition(THINK_CLOSE)
        if not sep:
            return None, "think block never closed"
        return tail.lstrip("\n"), "after think block"
    return text, "whole response"


@attrs.define
class _Job:
    problem: Problem
    key: str
    prompt: Prompt
    sample: dict[str, Any] | None = None


class Evaluator:
    """Evaluates models on benchmarks and keeps every per-problem outcome.

    Args:
        run_dir: where evaluations are stored (``{run_dir}/evaluations/...``); None keeps
            results in memory only (no resume).
        verifiers: graders to use per task kind (yours to close); they replace a benchmark's
            own grader (its ``verifier_factory``), with a warning when it has one. Without one
            for a kind, each benchmark builds its own once and the evaluator closes it in
            :meth:`aclose`. The protocol of the grader used is stored in each evaluation.
        sampler_factory: turns what :meth:`evaluate` is given (a checkpoint, a path, a model
            name) into a :class:`Sampler`; default :func:`tracedistill.evaluation.samplers.
            make_sampler`.
        confidence: the level of every interval.
        on_error: when some problems could not be sampled (after the sampler's retries):
            ``raise`` an :class:`EvaluationError` (default; the finished problems are kept and
            a rerun samples only the missing ones) or return a ``partial`` result.
        progress: show a progress bar (default: on unless ``TRACEDISTILL_PROGRESS=0``).
    """

    def __init__(
        self,
        run_dir: str | Path | None = None,
        *,
        verifiers: Mapping[TaskKind | str, Verifier] | None = None,
        sampler_factory: CheckpointSamplerFactory | None = None,
        confidence: float = 0.95,
        on_error: OnError = "raise",
        progress: bool | None = None,
    ) -> None:
        if on_error not in ("raise", "partial"):
            raise ConfigurationError(f"on_error must be 'raise' or 'partial', got {on_error!r}")
        self.store = EvalStore(run_dir) if run_dir is not None else None
        self._given = {TaskKind(k): v for k, v in (verifiers or {}).items()}
        self._owned: dict[Any, Verifier] = {}
        self._overridden: set[str] = set()
        self.sampler_factory = sampler_factory
        self.confidence = confidence
        self.on_error = on_error
        self.progress = progress

    # --- graders -----------------------------------------------------------------------------

    def verifier_for(self, benchmark: Benchmark) -> Verifier:
        """The grader of a benchmark (shared by every evaluation on it, and its worker pool)."""
        given = self._given.get(benchmark.kind)
        if given is not None:
            if benchmark.verifier_factory is not None and benchmark.name not in self._overridden:
                self._overridden.add(benchmark.name)
                log.warning(
                    "%s: graded by the evaluator's %s verifier, not the benchmark's own "
                    "(verifier_factory); its protocol: %s",
                    benchmark.name,
                    benchmark.kind,
                    protocol_of(given) or "not stated",
                )
            return given
        key = benchmark.verifier_factory or benchmark.kind
        verifier = self._owned.get(key)
        if verifier is None:
            verifier = self._owned[key] = benchmark.make_verifier()
        return verifier

    @staticmethod
    def grader_id(benchmark: Benchmark, verifier: Verifier) -> str:
        """What identifies a grade: the verifier, its version and how responses are cut."""
        truncated = benchmark.accept_truncated or verifier.accept_truncated
        return (
            f"{verifier.name}/{verifier.version}/trunc={int(truncated)}"
            f"/prompt={int(benchmark.grade_with_prompt)}"
        )

    async def grade(
        self, benchmark: Benchmark, problem: Problem, text: str, finish_reason: FinishReason
    ) -> CheckResult:
        """Grade one response to ``problem`` (truncation, think block, then the verifier)."""
        verifier = self.verifier_for(benchmark)
        if finish_reason is FinishReason.ERROR:
            return CheckResult.fail(VerdictReason.NO_ANSWER, {"note": "no response"})
        if finish_reason is FinishReason.LENGTH and not (
            benchmark.accept_truncated or verifier.accept_truncated
        ):
            return CheckResult.fail(VerdictReason.TRUNCATED, {"note": "stopped at max_tokens"})
        answer, how = answer_text(text)
        if answer is None:
            return CheckResult.fail(VerdictReason.NO_ANSWER, {"note": how})
        return await verifier.check(problem, benchmark.graded_text(problem, answer))

    # --- evaluation --------------------------------------------------------------------------

    def _sampler(self, model: Any) -> tuple[Sampler, bool]:
        if isinstance(model, Sampler):
            return model, False
        factory = self.sampler_factory
        if factory is None:
            from tracedistill.evaluation.samplers import make_sampler

            factory = make_sampler
        return factory(model), True

    async def evaluate(
        self,
        model: Sampler | Any,
        benchmark: Benchmark,
        *,
        label: str | None = None,
        params: SamplingParams | None = None,
        run_dir: str | Path | None = None,
        store: EvalStore | None = None,
    ) -> EvalResult:
        """Evaluate one model (a :class:`Sampler`, or anything the sampler factory takes: a
        training checkpoint, a ``tinker://.../sampler_weights/...`` path, an adapter directory)
        on ``benchmark``.

        Args:
            model: what to sample.
            benchmark: the problems, prompts and grader.
            label: the name of this model in results (default: the sampler's model).
            params: sampling parameters (default: greedy with the benchmark's ``max_tokens``
                and stop strings).
            run_dir: store under this run directory instead of the evaluator's.
            store: store in this :class:`EvalStore` instead.

        Returns:
            the result: accuracy, Wilson interval, per-problem outcomes, format compliance.

        Raises:
            EvaluationError: problems could not be sampled (``on_error='raise'``), or the
                stored evaluation under this label is of another model or benchmark file.
            SamplerError: a fatal sampler failure (bad credentials, a wrong checkpoint path).
        """
        sampler, owned = self._sampler(model)
        try:
            return await self._evaluate(sampler, benchmark, label, params, run_dir, store)
        finally:
            if owned:
                await sampler.aclose()

    async def evaluate_many(
        self,
        models: Mapping[str, Sampler | Any],
        benchmarks: Sequence[Benchmark],
        *,
        params: Mapping[str, SamplingParams] | None = None,
    ) -> dict[tuple[str, str], EvalResult]:
        """Evaluate each labelled model on each benchmark, one model at a time.

        ``params`` may give sampling parameters per benchmark name. Returns results keyed by
        ``(label, benchmark name)``.
        """
        results: dict[tuple[str, str], EvalResult] = {}
        for label, model in models.items():
            sampler, owned = self._sampler(model)
            try:
                for benchmark in benchmarks:
                    chosen = (params or {}).get(benchmark.name)
                    results[(label, benchmark.name)] = await self._evaluate(
                        sampler, benchmark, label, chosen, None, None
                    )
            finally:
                if owned:
                    await sampler.aclose()
        return results

    def load(self, label: str, benchmark: Benchmark | str) -> EvalResult:
        """A stored result of this evaluator's run directory."""
        if self.store is None:
            raise EvaluationError("this evaluator has no run directory to load results from")
        name = benchmark if isinstance(benchmark, str) else benchmark.name
        return self.store.load(label, name, confidence=self.confidence)

    def _params(self, benchmark: Benchmark, params: SamplingParams | None) -> SamplingParams:
        if params is None:
            return greedy(benchmark.max_tokens, stop=benchmark.stop)
        missing = [s for s in benchmark.stop if s not in params.stop]
        return attrs.evolve(params, stop=(*params.stop, *missing)) if missing else params

    async def _evaluate(
        self,
        sampler: Sampler,
        benchmark: Benchmark,
        label: str | None,
        params: SamplingParams | None,
        run_dir: str | Path | None,
        store: EvalStore | None,
    ) -> EvalResult:
        chosen = self._params(benchmark, params)
        label = label or sampler.model
        verifier = self.verifier_for(benchmark)
        grader = self.grader_id(benchmark, verifier)
        jobs = []
        for problem in benchmark.problems:
            prompt = benchmark.prompt(problem)
            key = evaluation_request_key(sampler.model, prompt, chosen)
            jobs.append(_Job(problem, key, prompt))
        header: dict[str, Any] = {
            "label": label,
            "model": sampler.model,
            "sampler": dict(sampler.describe()),
            **benchmark.describe(),
            "params": chosen.to_dict(),
            "grader": grader,
            # Which answers the grader counts, in words (reports show it); None if unstated.
            "protocol": protocol_of(verifier, benchmark),
            "problems": len(benchmark),
            # Which response of each problem this evaluation counts (problem id -> request key).
            "request_keys": {job.problem.id: job.key for job in jobs},
            "created_at": utcnow().isoformat(),
        }
        target = store or (EvalStore(run_dir) if run_dir is not None else self.store)
        log_ = (
            target.open(label, benchmark.name, header)
            if target is not None
            else EvalLog(Path(), header)
        )
        memory_only = target is None
        try:
            outcomes, failures = await self._run(
                sampler, benchmark, jobs, chosen, log_, verifier, grader, memory_only
            )
        finally:
            if not memory_only:
                log_.close()
        result = build_result(
            {**log_.header, "label": label},
            outcomes,
            expected=len(benchmark),
            order=benchmark.ids,
            path=None if memory_only else log_.path,
            confidence=self.confidence,
        )
        log.info("%s", result.summary())
        if failures and self.on_error == "raise":
            first = next(iter(failures.items()))
            raise EvaluationError(
                f"{label} on {benchmark.name}: {len(failures)} of {len(benchmark)} problems "
                f"could not be sampled (first: {first[0]}: {first[1]}). The {result.n} graded "
                "problems are stored; run the evaluation again to sample only the missing ones."
            )
        return result

    async def _run(
        self,
        sampler: Sampler,
        benchmark: Benchmark,
        jobs: list[_Job],
        params: SamplingParams,
        log_: EvalLog,
        verifier: Verifier,
        grader: str,
        memory_only: bool,
    ) -> tuple[list[ProblemOutcome], dict[str, str]]:
        evaluation = _EvalPass(self, sampler, benchmark, params, log_, grader, memory_only)
        to_sample, to_grade = evaluation.resume(jobs)
        desc = f"eval {log_.header.get('label')} {benchmark.name}"
        with Progress(len(benchmark), desc, unit="problem", enabled=self.progress) as bar:
            await evaluation.run(bar, to_sample, to_grade, verifier.default_concurrency)
        order = {pid: i for i, pid in enumerate(benchmark.ids)}
        outcomes = sorted(evaluation.outcomes.values(), key=lambda o: order[o.problem_id])
        return outcomes, evaluation.failures

    async def aclose(self) -> None:
        """Stop the graders this evaluator started (idempotent)."""
        owned, self._owned = self._owned, {}
        for verifier in owned.values():
            await verifier.aclose()

    async def __aenter__(self) -> Evaluator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _EvalPass:
    """One pass of a sampler over a benchmark: what is stored is reused, the rest is sampled
    by ``max_concurrency`` lanes and graded by the verifier's lanes as samples arrive.
    """

    def __init__(
        self,
        evaluator: Evaluator,
        sampler: Sampler,
        benchmark: Benchmark,
        params: SamplingParams,
        log_: EvalLog,
        grader: str,
        memory_only: bool,
    ) -> None:
        self.evaluator = evaluator
        self.sampler = sampler
        self.benchmark = benchmark
        self.params = params
        self.log = log_
        self.grader = grader
        self.memory_only = memory_only
        self.outcomes: dict[str, ProblemOutcome] = {}
        self.failures: dict[str, str] = {}
        self.correct = 0

    def resume(self, jobs: list[_Job]) -> tuple[list[_Job], list[_Job]]:
        """Take the stored outcomes; return the jobs left to sample and those left to grade."""
        to_sample: list[_Job] = []
        to_grade: list[_Job] = []
        for job in jobs:
            sample = self.log.sample_for(job.problem.id, job.key)
            if sample is None:
                to_sample.append(job)
                continue
            job.sample = sample
            grade = self.log.grade_for(job.problem.id, job.key, self.grader)
            if grade is None:
                to_grade.append(job)
            else:
                self.outcomes[job.problem.id] = outcome_of(sample, grade)
        if self.outcomes or to_grade:
            log.info(
                "%s on %s: %d problems already graded, %d sampled and waiting for a grade",
                self.log.header.get("label"),
                self.benchmark.name,
                len(self.outcomes),
                len(to_grade),
            )
        self.correct = sum(o.passed for o in self.outcomes.values())
        return to_sample, to_grade

    async def run(
        self, bar: Progress, to_sample: list[_Job], to_grade: list[_Job], graders: int
    ) -> None:
        """Sample ``to_sample`` and grade it with ``to_grade``; the first fatal error stops all."""
        bar.advance(len(self.outcomes))
        send: ObjectSendStream[_Job]
        receive: ObjectReceiveStream[_Job]
        send, receive = anyio.create_memory_object_stream[_Job](math.inf)
        for job in to_grade:
            send.send_nowait(job)
        # Sample in benchmark order (lanes pop from the end of a reversed list).
        queue = list(reversed(to_sample))
        try:
            async with anyio.create_task_group() as tg, send:
                for _ in range(min(self.sampler.max_concurrency, len(queue))):
                    tg.start_soon(self.sample_lane, queue, send.clone())
                for _ in range(max(1, graders)):
                    tg.start_soon(self.grade_lane, receive.clone(), bar)
                await receive.aclose()
        except BaseExceptionGroup as group:
            raise _first_error(group) from None

    async def sample_lane(self, queue: list[_Job], out: ObjectSendStream[_Job]) -> None:
        """Sample jobs from ``queue`` until it is empty, sending each sampled one to ``out``."""
        async with out:
            while queue:
                job = queue.pop()
                try:
                    completion = await self.sampler.sample(job.prompt, self.params)
                except SamplerError as exc:
                    if exc.fatal:
                        raise
                    self.failures[job.problem.id] = str(exc)
                    log.warning("%s: %s", job.problem.id, exc)
                    continue
                if self.memory_only:
                    job.sample = _memory_sample(job, completion)
                    self.log.samples[job.problem.id] = job.sample
                else:
                    job.sample = self.log.add_sample(job.problem.id, job.key, completion)
                await out.send(job)

    async def grade_lane(self, inbox: ObjectReceiveStream[_Job], bar: Progress) -> None:
        """Grade the sampled jobs from ``inbox`` and store each grade."""
        async with inbox:
            async for job in inbox:
                assert job.sample is not None
                text = str(job.sample["text"])
                finish = FinishReason(job.sample["finish_reason"])
                result = await self.evaluator.grade(self.benchmark, job.problem, text, finish)
                record = self._store_grade(job, result, format_flags(text, self.benchmark.kind))
                self.outcomes[job.problem.id] = outcome_of(job.sample, record)
                self.correct += result.passed
                acc = f"{100 * self.correct / len(self.outcomes):.1f}%"
                bar.advance(1, correct=self.correct, acc=acc)

    def _store_grade(self, job: _Job, result: CheckResult, flags: dict[str, Any]) -> dict[str, Any]:
        """Append the grade to the log (unless in memory only); return its record."""
        if not self.memory_only:
            self.log.add_grade(
                job.problem.id,
                job.key,
                grader=self.grader,
                passed=result.passed,
                reason=result.reason,
                details=result.details,
                format=flags,
                elapsed_s=result.elapsed_s,
            )
        return {
            "type": "grade",
            "problem_id": job.problem.id,
            "key": job.key,
            "grader": self.grader,
            "passed": result.passed,
            "reason": str(result.reason),
            "details": result.details,
            "format": flags,
            "elapsed_s": result.elapsed_s,
        }


def _memory_sample(job: _Job, completion: Completion) -> dict[str, Any]:
    return {"type": "sample", "problem_id": job.problem.id, "key": job.key, **completion.to_dict()}


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one real error of a task group's exception group (what the caller should see)."""
    errors: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        elif not isinstance(exc, anyio.get_cancelled_exc_class()):
            errors.append(exc)

    walk(group)
    if not errors:
        return group
    fatal = [e for e in errors if isinstance(e, SamplerError)]
    return (fatal or errors)[0]
