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
import threading
from collections.abc import AsyncIterable, Iterable
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.to_thread
import attrs
from anyio.abc import TaskGroup

from tracedistill._jsonl import JsonlFile
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
from tracedistill.teachers.cost import Reservation
from tracedistill.teachers.engine import (
    GenerationRun,
    GenerationSummary,
    StopReason,
    iter_problem_batches,
)

__all__ = ["BatchGeneration", "BatchState", "generate_batch"]

logger = logging.getLogger(__name__)


class BatchState:
    """The append-only record of submitted batches (``<store>/batches-<teacher>.jsonl``).

    Each line is ``{"batch": id, "requests": [[key, problem_id, sample_index], ...]}`` when a
    batch is submitted, and ``{"batch": id, "done": true}`` once its results are stored.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.pending: dict[str, list[tuple[str, str, int]]] = {}
        # The shared JSONL file cuts a torn last line before the next append, so a later
        # "done" record is never glued onto it (and its batch left pending forever); salvage
        # reads records an older writer glued that way.
        self._file = JsonlFile(self.path)
        self._lock = threading.Lock()
        for record in self._file.records(salvage=True):
            if record.get("done"):
                self.pending.pop(record["batch"], None)
            else:
                self.pending[record["batch"]] = [tuple(r) for r in record["requests"]]

    def _append(self, record: dict[str, Any]) -> None:
        # Batches are recorded from worker threads, several at once: one append at a time, the
        # file opened for it and closed after it.
        with self._lock, self._file:
            self._file.append(record, sync=True)

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


class BatchGeneration(GenerationRun):
    """One :func:`generate_batch` call: chunks of requests submitted, watched and collected.

    The arguments are :func:`generate_batch`'s (see there); :meth:`run` does the work once.
    """

    def __init__(
        self,
        teacher: Teacher,
        store: TraceStore,
        *,
        n: int = 1,
        batch_size: int = 5000,
        poll_interval: float = 30.0,
        budget_usd: float | None = None,
        state_path: str | Path | None = None,
        progress: bool | None = None,
    ) -> None:
        if not isinstance(teacher, SupportsBatch):
            raise ConfigurationError(
                f"{teacher.name!r} ({type(teacher).__name__}) has no batch API"
            )
        if n < 1 or batch_size < 1 or poll_interval <= 0:
            raise ConfigurationError("n and batch_size must be >= 1 and poll_interval > 0")
        if budget_usd is not None and teacher.pricing is None:
            raise ConfigurationError(
                "budget_usd with a batch API needs the teacher's pricing= (batch results carry "
                "no cost)"
            )
        super().__init__(teacher, store, n=n, budget_usd=budget_usd)
        self.batcher = cast(SupportsBatch, teacher)
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.capped = budget_usd is not None
        self.state_file = _state_path(store, teacher, state_path)
        self.state: BatchState | None = None
        self.bar = Progress(None, f"batch {teacher.name}", unit="req", enabled=progress)
        self.reservations: dict[str, Reservation] = {}

    async def run(self, problems: Iterable[Problem] | AsyncIterable[Problem]) -> GenerationSummary:
        """Submit every request still needed, wait for every batch and store its results."""
        self.state = state = await anyio.to_thread.run_sync(BatchState, self.state_file)
        try:
            async with anyio.create_task_group() as tg:
                for batch_id in list(state.pending):
                    logger.info("resuming batch %s", batch_id)
                    tg.start_soon(self._watch, batch_id)
                await self._submit_pool(problems, state.pending_keys(), tg)
        finally:
            self.bar.close()
        self.attempts = self.done + self.failed
        return self.summary()

    async def _submit_pool(
        self,
        problems: Iterable[Problem] | AsyncIterable[Problem],
        pending: set[str],
        tg: TaskGroup,
    ) -> None:
        chunk: list[TeacherRequest] = []
        async for problems_batch in iter_problem_batches(problems):
            await self.add_problems(problems_batch)
            for problem in problems_batch:
                for index in range(self.n):
                    request = self.teacher.request(problem, index)
                    if self.store.has(request.key) or request.key in pending:
                        self.skipped += 1
                        continue
                    pending.add(request.key)
                    chunk.append(request)
                    if len(chunk) >= self.batch_size:
                        await self._submit(chunk, tg)
                        chunk = []
            if self.stopped:
                return
        if chunk:
            await self._submit(chunk, tg)

    async def _submit(self, chunk: list[TeacherRequest], tg: TaskGroup) -> None:
        """Submit a chunk, halving it while its worst case does not fit the budget."""
        teacher, batcher = self.teacher, self.batcher
        worst = [teacher.worst_case_cost(r) for r in chunk]
        while chunk:
            total = sum(w or 0.0 for w in worst[: len(chunk)]) * batcher.batch_discount
            try:
                reservation = await self.budget.reserve(total if self.capped else None)
            except BudgetExceededError as exc:
                if len(chunk) == 1:
                    if self.stopped is None:
                        self.stopped, self.error = StopReason.BUDGET, exc
                    return
                rest = chunk[len(chunk) // 2 :]
                chunk = chunk[: len(chunk) // 2]
                await self._submit(chunk, tg)
                chunk, worst = rest, [teacher.worst_case_cost(r) for r in rest]
                continue
            batch_id = await _retrying(teacher, batcher.submit_batch, chunk)
            assert self.state is not None
            await anyio.to_thread.run_sync(self.state.submitted, batch_id, chunk)
            self.reservations[batch_id] = reservation
            self.requested += len(chunk)
            logger.info("submitted batch %s (%d requests)", batch_id, len(chunk))
            tg.start_soon(self._watch, batch_id)
            return

    async def _watch(self, batch_id: str) -> None:
        while True:
            status = await _retrying(self.teacher, self.batcher.poll_batch, batch_id)
            if status.done:
                await self._collect(status)
                return
            await anyio.sleep(self.poll_interval)

    async def _collect(self, status: BatchStatus) -> None:
        """Store a finished batch's results, settle its reservation, mark it finished."""
        state = self.state
        assert state is not None
        entries = state.pending.get(status.id, [])
        results = dict(await self.batcher.batch_results(status))
        spent = 0.0
        for key, problem_id, sample_index in entries:
            request = self._request_for(status, key, problem_id, sample_index)
            if request is None:
                continue
            outcome = results.get(key)
            if outcome is None:
                outcome = ProviderUnavailableError(
                    f"{self.teacher.name}: batch {status.id} ({status.status}) returned no result"
                )
            trace = self._scaled(self.teacher.outcome_trace(request, outcome))
            with anyio.CancelScope(shield=True):
                written = await self.store.add_trace(trace)
            if written:
                spent += trace.cost_usd or 0.0
                self.record(trace, attempts=0)
        reservation = self.reservations.pop(status.id, None)
        if reservation is not None:
            self.budget.settle(reservation, spent)
        else:
            self.budget.charge(spent)
        await anyio.to_thread.run_sync(state.finished, status.id)
        self.bar.advance(
            len(entries),
            done=self.done,
            failed=self.failed,
            trunc=self.truncated,
            **{"$": self.spend_usd},
        )

    def _request_for(
        self, status: BatchStatus, key: str, problem_id: str, sample_index: int
    ) -> TeacherRequest | None:
        """The request a recorded batch entry stands for, or None when it no longer matches."""
        problem = self.store.problem(problem_id)
        if problem is None:
            logger.warning("batch %s: problem %s is not in the store", status.id, problem_id)
            return None
        request = self.teacher.request(problem, sample_index)
        if request.key != key:
            logger.warning(
                "batch %s: request %s no longer matches the teacher's prompt or parameters; "
                "its result is ignored",
                status.id,
                key,
            )
            return None
        return request

    def _scaled(self, trace: Trace) -> Trace:
        """A trace costed at list prices, at the batch discount."""
        if trace.cost_usd is None or not trace.cost_estimated:
            return trace
        return attrs.evolve(trace, cost_usd=trace.cost_usd * self.batcher.batch_discount)


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
    generation = BatchGeneration(
        teacher,
        store,
        n=n,
        batch_size=batch_size,
        poll_interval=poll_interval,
        budget_usd=budget_usd,
        state_path=state_path,
        progress=progress,
    )
    return await generation.run(problems)


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
