"""The generate stage: draw a run's problem pool once, then have its teacher answer it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread

from tracedistill.errors import TeacherError
from tracedistill.experiment.config import Run
from tracedistill.experiment.rundir import read_problems, write_json, write_problems
from tracedistill.problems.base import ProblemSource
from tracedistill.problems.dedup import Decontaminator
from tracedistill.records import Problem, TaskKind
from tracedistill.store.base import TraceStore
from tracedistill.teachers.engine import GenerationSummary, generate

__all__ = ["draw_pool", "generate_stage"]

logger = logging.getLogger(__name__)


class _ListSource(ProblemSource):
    """A problem source over problems already in memory."""

    name = "problems"

    def __init__(self, problems: list[Problem], kind: TaskKind) -> None:
        self.problems = problems
        self.kind = kind

    def scan(self) -> Iterator[Problem]:
        """Yield the problems in order."""
        yield from self.problems


class _TeacherProblems(ProblemSource):
    """The problems a replay teacher brings with its traces."""

    def __init__(self, run: Run) -> None:
        self.teacher = run.teacher
        self.kind = run.task
        self.name = run.teacher.name

    def scan(self) -> Iterator[Problem]:
        """Yield the teacher's problems."""
        problems: Callable[[], Iterable[Problem]] = self.teacher.problems  # type: ignore[attr-defined]
        yield from problems()


def _read_drawn(path: Path) -> list[Problem] | None:
    return read_problems(path) if path.is_file() else None


async def draw_pool(
    run: Run,
    path: Path,
    *,
    decontaminate: Decontaminator | None,
    progress: bool | None,
) -> list[Problem]:
    """The run's problem pool: read from ``path`` when drawn before, else drawn and written.

    Problems of another task are left out; ``pool_report.json`` beside ``path`` says what the
    source's sampling (and decontamination) dropped.
    """
    drawn = await anyio.to_thread.run_sync(_read_drawn, path)
    if drawn is not None:
        return drawn
    source = run.problems if run.problems is not None else _TeacherProblems(run)
    if not isinstance(source, ProblemSource):
        source = _ListSource(list(source), run.task)
    pool = await source.sample(
        run.pool_size, run.seed, decontaminate=decontaminate, progress=progress
    )
    problems = [p for p in pool if p.kind is run.task]
    if len(problems) != len(pool):
        logger.warning(
            "%s: %d problems of another task left out of the pool",
            run.name,
            len(pool) - len(problems),
        )
    write_json(path.with_name("pool_report.json"), pool.report.to_dict())
    await anyio.to_thread.run_sync(write_problems, path, problems)
    logger.info("%s: pool of %d problems", run.name, len(problems))
    return problems


async def generate_stage(
    run: Run, pool: list[Problem], store: TraceStore, *, progress: bool | None
) -> dict[str, Any]:
    """Have the run's teacher answer every pool problem not answered yet; return the counts.

    Raises:
        TeacherError: generation stopped early (budget, a fatal provider error); what was
            answered is stored.
    """
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
        progress=progress,
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
