"""The Teacher interface: a problem (plus prompt template and sampling parameters) in, a trace out.

A backend implements one method, :meth:`Teacher.complete`, which makes exactly one attempt and
either returns a :class:`TeacherCompletion` or raises a :class:`~tracedistill.errors.ProviderError`.
Everything else is shared here: building the messages and the request key, retries by error
class, rate limiting, timing and costing, and turning the outcome into a
:class:`~tracedistill.records.Trace` (a failed request becomes a trace with
``finish_reason=FinishReason.ERROR``).
"""

from __future__ import annotations

import abc
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, runtime_checkable

import anyio
import attrs

from tracedistill import _lazy
from tracedistill.clients.base import Observer, Reply
from tracedistill.clients.ratelimit import Permit, RateLimiter
from tracedistill.clients.retry import RetryPolicy, retry_call
from tracedistill.errors import (
    ConfigurationError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
)
from tracedistill.prompts import DEFAULT_PROMPTS, PromptSet
from tracedistill.records import (
    FinishReason,
    Message,
    Problem,
    SamplingParams,
    Trace,
    request_key,
)
from tracedistill.records.base import trusted_maker
from tracedistill.records.traces import assemble_trace
from tracedistill.teachers.cost import Pricing

__all__ = [
    "BatchStatus",
    "Observer",
    "SupportsBatch",
    "Teacher",
    "TeacherCompletion",
    "TeacherRequest",
]

logger = logging.getLogger(__name__)


@attrs.frozen(slots=True, kw_only=True)
class TeacherRequest:
    """One request for one sample of one problem, with the key it is stored under."""

    problem: Problem
    messages: tuple[Message, ...]
    params: SamplingParams | None
    sample_index: int
    key: str


_MAKE_REQUEST = trusted_maker(TeacherRequest)


#: What one successful attempt returned, normalized to reasoning plus answer: the provider
#: parsers' :class:`~tracedistill.clients.base.Reply` (one record for clients and teachers).
TeacherCompletion = Reply


if TYPE_CHECKING:
    #: Deprecated alias of :class:`TeacherCompletion` (kept one release; the name
    #: :class:`~tracedistill.records.Completion` is a model's answer to a prompt).
    Completion = TeacherCompletion
else:
    __getattr__ = _lazy.deprecated(__name__, {"Completion": f"{__name__}.TeacherCompletion"})


@attrs.frozen(slots=True, kw_only=True)
class BatchStatus:
    """Where a provider-side batch stands.

    Attributes:
        id: the provider's batch id.
        done: whether the provider finished with it (results, if any, can be read).
        status: the provider's own status word.
        counts: the provider's request counts.
        handles: what is needed to read the results (file ids, a results URL).
    """

    id: str
    done: bool
    status: str
    counts: dict[str, Any] = attrs.field(factory=dict)
    handles: dict[str, Any] = attrs.field(factory=dict)


BatchResult = tuple[str, "TeacherCompletion | ProviderError"]


@runtime_checkable
class SupportsBatch(Protocol):
    """A teacher whose provider has a batch API (half price, results within a day)."""

    batch_discount: float

    async def submit_batch(self, requests: Sequence[TeacherRequest]) -> str:
        """Submit requests as one batch (``custom_id`` = request key); return the batch id."""
        ...

    async def poll_batch(self, batch_id: str) -> BatchStatus:
        """Return where a batch stands."""
        ...

    async def batch_results(self, status: BatchStatus) -> list[BatchResult]:
        """Return ``(request key, completion or error)`` for every result of a finished batch."""
        ...


def _report_failure(limiter: RateLimiter, permit: Permit, error: ProviderError) -> None:
    """Tell the limiter how an attempt failed: throttled, overloaded, or otherwise."""
    if isinstance(error, RateLimitError):
        limiter.on_throttled(error.retry_after, permit=permit)
    elif isinstance(error, ProviderUnavailableError | ProviderTimeoutError):
        # 5xx, 529, lost connections, timeouts, unreadable or error bodies: not a rate signal
        limiter.on_overload(permit)
    else:
        limiter.on_failure(permit)


def _max_tokens(params: SamplingParams | None) -> int:
    return 0 if params is None else params.max_tokens


