"""Batch generation: OpenAI's Batch API and Anthropic's Message Batches, at half price.

:func:`generate_batch` streams problems like :func:`~tracedistill.teachers.engine.generate`,
skips request keys already answered, and submits the rest in provider-side batches (the request
key is each line's ``custom_id``). Each submitted batch is recorded in a small state file before
anything else happens, so a crashed or cancelled run never submits (and pays for) the same
requests twice: the next call picks the recorded batches up, waits for them and stores their
results.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterable, Iterable
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.to_thread
import attrs
import orjson
from anyio.abc import TaskGroup

from tracedistill._progress import Progress
from tracedistill.errors import (
    BudgetExceededError,
    ConfigurationError,
    ProviderError,
    ProviderUnavailableError,
)
from tracedistill.records import Problem, Trace
from tracedistill.store.base import TraceStore
from tracedistill.teachers.base import BatchStatus, SupportsBatch, Teacher, TeacherRequest
from tracedistill.teachers.cost import Budget
from tracedistill.teachers.engine import GenerationSummary, StopReason, _aiter_batches

__all__ = ["BatchState", "generate_batch"]

logger = logging.getLogger(__name__)


class BatchState:
    """The append-only record of submitted batches (``<store>/batches-<teacher>.jsonl``).

    Each line is ``{"batch": id, "requests": [[key, problem_id, sample_index], ...]}`` when a
    batch is submitted, and ``{"batch": id, "done": true}`` once its results are stored.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.pending: dict[str, list[tuple[str, str, int]]] = {}
        if self.path.exists():
            for number, line in enumerate(self.path.read_bytes().splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    logger.warning("%s:%d: torn line ignored", self.path, number)
                    continue
                if record.get("done"):
                    self.pending.pop(record["batch"], None)
                else:
                    self.pending[record["batch"]] = [tuple(r) for r in record["requests"]]

    def _append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as fh:
            fh.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
            fh.flush()
            os.fsync(fh.fileno())

    def submitted(self, batch_id: str, requests: list[TeacherRequest]) -> None:
        """Record a submitted batch (fsynced before this returns)."""
        entries = [(r.key, r.problem.id, r.sample_index) for r in requests]
        self._append({"batch": batch_id, "requests": entries})
        self.pending[batch_id] = entries

    def finished(self, batch_id: str) -> None:
        """Record that a batch's results are stored."""
        self._append({"batch": batch_id, "done": True})
        self.pending.pop(batch_id, None)

    def pending_keys(self) -> set[str]:
        """Request keys in batches not finished yet."""
        return {key for entries in self.pending.values() for key, _, _ in entries}


def _state_path(store: TraceStore, teacher: Teacher, state_path: str | Path | None) -> Path:
    if state_path is not None:
        return Path(state_path)
    root = getattr(store, "path", None)
    if root is None:
        raise ConfigurationError(
            "generate_batch needs state_path= (a file recording submitted batches) for a "
            "store without a directory"
        )
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in teacher.name)
    return Path(root) / f"batches-{safe}.jsonl"


