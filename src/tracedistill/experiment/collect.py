"""The study's :class:`~tracedistill.report.Results` from what a run directory holds now."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

from tracedistill.chat import LengthReport
from tracedistill.errors import StoreCorruptError
from tracedistill.evaluation.benchmarks import Benchmark
from tracedistill.evaluation.results import UNREADABLE, EvalStore
from tracedistill.experiment.config import Run
from tracedistill.experiment.evaluate import checkpoint_label
from tracedistill.experiment.rundir import ExperimentDirectory
from tracedistill.report import BASE, Results, RunInfo, Score, TraceQuality, trace_quality
from tracedistill.store.jsonl import JsonlTraceStore
from tracedistill.training.base import DataReport, TrainingDirectory

__all__ = ["collect_results", "in_domain"]

logger = logging.getLogger(__name__)

#: ``benchmark name -> (grader id, protocol)`` of the grader that would grade it now.
GraderOf = Callable[[str], tuple[str, str | None]]


def in_domain(run: Run, benchmarks: Sequence[Benchmark]) -> str | None:
    """The first benchmark of the run's task, if any."""
    for bench in benchmarks:
        if bench.kind is run.task:
            return bench.name
    return None


def collect_results(
    folders: ExperimentDirectory,
    runs: Sequence[Run],
    benchmarks: Sequence[Benchmark],
    *,
    grader_of: GraderOf | None = None,
) -> Results:
    """Every stored score, the runs' descriptions and the trace quality (blocking reads).

    Each score states the protocol its evaluation recorded. An evaluation stored before
    protocols were recorded gets the protocol of ``grader_of(benchmark)`` when it was graded
    by that same grader (same id), and none ("not recorded") otherwise.

    An evaluation log that cannot be read (a corrupt line) is left out with a warning that
    names the file and line, and listed in the results' ``unreadable``; the rest of the report
    is still produced and nothing stored is changed.
    """
    bench_names = [b.name for b in benchmarks]
    infos = [
        RunInfo(name=r.name, teacher=r.teacher.name, task=str(r.task), in_domain=domain)
        for r in runs
        if (domain := in_domain(r, benchmarks))
    ]
    scores, unreadable = _scores(folders, runs, bench_names, grader_of)
    quality = _quality(folders, runs, unreadable)
    return Results(scores, infos, benchmarks=bench_names, quality=quality, unreadable=unreadable)


def _evaluated(
    folders: ExperimentDirectory, runs: Sequence[Run]
) -> list[tuple[str, str, int | None, int | None]]:
    """``(label, model, step, samples seen)`` of the base model and every saved checkpoint."""
    found: list[tuple[str, str, int | None, int | None]] = [(BASE, BASE, None, None)]
    for run in runs:
        for ckpt in TrainingDirectory(folders.training_dir(run)).checkpoints():
            label = checkpoint_label(run, ckpt.step)
            found.append((label, run.name, ckpt.step, ckpt.samples_seen))
    return found


def _scores(
    folders: ExperimentDirectory,
    runs: Sequence[Run],
    bench_names: Sequence[str],
    grader_of: GraderOf | None,
) -> tuple[list[Score], list[tuple[str, str]]]:
    scores: list[Score] = []
    unreadable: list[tuple[str, str]] = []
    store = EvalStore(folders.path)
    for label, model, step, samples in _evaluated(folders, runs):
        for bench in bench_names:
            path = store.path_for(label, bench)
            if not path.is_file():
                continue  # not evaluated (yet)
            try:
                result = store.load(label, bench)
            except UNREADABLE as exc:
                why = str(exc) if isinstance(exc, StoreCorruptError) else f"{path}: {exc!r}"
                logger.warning(
                    "evaluation of %s on %s left out of the report: %s", label, bench, why
                )
                unreadable.append((f"{label} on {bench}", why))
                continue
            protocol = result.protocol
            if protocol is None and result.grader is not None and grader_of is not None:
                grader, current = grader_of(bench)
                protocol = current if grader == result.grader else None
            scores.append(
                Score.from_evaluation(
                    result, model=model, step=step, samples=samples, protocol=protocol
                )
            )
    return scores, unreadable


def _quality(
    folders: ExperimentDirectory, runs: Sequence[Run], unreadable: list[tuple[str, str]]
) -> list[TraceQuality]:
    rows: list[TraceQuality] = []
    seen: set[Path] = set()
    for run in runs:
        path = folders.store_dir(run)
        if path in seen or not (path / "traces.jsonl").is_file():
            continue
        seen.add(path)
        try:
            store = JsonlTraceStore(path, readonly=True)
        except Exception as exc:  # a report must not fail on one unreadable store
            logger.warning("trace quality of %s unavailable: %s", path, exc)
            unreadable.append((f"trace quality of {path.name}", str(exc)))
            continue
        with store:
            rows.append(
                trace_quality(
                    store,
                    teacher=run.teacher.name,
                    task=run.task,
                    length=_length_report(folders, runs, run, unreadable),
                )
            )
    return rows


def _length_report(
    folders: ExperimentDirectory,
    runs: Sequence[Run],
    run: Run,
    unreadable: list[tuple[str, str]],
) -> LengthReport | None:
    """What the trainer's length policy did to the run's data (student tokens), if known; an
    unreadable ``data.json`` is listed in ``unreadable``.
    """
    for other in runs:
        if folders.store_dir(other) != folders.store_dir(run):
            continue
        path = folders.training_dir(other) / "data.json"
        if path.is_file():
            try:
                return DataReport.from_dict(orjson.loads(path.read_bytes())).length
            except Exception as exc:  # a report must not fail on one unreadable file
                logger.warning("data report %s unreadable: %s", path, exc)
                unreadable.append((f"length report of {other.name}", f"{path}: {exc!r}"))
    return None
