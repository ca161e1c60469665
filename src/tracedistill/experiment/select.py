"""The select stage: which verified traces a run trains on (``train_set.json``).

The selection is the one home of the training filters: correct only, a length limit, one trace
per problem, truncated responses left out (decontamination happens when the pool is drawn).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import anyio.to_thread
import attrs

from tracedistill._jsonl import write_json_atomic
from tracedistill.errors import ConfigurationError
from tracedistill.records import Problem, TaskKind, Trace
from tracedistill.store.base import TraceStore
from tracedistill.verifiers.base import Verifier

__all__ = ["Filters", "Selection", "select_stage", "select_traces"]

logger = logging.getLogger(__name__)


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


@attrs.frozen(slots=True, kw_only=True)
class Selection:
    """The request keys chosen for training and how many traces each filter dropped."""

    keys: tuple[str, ...]
    pool: int
    eligible: int
    dropped_too_long: int

    def report(self) -> dict[str, int]:
        """The counts stored in ``train_set.json`` and ``stages.json``."""
        return {
            "pool": self.pool,
            "eligible": self.eligible,
            "dropped_too_long": self.dropped_too_long,
            "dropped_duplicate_problem": self.eligible - self.dropped_too_long - len(self.keys),
            "selected": len(self.keys),
        }


def select_traces(traces: Iterable[Trace], pool: Sequence[Problem], filters: Filters) -> Selection:
    """Apply the length and one-per-problem filters to traces of the pool's problems.

    ``traces`` are those the store query already kept (teacher, task, verdict, truncation).
    """
    ids = {p.id for p in pool}
    chosen: dict[str, Trace] = {}
    seen = dropped_length = 0
    limit = filters.max_completion_tokens
    for trace in traces:
        if trace.problem_id not in ids:
            continue
        seen += 1
        if limit is not None and trace.usage.completion_tokens > limit:
            dropped_length += 1
            continue
        key = trace.problem_id if filters.one_per_problem else trace.key
        current = chosen.get(key)
        if current is None or trace.sample_index < current.sample_index:
            chosen[key] = trace
    return Selection(
        keys=tuple(t.key for t in chosen.values()),
        pool=len(pool),
        eligible=seen,
        dropped_too_long=dropped_length,
    )


def _scan_and_select(
    store: TraceStore,
    teacher: str,
    task: TaskKind,
    verifier: Verifier,
    pool: Sequence[Problem],
    filters: Filters,
) -> Selection:
    traces = store.traces(
        teacher=teacher,
        kind=task,
        correct=True if filters.correct_only else None,
        verifier=verifier.name,
        verifier_version=verifier.version,
        include_truncated=filters.include_truncated,
    )
    return select_traces(traces, pool, filters)


async def select_stage(
    name: str,
    *,
    teacher: str,
    task: TaskKind,
    filters: Filters,
    pool: Sequence[Problem],
    store: TraceStore,
    verifier: Verifier,
    train_set: Path,
) -> dict[str, Any]:
    """Choose a run's training traces and write them to ``train_set``; return the counts.

    The whole-store scan runs in a worker thread, so the event loop stays responsive.

    Raises:
        ConfigurationError: no trace passed the filters.
    """
    selection = await anyio.to_thread.run_sync(
        _scan_and_select, store, teacher, task, verifier, pool, filters
    )
    report = selection.report()
    if not selection.keys:
        raise ConfigurationError(
            f"run {name!r}: no trace passed the filters ({report}); nothing to train on"
        )
    write_json_atomic(train_set, {"report": report, "keys": list(selection.keys)})
    logger.info("%s: training set %s", name, report)
    return report