class Teacher(abc.ABC):
    """A model (or a dataset) that answers problems with reasoning traces.

    Args:
        model: the model id sent to the provider (part of every request key).
        name: the teacher id stored in ``Trace.teacher`` (default: the model id).
        params: the sampling parameters (part of every request key).
        prompts: the per-task prompt templates.
        pricing: per-million-token prices, used when the provider reports no cost.
        retry: how retryable failures are retried.
        timeout: seconds one attempt may take in all before it counts as timed out.
    """

    #: whether the provider reports each response's cost itself
    reports_cost: bool = False
    #: whether requests go to a rate-limited provider (False for replayed datasets)
    rate_limited: bool = True
    # the last limiter's isolated-failure check (a class default: subclasses may skip __init__)
    _isolated_cache: tuple[RateLimiter, Callable[[ProviderError], bool]] | None = None

    def __init__(
        self,
        *,
        model: str,
        name: str | None = None,
        params: SamplingParams | None = None,
        prompts: PromptSet | None = None,
        pricing: Pricing | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = 600.0,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise ConfigurationError(f"model must be a non-empty string, got {model!r}")
        if timeout is not None and timeout <= 0:
            raise ConfigurationError(f"timeout must be > 0 seconds or None, got {timeout!r}")
        self.model = model
        self.name = name or model
        self.params = params
        self.prompts = prompts or DEFAULT_PROMPTS
        self.pricing = pricing
        self.retry = retry or RetryPolicy()
        self.timeout = timeout

    # --- requests ------------------------------------------------------------------------------

    def messages(self, problem: Problem) -> tuple[Message, ...]:
        """The chat messages sent for ``problem``."""
        return self.prompts.render(problem)

    def request(self, problem: Problem, sample_index: int = 0) -> TeacherRequest:
        """Build the request for one sample of ``problem``, with its request key."""
        messages = self.messages(problem)
        params = self.params
        key = request_key(self.model, messages, params, sample_index)
        # What TeacherRequest(...) builds (it has no validators), at about a third of the cost:
        # this runs once per request.
        request: TeacherRequest = _MAKE_REQUEST(problem, messages, params, sample_index, key)
        return request

    def request_key(self, problem: Problem, sample_index: int = 0) -> str:
        """The key the trace for this sample of ``problem`` is stored under."""
        return self.request(problem, sample_index).key

    def estimate_input_tokens(self, request: TeacherRequest) -> int:
        """A rough prompt size in tokens, for rate limiting before the provider counts it."""
        messages = request.messages
        chars = 0
        for m in messages:  # a loop, not sum(genexpr): this runs once per request
            chars += len(m.content)
        return chars // 4 + 8 * len(messages)

    @property
    def can_cost(self) -> bool:
        """Whether this teacher can put a price on its responses (for budgets)."""
        return self.reports_cost or self.pricing is not None

    def worst_case_cost(self, request: TeacherRequest) -> float | None:
        """The most a request can cost, or None when prices are unknown."""
        if self.pricing is None:
            return None
        return self.pricing.worst_case(
            self.estimate_input_tokens(request), _max_tokens(request.params)
        )

    # --- the one method a backend implements -------------------------------------------------

    @abc.abstractmethod
    async def complete(
        self, request: TeacherRequest, *, observe: Observer | None = None
    ) -> TeacherCompletion:
        """Make one attempt at ``request``.

        Raises:
            ProviderError: the attempt failed (its subclass says whether it may be retried).
        """

    # --- shared machinery --------------------------------------------------------------------

    async def generate(self, problem: Problem, *, sample_index: int = 0) -> Trace:
        """Answer one sample of ``problem``, retrying as the retry policy says.

        Returns a trace; a request that failed after its retries is a trace with
        ``finish_reason=FinishReason.ERROR`` and ``error`` set.

        Raises:
            AuthenticationError: the credentials were rejected (401/403).
            InsufficientCreditsError: the account is out of credits (402).
        """
        return await self.run(self.request(problem, sample_index))

    async def run(
        self,
        request: TeacherRequest,
        *,
        limiter: RateLimiter | None = None,
        retry_wait: Callable[[float], Any] | None = None,
    ) -> Trace:
        """Run ``request`` to a trace: attempts, rate limiting and back-off.

        The attempts go through the package's one retry loop,
        :func:`~tracedistill.clients.retry.retry_call`, each inside the limiter; the error
        that ends it becomes a failed trace (a fatal one is raised).

        Args:
            request: what to ask.
            limiter: the run's rate limiter (each attempt takes a slot and a permit).
            retry_wait: an awaitable factory used to sleep between attempts (default
                ``anyio.sleep``); the engine passes one that wakes when the run stops.

        Raises:
            ProviderError: a fatal error (401/402/403).
            LimiterClosed: the run stopped before an attempt could start.
        """
        started = time.monotonic()
        input_estimate = self.estimate_input_tokens(request) if limiter is not None else 0
        outcome, attempts = await retry_call(
            self.retry,
            self._attempt,
            request,
            limiter,
            input_estimate,
            _max_tokens(request.params),
            wait=retry_wait,
            isolated=None if limiter is None else self._isolated_for(limiter),
            label=request.key,
        )
        latency = time.monotonic() - started
        if isinstance(outcome, ProviderError):
            if outcome.fatal:
                raise outcome
            return self._error_trace(request, outcome, attempts, latency)
        return self._trace(request, outcome, attempts, latency)

    def _isolated_for(self, limiter: RateLimiter) -> Callable[[ProviderError], bool]:
        # One partial per limiter, not one per request.
        cached = self._isolated_cache
        if cached is None or cached[0] is not limiter:
            cached = self._isolated_cache = (limiter, functools.partial(_isolated, limiter=limiter))
        return cached[1]

    async def _attempt(
        self,
        request: TeacherRequest,
        limiter: RateLimiter | None,
        input_estimate: int,
        output_reserve: int,
    ) -> TeacherCompletion:
        if limiter is None:
            return await self._timed(request, None)
        async with limiter.slot() as lease:
            permit = await limiter.acquire(input_estimate, output_reserve)
            lease.begin()
            sent = time.monotonic()
            try:
                completion = await self._timed(request, limiter.observe)
            except ProviderError as exc:
                limiter.settle(permit, input_tokens=None, output_tokens=0)
                _report_failure(limiter, permit, exc)
                raise
            except BaseException:
                limiter.settle(permit, input_tokens=None, output_tokens=0)
                raise
            usage = completion.usage
            limiter.settle(
                permit,
                input_tokens=usage.prompt_tokens or None,
                output_tokens=usage.completion_tokens,
            )
            # The limiter learns nothing from a success's tokens beyond what settle corrected.
            limiter.on_success(latency=time.monotonic() - sent)
            return completion

    def _client_keeps_deadline(self) -> bool:
        """Whether :meth:`complete` itself ends an attempt once it took ``timeout`` seconds
        (raising :class:`~tracedistill.errors.ProviderTimeoutError`), so no deadline of the
        teacher's own is needed around it.
        """
        return False

    async def _timed(self, request: TeacherRequest, observe: Observer | None) -> TeacherCompletion:
        try:
            if not self.timeout or self._client_keeps_deadline():
                return await self.complete(request, observe=observe)
            # A bare cancel scope with a deadline: what fail_after does, at less cost per call.
            with anyio.CancelScope(deadline=anyio.current_time() + self.timeout):
                return await self.complete(request, observe=observe)
            raise TimeoutError  # the deadline passed: the scope swallowed its cancellation
        except TimeoutError:
            raise ProviderTimeoutError(
                f"{self.name}: no complete response within {self.timeout:g}s"
            ) from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            # A response of an unexpected shape is the provider's fault, not a reason to stop
            # the run: it is retried like a server error and recorded if it persists.
            if isinstance(exc, ProviderError):
                raise
            raise ProviderUnavailableError(
                f"{self.name}: unexpected response ({type(exc).__name__}: {str(exc)[:200]})"
            ) from None

    def _trace(
        self, request: TeacherRequest, completion: TeacherCompletion, attempts: int, latency: float
    ) -> Trace:
        cost = completion.cost_usd
        estimated = False
        if cost is None and self.pricing is not None:
            cost, estimated = self.pricing.cost(completion.usage), True
        # Checks types and ranges only: the request and the parsed reply were validated already.
        return assemble_trace(
            problem_id=request.problem.id,
            teacher=self.name,
            model=self.model,
            prompt=request.messages,
            params=request.params,
            sample_index=request.sample_index,
            reasoning=completion.reasoning,
            answer=completion.answer,
            reasoning_kind=completion.reasoning_kind,
            finish_reason=completion.finish_reason,
            usage=completion.usage,
            cost_usd=cost,
            cost_estimated=estimated,
            latency_s=latency,
            attempts=attempts,
            metadata=completion.metadata,
            key=request.key,
        )

    def outcome_trace(
        self,
        request: TeacherRequest,
        outcome: TeacherCompletion | ProviderError,
        *,
        attempts: int = 1,
        latency_s: float = 0.0,
    ) -> Trace:
        """The trace of ``request`` for an outcome obtained elsewhere (a batch API's result)."""
        if isinstance(outcome, ProviderError):
            return self._error_trace(request, outcome, attempts, latency_s)
        return self._trace(request, outcome, attempts, latency_s)

    def _error_trace(
        self, request: TeacherRequest, error: ProviderError, attempts: int, latency: float
    ) -> Trace:
        metadata: dict[str, Any] = {"error_type": type(error).__name__}
        if error.status is not None:
            metadata["status"] = error.status
        return Trace(
            problem_id=request.problem.id,
            teacher=self.name,
            model=self.model,
            prompt=request.messages,
            params=request.params,
            sample_index=request.sample_index,
            finish_reason=FinishReason.ERROR,
            error=str(error) or type(error).__name__,
            latency_s=latency,
            attempts=attempts,
            metadata=metadata,
            key=request.key,
        )

    # --- lifecycle -----------------------------------------------------------------------------

    async def aclose(self) -> None:  # noqa: B027 - a teacher without resources needs no close
        """Release connections and other resources (idempotent)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def describe(self) -> Mapping[str, Any]:
        """A JSON-compatible description (no secret) for logs and reports."""
        return {
            "teacher": self.name,
            "model": self.model,
            "backend": type(self).__name__,
            "params": None if self.params is None else self.params.to_dict(),
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} model={self.model!r}>"


def _isolated(error: ProviderError, limiter: RateLimiter | None) -> bool:
    """Whether ``error`` is one request's bad luck (an overload while most answers succeed)."""
    if limiter is None or isinstance(error, RateLimitError) or error.status == 408:
        return False
    return error.retryable and not limiter.failing_broadly()
