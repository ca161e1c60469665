"""The verify stage: grade every stored trace of a run's pool (stored verdicts are reused)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import anyio.to_thread

from tracedistill.records import Problem, TaskKind, Trace
from tracedistill.store.base import TraceStore
from tracedistill.verifiers.base import Verifier

__all__ = ["pool_traces", "verify_stage"]

logger = logging.getLogger(__name__)


def pool_traces(
    store: TraceStore, teacher: str, task: TaskKind, pool: Sequence[Problem]
) -> list[tuple[Problem, Trace]]:
    """The stored traces of ``teacher`` on the pool's problems, each with its problem.

    A whole-store scan: call it from a worker thread in async code.
    """
    by_id = {p.id: p for p in pool}
    return [
        (by_id[trace.problem_id], trace)
        for trace in store.traces(teacher=teacher, kind=task)
        if trace.problem_id in by_id
    ]


async def verify_stage(
    name: str,
    *,
    teacher: str,
    task: TaskKind,
    pool: Sequence[Problem],
    store: TraceStore,
    verifier: Verifier,
    progress: bool | None,
) -> dict[str, Any]:
    """Verify the run's traces (the store scan in a worker thread); return the counts."""
    pairs = await anyio.to_thread.run_sync(pool_traces, store, teacher, task, pool)
    verdicts = await verifier.verify_many(pairs, store=store, progress=progress)
    passed = sum(v.passed for v in verdicts)
    logger.info("%s: %d of %d traces verified correct", name, passed, len(verdicts))
    return {"verified": len(verdicts), "passed": passed}