async def generate_batch(
    teacher: Teacher,
    problems: Iterable[Problem] | AsyncIterable[Problem],
    store: TraceStore,
    *,
    n: int = 1,
    batch_size: int = 5000,
    poll_interval: float = 30.0,
    budget_usd: float | None = None,
    state_path: str | Path | None = None,
    progress: bool | None = None,
) -> GenerationSummary:
    """Generate ``n`` traces per problem through the provider's batch API.

    Args:
        teacher: an :class:`~tracedistill.teachers.OpenAICompatTeacher` on OpenAI (or a
            server with the same batch API) or an :class:`~tracedistill.teachers.AnthropicTeacher`.
        problems: any iterable or async iterable of problems (stored as they stream).
        store: where problems and traces go; answered request keys are skipped.
        n: samples per problem.
        batch_size: requests per submitted batch.
        poll_interval: seconds between status checks of running batches.
        budget_usd: a hard cap on the store's total spend; a batch is submitted only when its
            worst case (at the teacher's prices times the batch discount) fits.
        state_path: the file recording submitted batches (default: beside the store).
        progress: show a progress bar.

    Returns:
        A :class:`GenerationSummary` once every batch is finished and stored.
    """
    if not isinstance(teacher, SupportsBatch):
        raise ConfigurationError(f"{teacher.name!r} ({type(teacher).__name__}) has no batch API")
    if n < 1 or batch_size < 1 or poll_interval <= 0:
        raise ConfigurationError("n and batch_size must be >= 1 and poll_interval > 0")
    if budget_usd is not None and teacher.pricing is None:
        raise ConfigurationError(
            "budget_usd with a batch API needs the teacher's pricing= (batch results carry no cost)"
        )
    batcher = cast(SupportsBatch, teacher)
    state = await anyio.to_thread.run_sync(BatchState, _state_path(store, teacher, state_path))
    budget = Budget(budget_usd, spent_usd=store.spend_usd())
    spent_before = budget.spent_usd
    counters = {
        "problems": 0,
        "requested": 0,
        "skipped": 0,
        "done": 0,
        "truncated": 0,
        "failed": 0,
        "input": 0,
        "output": 0,
    }
    stopped: list[str] = []
    started = time.monotonic()
    bar = Progress(None, f"batch {teacher.name}", unit="req", enabled=progress)
    reservations: dict[str, Any] = {}

    def scaled(trace: Trace) -> Trace:
        if trace.cost_usd is None or not trace.cost_estimated:
            return trace
        return attrs.evolve(trace, cost_usd=trace.cost_usd * batcher.batch_discount)

    async def collect(status: BatchStatus) -> None:
        entries = state.pending.get(status.id, [])
        results = dict(await batcher.batch_results(status))
        spent = 0.0
        for key, problem_id, sample_index in entries:
            problem = store.problem(problem_id)
            if problem is None:
                logger.warning("batch %s: problem %s is not in the store", status.id, problem_id)
                continue
            request = teacher.request(problem, sample_index)
            if request.key != key:
                logger.warning(
                    "batch %s: request %s no longer matches the teacher's prompt or parameters; "
                    "its result is ignored",
                    status.id,
                    key,
                )
                continue
            outcome = results.get(key)
            if outcome is None:
                outcome = ProviderUnavailableError(
                    f"{teacher.name}: batch {status.id} ({status.status}) returned no result"
                )
            if isinstance(outcome, ProviderError):
                trace = teacher._error_trace(request, outcome, 1, 0.0)
            else:
                trace = scaled(teacher._trace(request, outcome, 1, 0.0))
            with anyio.CancelScope(shield=True):
                written = await store.add_trace(trace)
            if written:
                spent += trace.cost_usd or 0.0
                counters["input"] += trace.usage.prompt_tokens
                counters["output"] += trace.usage.completion_tokens
                if not trace.ok:
                    counters["failed"] += 1
                else:
                    counters["done"] += 1
                    counters["truncated"] += trace.truncated
        reservation = reservations.pop(status.id, None)
        if reservation is not None:
            budget.settle(reservation, spent)
        else:
            budget.spent_usd += spent
        await anyio.to_thread.run_sync(state.finished, status.id)
        bar.advance(
            len(entries),
            done=counters["done"],
            failed=counters["failed"],
            trunc=counters["truncated"],
            **{"$": budget.spent_usd - spent_before},
        )

    async def watch(batch_id: str) -> None:
        while True:
            status = await _retrying(teacher, batcher.poll_batch, batch_id)
            if status.done:
                await collect(status)
                return
            await anyio.sleep(poll_interval)

    async def submit(chunk: list[TeacherRequest], tg: TaskGroup) -> None:
        worst = [teacher.worst_case_cost(r) for r in chunk]
        while chunk:
            total = sum(w or 0.0 for w in worst[: len(chunk)]) * batcher.batch_discount
            try:
                reservation = await budget.reserve(total if budget_usd is not None else None)
            except BudgetExceededError as exc:
                if len(chunk) == 1:
                    stopped.append(str(exc))
                    return
                rest = chunk[len(chunk) // 2 :]
                chunk = chunk[: len(chunk) // 2]
                await submit(chunk, tg)
                chunk, worst = rest, [teacher.worst_case_cost(r) for r in rest]
                continue
            batch_id = await _retrying(teacher, batcher.submit_batch, chunk)
            await anyio.to_thread.run_sync(state.submitted, batch_id, chunk)
            reservations[batch_id] = reservation
            counters["requested"] += len(chunk)
            logger.info("submitted batch %s (%d requests)", batch_id, len(chunk))
            tg.start_soon(watch, batch_id)
            return

    try:
        async with anyio.create_task_group() as tg:
            for batch_id in list(state.pending):
                logger.info("resuming batch %s", batch_id)
                tg.start_soon(watch, batch_id)
            pending = state.pending_keys()
            chunk: list[TeacherRequest] = []
            async for problems_batch in _aiter_batches(problems):
                await store.add_problems(problems_batch)
                counters["problems"] += len(problems_batch)
                for problem in problems_batch:
                    for index in range(n):
                        request = teacher.request(problem, index)
                        if store.has(request.key) or request.key in pending:
                            counters["skipped"] += 1
                            continue
                        pending.add(request.key)
                        chunk.append(request)
                        if len(chunk) >= batch_size:
                            await submit(chunk, tg)
                            chunk = []
                if stopped:
                    break
            if chunk and not stopped:
                await submit(chunk, tg)
    finally:
        bar.close()
    return GenerationSummary(
        teacher=teacher.name,
        model=teacher.model,
        problems=counters["problems"],
        requested=counters["requested"],
        skipped=counters["skipped"],
        done=counters["done"],
        truncated=counters["truncated"],
        failed=counters["failed"],
        resampled=0,
        attempts=counters["done"] + counters["failed"],
        throttled=0,
        input_tokens=counters["input"],
        output_tokens=counters["output"],
        spend_usd=budget.spent_usd - spent_before,
        total_spend_usd=store.spend_usd(),
        elapsed_s=time.monotonic() - started,
        stopped=StopReason.BUDGET if stopped else None,
        error=stopped[0] if stopped else None,
    )


async def _retrying(teacher: Teacher, call: Any, *args: Any) -> Any:
    """Run a batch API call with the teacher's retry policy (fatal errors raise at once)."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call(*args)
        except ProviderError as exc:
            if not teacher.retry.should_retry(exc, attempt):
                raise
            await anyio.sleep(teacher.retry.delay(attempt, exc.retry_after))
