"""The generation engine: stream problems through a teacher into a trace store.

:func:`generate` reads problems from any iterable or async iterable without materializing it,
stores each problem as it streams, skips every request key already answered (so a rerun
resumes), keeps to the rate limits and the budget, and stores each trace the moment it is
answered, so cancelling the run (Ctrl-C, a cancel scope, a killed process) loses nothing
already answered.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Sized
from itertools import islice
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from tracedistill import _lazy
from tracedistill._progress import Progress
from tracedistill.clients.ratelimit import LimiterClosed, RateLimiter, RateLimits
from tracedistill.errors import BudgetExceededError, ConfigurationError, ProviderError
from tracedistill.records import FinishReason, Problem, Trace
from tracedistill.store.base import TraceStore
from tracedistill.teachers._handoff import Handoff
from tracedistill.teachers.base import Teacher, TeacherRequest
from tracedistill.teachers.cost import Budget
from tracedistill.teachers.summary import GenerationSummary, StopReason

__all__ = [
    "GenerationRun",
    "GenerationSummary",
    "StopReason",
    "StreamingGeneration",
    "generate",
    "iter_problem_batches",
]

logger = logging.getLogger(__name__)

_BATCH = 256  # problems read (and stored) per step of the producer


async def iter_problem_batches(
    problems: Iterable[Problem] | AsyncIterable[Problem],
) -> AsyncIterator[list[Problem]]:
    """Yield the problems in lists of up to 256, reading a sync iterable in a worker thread."""
    if isinstance(problems, AsyncIterable):
        batch: list[Problem] = []
        async for problem in problems:
            batch.append(problem)
            if len(batch) >= _BATCH:
                yield batch
                batch = []
        if batch:
            yield batch
        return
    iterator: Iterator[Problem] = iter(problems)
    in_memory = isinstance(problems, list | tuple)
    while True:
        # A sync iterable may read files or a dataset: pull it in a worker thread.
        if in_memory:
            batch = list(islice(iterator, _BATCH))
        else:
            batch = await anyio.to_thread.run_sync(lambda: list(islice(iterator, _BATCH)))
        if not batch:
            return
        yield batch


class GenerationRun:
    """What every way of generating shares: counters, the budget, the stop switch, the summary.

    One object per call. :class:`StreamingGeneration` (behind :func:`generate`) sends one request
    per sample; the batch path (:func:`~tracedistill.teachers.batch.generate_batch`) submits
    provider-side batches. Both store problems with :meth:`add_problems`, count each stored
    trace with :meth:`record` and end with :meth:`summary`.
    """

    def __init__(
        self,
        teacher: Teacher,
        store: TraceStore,
        *,
        n: int = 1,
        budget_usd: float | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        if not isinstance(n, int) or n < 1:
            raise ConfigurationError(f"n must be an integer >= 1, got {n!r}")
        self.teacher = teacher
        self.store = store
        self.n = n
        self.limiter = limiter
        self.budget = Budget(budget_usd, spent_usd=store.spend_usd())
        self.spent_before = self.budget.spent_usd
        self.started = time.monotonic()
        self.stopping = anyio.Event()
        #: mirrors ``stopping``: the workers read it once or twice per request, and an attribute
        #: costs less than asking the event
        self.halted = False
        self.stopped: str | None = None
        self.error: BaseException | None = None
        self.problems = self.requested = self.skipped = 0
        self.done = self.truncated = self.failed = self.resampled = 0
        self.attempts = self.input_tokens = self.output_tokens = 0

    @property
    def spend_usd(self) -> float:
        """What this call spent so far."""
        return self.budget.spent_usd - self.spent_before

    def stop(self, reason: str, error: BaseException) -> None:
        """Start no new request (``reason`` is a :class:`StopReason` value); keep the first."""
        if self.stopped is None:
            self.stopped = reason
            self.error = error
            logger.warning("generation stopping (%s): %s", reason, error)
        self.halted = True
        self.stopping.set()
        self.budget.close()
        if reason == StopReason.FATAL and self.limiter is not None:
            self.limiter.close()

    async def add_problems(self, batch: list[Problem]) -> None:
        """Store a batch of problems read from the pool (those already stored are skipped)."""
        await self.store.add_problems(batch)
        self.problems += len(batch)

    def record(self, trace: Trace, *, attempts: int | None = None) -> None:
        """Count a stored trace (``attempts`` overrides the trace's own count)."""
        self.attempts += trace.attempts if attempts is None else attempts
        usage = trace.usage
        self.input_tokens += usage.prompt_tokens
        self.output_tokens += usage.completion_tokens
        finish = trace.finish_reason  # Trace.ok and .truncated, read without two calls
        if finish is FinishReason.ERROR:
            self.failed += 1
        else:
            self.done += 1
            self.truncated += finish is FinishReason.LENGTH

    def summary(self) -> GenerationSummary:
        """What this call did so far."""
        limiter = self.limiter
        state = None if limiter is None else limiter.state()
        return GenerationSummary(
            teacher=self.teacher.name,
            model=self.teacher.model,
            problems=self.problems,
            requested=self.requested,
            skipped=self.skipped,
            done=self.done,
            truncated=self.truncated,
            failed=self.failed,
            resampled=self.resampled,
            attempts=self.attempts,
            throttled=0 if limiter is None else limiter.throttled,
            overloaded=0 if limiter is None else limiter.overloaded,
            cuts=0 if limiter is None else limiter.cuts,
            paused_s=0.0 if state is None else state.paused_s,
            limiter=state,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            spend_usd=self.spend_usd,
            total_spend_usd=self.store.spend_usd(),
            elapsed_s=time.monotonic() - self.started,
            stopped=self.stopped,
            error=None if self.error is None else str(self.error),
        )


class StreamingGeneration(GenerationRun):
    """One :func:`generate` call: a producer reads the pool, workers run one request each.

    The arguments are :func:`generate`'s (see there); :meth:`run` does the work once.
    """

    def __init__(
        self,
        teacher: Teacher,
        store: TraceStore,
        *,
        n: int = 1,
        concurrency: int = 64,
        budget_usd: float | None = None,
        limits: RateLimits | None = None,
        resample_truncated: bool | int = False,
        retry_failed: bool = True,
        progress: bool | None = None,
        total: int | None = None,
        fatal_grace_s: float = 10.0,
        limiter: RateLimiter | None = None,
    ) -> None:
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        if budget_usd is not None and not teacher.can_cost:
            raise ConfigurationError(
                f"budget_usd needs a cost per response, but {teacher.name!r} reports none and "
                f"has no pricing: pass pricing=Pricing(input_per_million=..., "
                f"output_per_million=...) to the teacher"
            )
        max_resamples = int(resample_truncated) if resample_truncated is not True else 1
        if max_resamples < 0:
            raise ConfigurationError(f"resample_truncated must be >= 0, got {resample_truncated!r}")
        if limiter is None:
            limiter = RateLimiter(limits, max_concurrency=concurrency)
        elif limits is not None:
            raise ConfigurationError(
                "pass limits= or limiter=, not both (the limiter has its limits)"
            )
        else:
            concurrency = limiter.max_concurrency
        super().__init__(teacher, store, n=n, budget_usd=budget_usd, limiter=limiter)
        self.rate_limiter = limiter
        self.concurrency = concurrency
        self.max_resamples = max_resamples
        self.retry_failed = retry_failed
        self.fatal_grace_s = fatal_grace_s
        self.bar = Progress(
            None if total is None else total * n,
            f"generate {teacher.name}",
            unit="req",
            enabled=progress,
        )
        self.inflight: set[str] = set()  # request keys sent to a worker and not finished
        self.workers_alive = 0
        #: requests waiting out a back-off between two attempts (they hold no slot)
        self.resting = 0
        self.shown = 0  # progress-bar position already shown
        self.history: collections.deque[tuple[float, int, int]] = collections.deque()
        self.watch = _Watch(limiter)
        self._workers: TaskGroup | None = None
        self._queue: Handoff[TeacherRequest] = Handoff(concurrency)

    async def run(self, problems: Iterable[Problem] | AsyncIterable[Problem]) -> GenerationSummary:
        """Stream ``problems`` through the teacher into the store; return the summary.

        Raises:
            ProviderError: the fatal error that stopped the run (401/402/403).
        """
        if self.budget.limit_usd is not None and self.teacher.pricing is None:
            # Without prices a request is reserved at the largest cost seen; a resumed run
            # starts from what this teacher's stored traces cost rather than from nothing.
            self.budget.max_seen_usd = await anyio.to_thread.run_sync(
                _max_cost, self.store, self.teacher.name
            )
        try:
            await self._run_tasks(problems)
            self._show()
        except BaseExceptionGroup as group:
            # One failure (a store error, a bug) is raised as itself, not wrapped in a group.
            single = _single(group)
            if single is None:
                raise
            raise single from None
        finally:
            self.bar.close()
        summary = self.summary()
        logger.info("%s", summary)
        if self.stopped == StopReason.FATAL and self.error is not None:
            raise self.error
        return summary

    async def _run_tasks(self, problems: Iterable[Problem] | AsyncIterable[Problem]) -> None:
        limiter = self.rate_limiter
        async with anyio.create_task_group() as outer:
            outer.start_soon(self._tick)
            try:
                async with anyio.create_task_group() as workers:
                    self._workers = workers
                    outer.start_soon(self._stop_after_fatal, workers.cancel_scope)
                    limiter.on_detach = self._add_worker
                    for _ in range(self.concurrency):
                        workers.start_soon(self._work)
                    try:
                        await self._produce(problems)
                    finally:
                        self._queue.close()
            finally:
                limiter.on_detach = None
                self._workers = None
            outer.cancel_scope.cancel()

    def _add_worker(self) -> None:
        # A stalled request gave its slot back, or one is backing off: another worker takes
        # the slot, so a stall holds one slot, never the run.
        workers = self._workers
        if workers is not None and self.workers_alive < self._worker_cap():
            workers.start_soon(self._work)

    def _worker_cap(self) -> int:
        # A request backing off holds a worker but no slot: up to ``concurrency`` more workers
        # use the slots meanwhile (3% of 529s, each waiting about a second, left an outside
        # run at 0.91 of the fault-free rate). Capped, so that back-offs never multiply them.
        resting = min(self.resting, self.concurrency)
        return self.concurrency + self.rate_limiter.detached + resting

    async def _produce(self, problems: Iterable[Problem] | AsyncIterable[Problem]) -> None:
        # The next batch is read and stored while this one is handed out: reading (a worker
        # thread for a sync iterable) and storing (an fsync now and then) never leave the
        # workers without requests.
        send, receive = anyio.create_memory_object_stream[list[Problem]](1)
        async with anyio.create_task_group() as reader:
            reader.start_soon(self._read_ahead, problems, send)
            with receive:
                async for batch in receive:
                    if not await self._hand_out(batch):
                        break
            reader.cancel_scope.cancel()

    async def _read_ahead(
        self,
        problems: Iterable[Problem] | AsyncIterable[Problem],
        send: MemoryObjectSendStream[list[Problem]],
    ) -> None:
        with send:
            async for batch in iter_problem_batches(problems):
                if self.stopping.is_set():
                    return
                await self.add_problems(batch)
                await send.send(batch)

    async def _hand_out(self, batch: list[Problem]) -> bool:
        """Queue the requests of a stored batch; False once the run is stopping."""
        queue = self._queue
        for problem in batch:
            for index in range(self.n):
                if self.halted:
                    return False
                request = self.wanted(problem, index)
                if request is None:
                    self.skipped += 1
                    continue
                self.inflight.add(request.key)
                # Hands the request over without a trip through the event loop; waits only
                # while a full queue's worth is waiting for the workers.
                queue.put(request)
                if queue.full:
                    await queue.room()
        return True

    def wanted(self, problem: Problem, index: int) -> TeacherRequest | None:
        """The request still needed for sample ``index`` of ``problem``, or None."""
        request = self.teacher.request(problem, index)
        key = request.key
        if key in self.inflight:
            return None
        if not self.store.has(key):
            if not self.retry_failed and self.store.has_failure(key):
                return None
            return request
        if not self.max_resamples:
            return None
        return self._replacement(problem, index, request)

    def _replacement(
        self, problem: Problem, index: int, request: TeacherRequest
    ) -> TeacherRequest | None:
        # A truncated response may be replaced by a new sample at index + n*k (k = 1, 2, ...),
        # so reruns find the same replacements instead of buying new ones.
        store = self.store
        for k in range(self.max_resamples + 1):
            if k:
                request = self.teacher.request(problem, index + self.n * k)
                if request.key in self.inflight:
                    return None
                if not store.has(request.key):
                    if not self.retry_failed and store.has_failure(request.key):
                        return None
                    self.resampled += 1
                    return request
            stored = store.get(request.key)
            if stored is None or not stored.truncated:
                return None
        return None

    async def _work(self) -> None:
        self.workers_alive += 1
        queue = self._queue
        try:
            while True:
                request = queue.take_nowait()
                if request is None:
                    request = await queue.take()
                    if request is None:
                        return  # the producer is done and nothing is left
                try:
                    if not self.halted:
                        await self._handle(request)
                finally:
                    self.inflight.discard(request.key)
                # A worker added for a stalled or resting request leaves once one ended.
                alive = self.workers_alive
                if alive > self.concurrency and alive > self._worker_cap():
                    return
        finally:
            self.workers_alive -= 1

    async def _handle(self, request: TeacherRequest) -> None:
        budget = self.budget
        if budget.limit_usd is None:
            reservation = budget.reserve_uncapped()  # no cap: no await, nothing to price
        else:
            try:
                reservation = await budget.reserve(self.teacher.worst_case_cost(request))
            except BudgetExceededError as exc:
                if self.stopped is None:
                    self.stop(StopReason.BUDGET, exc)
                return
        self.requested += 1
        try:
            trace = await self.teacher.run(
                request, limiter=self.rate_limiter, retry_wait=self.sleep
            )
        except LimiterClosed:
            budget.settle(reservation, None)
            return
        except ProviderError as exc:
            budget.settle(reservation, None)
            self.stop(StopReason.FATAL, exc)
            return
        except BaseException:
            budget.settle(reservation, None)
            raise
        budget.settle(reservation, trace.cost_usd)
        # Once answered, a trace is stored even if the run is being cancelled: a store that can
        # write it without waiting cannot be interrupted; one that must wait is shielded.
        store = self.store
        try:
            store.add_trace_nowait(trace)
        except anyio.WouldBlock:
            with anyio.CancelScope(shield=True):
                await store.add_trace(trace)
        self.record(trace)

    async def sleep(self, seconds: float) -> None:
        """Sleep between attempts; wake and give up when the run stops for a fatal error.

        Another worker takes the slots meanwhile (see :meth:`_worker_cap`).
        """
        self.resting += 1
        self._add_worker()
        try:
            with anyio.move_on_after(seconds):
                await self.stopping.wait()
        finally:
            self.resting -= 1
        if self.rate_limiter.closed:
            raise LimiterClosed("the run is stopping; no new request starts")

    async def _tick(self) -> None:
        while True:
            await anyio.sleep(0.25)
            self.rate_limiter.reap()
            self.watch.check()
            self._show()

    async def _stop_after_fatal(self, scope: anyio.CancelScope) -> None:
        await self.stopping.wait()
        if self.stopped == StopReason.FATAL:
            await anyio.sleep(self.fatal_grace_s)
            scope.cancel()

    def _show(self) -> None:
        now = time.monotonic()
        finished = self.done + self.failed
        tokens = self.input_tokens + self.output_tokens
        history = self.history
        history.append((now, finished, tokens))
        while len(history) > 2 and now - history[0][0] > 30.0:
            history.popleft()
        t0, f0, k0 = history[0]
        span = now - t0
        counters: dict[str, Any] = {
            "done": self.done,
            "failed": self.failed,
            "trunc": self.truncated,
            "skip": self.skipped,
        }
        if span > 0:
            counters["req/min"] = (finished - f0) * 60.0 / span
            counters["tok/min"] = (tokens - k0) * 60.0 / span
        counters["$"] = self.spend_usd
        limiter = self.rate_limiter
        rate = limiter.request_rate
        counters["rate"] = "-" if rate is None else f"{rate * 60.0:,.0f}/min"
        counters["conc"] = f"{limiter.inflight}/{limiter.concurrency}"
        counters["429"] = limiter.throttled
        counters["ovl"] = limiter.overloaded
        position = self.skipped + finished
        self.bar.advance(max(position - self.shown, 0), **counters)
        self.shown = position


async def generate(
    teacher: Teacher,
    problems: Iterable[Problem] | AsyncIterable[Problem],
    store: TraceStore,
    *,
    n: int = 1,
    concurrency: int = 64,
    budget_usd: float | None = None,
    limits: RateLimits | None = None,
    resample_truncated: bool | int = False,
    retry_failed: bool = True,
    progress: bool | None = None,
    total: int | None = None,
    fatal_grace_s: float = 10.0,
    limiter: RateLimiter | None = None,
) -> GenerationSummary:
    """Generate ``n`` traces per problem with ``teacher`` and store them in ``store``.

    Args:
        teacher: the teacher to ask.
        problems: any iterable or async iterable of problems; read in small batches, never
            materialized. Each problem is stored (``store.add_problems``) as it streams.
        store: where problems and traces go. Request keys already answered there are skipped,
            so running the same call again resumes it.
        n: samples per problem (sample indices ``0..n-1``, each its own request key).
        concurrency: the most requests in flight; the limiter lowers it after 429s and
            raises it back gradually.
        budget_usd: a hard cap on the store's total spend in USD (every run of this store
            counts, so a resumed run continues the same budget). No request starts once spend
            plus the worst case of the requests in flight could pass it.
        limits: requests/min and tokens/min to keep to (default: learned from the provider).
        resample_truncated: also ask again for samples whose stored response was truncated, up
            to this many extra requests per sample (``True`` = 1). Off by default: a truncated
            response is stored and never bought again silently.
        retry_failed: ask again for samples whose stored attempt failed (default True).
        progress: show a progress bar (default: on unless ``TRACEDISTILL_PROGRESS=0``).
        total: the number of problems, for the progress bar when ``problems`` has no length.
        fatal_grace_s: after a fatal error (401/402/403), how long requests already in flight
            may take before they are cancelled.
        limiter: a :class:`RateLimiter` to use instead of a new one (``limits`` and
            ``concurrency`` then come from it): share one between runs that draw on the same
            provider key, or read its :meth:`~RateLimiter.state` while the run goes on.

    Returns:
        A :class:`GenerationSummary`; ``stopped == "budget"`` when the budget ran out.

    Raises:
        AuthenticationError: the provider rejected the credentials (no new request started
            after the first rejection; every response already received is stored).
        InsufficientCreditsError: the provider account ran out of credits (same).
        ConfigurationError: invalid arguments.
    """
    if total is None and isinstance(problems, Sized):
        total = len(problems)
    generation = StreamingGeneration(
        teacher,
        store,
        n=n,
        concurrency=concurrency,
        budget_usd=budget_usd,
        limits=limits,
        resample_truncated=resample_truncated,
        retry_failed=retry_failed,
        progress=progress,
        total=total,
        fatal_grace_s=fatal_grace_s,
        limiter=limiter,
    )
    return await generation.run(problems)


class _Watch:
    """Warns once per limit when its allowed rate stays under half the configured one."""

    PERIOD = 60.0

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter
        self.low_since: dict[str, float] = {}
        self.warned: set[str] = set()

    def check(self) -> None:
        """Look at the allowed rates now; warn about one low for a whole PERIOD."""
        limiter = self.limiter
        limits = limiter.limits
        configured = {
            "requests": limits.requests_per_minute,
            "input tokens": limits.input_tokens_per_minute,
            "output tokens": limits.output_tokens_per_minute,
            "tokens": limits.tokens_per_minute,
        }
        if all(value is None for value in configured.values()):
            return
        state = limiter.state()
        allowed = {
            "requests": state.request_rate,
            "input tokens": state.input_tokens_rate,
            "output tokens": state.output_tokens_rate,
            "tokens": state.tokens_rate,
        }
        now = time.monotonic()
        for name, limit in configured.items():
            rate = allowed[name]
            if name in self.warned or limit is None or rate is None:
                continue
            if rate >= limit / 2.0:
                self.low_since.pop(name, None)
                continue
            since = self.low_since.setdefault(name, now)
            if now - since >= self.PERIOD:
                self.warned.add(name)
                logger.warning(
                    "the provider has accepted under half the configured %.0f %s/min for a "
                    "minute (allowed now: %.0f/min); is the configured limit right? %s",
                    limit,
                    name,
                    rate,
                    state.describe(),
                )


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside (nested) groups, or None when there are several."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(exc.exceptions)
        else:
            leaves.append(exc)
    return leaves[0] if len(leaves) == 1 else None


def _max_cost(store: TraceStore, teacher: str) -> float | None:
    costs = [t.cost_usd for t in store.traces(teacher=teacher) if t.cost_usd]
    return max(costs) if costs else None


# ``Generation`` also names the experiment's generation settings; the engine's object was
# renamed. The old name is kept (it warns) for one release.
if TYPE_CHECKING:
    Generation = GenerationRun
else:
    __getattr__ = _lazy.deprecated(
        __name__, {"Generation": "tracedistill.teachers.engine.GenerationRun"}
    )
