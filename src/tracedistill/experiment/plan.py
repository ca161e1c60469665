"""The dry run: what an experiment would request, train and evaluate, and what it would cost.

The prompt-token estimate is the teachers' own (:meth:`Teacher.estimate_input_tokens`, the one
their rate limiters use), so the plan and the run count prompts alike.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from tracedistill._html import table_html, table_markdown
from tracedistill.errors import ConfigurationError
from tracedistill.evaluation.benchmarks import Benchmark
from tracedistill.experiment.config import Run
from tracedistill.experiment.rundir import ExperimentDirectory, read_problems
from tracedistill.records import Problem, TokenUsage
from tracedistill.store.jsonl import JsonlTraceStore

__all__ = ["Plan", "PlanRow", "make_plan", "plan_row"]

#: Prompts sampled for the mean prompt size, and the size assumed before a pool is drawn.
_PROMPT_SAMPLE = 200
_ASSUMED_PROMPT_TOKENS = 200.0


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


def make_plan(
    folders: ExperimentDirectory,
    runs: Sequence[Run],
    benchmarks: Sequence[Benchmark],
    *,
    evaluates_base: bool,
    unavailable: Mapping[str, str] | None = None,
) -> Plan:
    """The plan of every run, plus the base model's evaluation when there is one."""
    bench_size = sum(len(b.problems) for b in benchmarks)
    return Plan(
        rows=tuple(plan_row(folders, run, bench_size) for run in runs),
        base_eval_requests=bench_size if evaluates_base else 0,
        benchmarks=tuple(b.name for b in benchmarks),
        unavailable=dict(unavailable or {}),
    )


@attrs.frozen(slots=True, kw_only=True)
class _Generation:
    """The generation part of a plan row."""

    pool: int | None
    stored: int
    remaining: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    usd: float | None


def plan_row(folders: ExperimentDirectory, run: Run, bench_size: int) -> PlanRow:
    """The estimate of one run: its requests, tokens, cost, training steps and evaluations."""
    notes: list[str] = []
    gen = _plan_generation(folders, run, notes)
    requests = None if gen.pool is None else gen.pool * run.generation.samples_per_problem
    expected_correct = (
        None if requests is None else int(requests * run.generation.expected_pass_rate)
    )
    examples = (
        None
        if expected_correct is None
        else min(expected_correct, run.train.num_samples or expected_correct)
    )
    steps = _train_steps(run, examples, notes)
    every = run.train.checkpoint_every
    checkpoints = None if steps is None else math.ceil(steps / every) if every else 1
    expected_out = _expected_completion_tokens(run)
    if expected_out is not None:
        notes.append(
            f"expects ~{expected_out} completion tokens and a "
            f"{run.generation.expected_pass_rate:.0%} pass rate per response"
        )
    return PlanRow(
        run=run.name,
        teacher=run.teacher.name,
        task=str(run.task),
        pool=gen.pool,
        requests=gen.remaining,
        stored=gen.stored,
        prompt_tokens=gen.prompt_tokens,
        completion_tokens=gen.completion_tokens,
        generation_usd=gen.usd,
        train_examples=examples,
        train_steps=steps,
        checkpoints=checkpoints,
        eval_requests=(checkpoints or 0) * bench_size,
        note="; ".join(notes),
    )


def _train_steps(run: Run, examples: int | None, notes: list[str]) -> int | None:
    """The run's training steps; None, with a note, when its examples would not train."""
    if examples is None:
        return None
    try:
        return run.train.total_steps(max(examples, 1))
    except ConfigurationError as exc:
        # A dry run shows the problem in its row; the real run raises it at the train stage.
        notes.append(f"cannot train: {exc}")
        return None


def _plan_generation(folders: ExperimentDirectory, run: Run, notes: list[str]) -> _Generation:
    problems = _known_pool(folders, run)
    pool = len(problems) if problems is not None else run.pool_size
    requests = None if pool is None else pool * run.generation.samples_per_problem
    stored = _stored(folders.store_dir(run), run, problems)
    remaining = None if requests is None else max(0, requests - stored)
    if problems:
        mean_prompt = mean_prompt_tokens(run, problems)
    else:
        mean_prompt = _ASSUMED_PROMPT_TOKENS
        notes.append(
            f"prompt size assumed {_ASSUMED_PROMPT_TOKENS:.0f} tokens (pool not drawn yet)"
        )
    expected_out = _expected_completion_tokens(run)
    prompt_tokens = None if remaining is None else int(remaining * mean_prompt)
    completion_tokens = (
        None if remaining is None or expected_out is None else remaining * expected_out
    )
    return _Generation(
        pool=pool,
        stored=stored,
        remaining=remaining,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        usd=_generation_cost(run, remaining, prompt_tokens, completion_tokens, notes),
    )


def _known_pool(folders: ExperimentDirectory, run: Run) -> list[Problem] | None:
    """The run's pool when it is known without drawing it (drawn before, or a plain list)."""
    pool_file = folders.pool_file(run)
    if pool_file.is_file():
        return read_problems(pool_file)
    if isinstance(run.problems, list | tuple):
        return list(run.problems)[: run.pool_size]
    return None


def _stored(store_path: Path, run: Run, problems: list[Problem] | None) -> int:
    """How many of the run's requests already have a stored trace."""
    if not (store_path / "traces.jsonl").is_file():
        return 0
    with JsonlTraceStore(store_path, readonly=True) as store:
        if problems is None:
            return sum(1 for _ in store.traces(teacher=run.teacher.name))
        samples = range(run.generation.samples_per_problem)
        return sum(store.has(run.teacher.request_key(p, i)) for p in problems for i in samples)


def mean_prompt_tokens(run: Run, problems: Sequence[Problem]) -> float:
    """The mean prompt size of (up to 200 of) the problems, by the teacher's own estimate."""
    sample = problems[:_PROMPT_SAMPLE]
    teacher = run.teacher
    total = sum(teacher.estimate_input_tokens(teacher.request(p)) for p in sample)
    return total / len(sample)


def _expected_completion_tokens(run: Run) -> int | None:
    params = run.teacher.params
    max_tokens = params.max_tokens if params is not None else None
    return run.generation.expected_completion_tokens or (max_tokens // 2 if max_tokens else None)


def _generation_cost(
    run: Run,
    remaining: int | None,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    notes: list[str],
) -> float | None:
    """The estimated spend of the remaining requests (None when no price is known)."""
    pricing = run.teacher.pricing
    if remaining == 0:
        return 0.0
    if not getattr(run.teacher, "rate_limited", True) and run.teacher.reports_cost:
        return 0.0  # replayed traces cost nothing
    if pricing is None or prompt_tokens is None or completion_tokens is None:
        notes.append(
            "no price known: give the teacher pricing= for an estimate (the provider's "
            "reported cost is used at run time)"
        )
        return None
    params = run.teacher.params
    if params is not None and remaining is not None:
        worst = pricing.cost(
            TokenUsage(prompt_tokens=prompt_tokens, completion_tokens=remaining * params.max_tokens)
        )
        notes.append(
            f"worst case ${worst:,.2f} if every response used max_tokens={params.max_tokens}"
        )
    return pricing.cost(
        TokenUsage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
    )
