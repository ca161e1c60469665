"""Client-side rate limiting: a model of the provider's limits, token buckets and slots.

A :class:`RateLimiter` paces requests/min, input tokens/min, output tokens/min and OpenAI's
combined tokens/min with token buckets (output tokens are reserved against ``max_tokens`` when
a request starts; the unused part is refunded), and holds a number of concurrency slots.

What it believes about the provider, in order of trust:

1. a **configured** limit (:class:`RateLimits`) or one the provider's **headers** announce is
   trusted; requests are paced ``headroom`` below it. A 429 seen while keeping to it is
   treated as noise (clock jitter, load from other clients) unless 429s keep coming: only
   repeated evidence (several 429 episodes within half a minute, each showing the provider
   accepted clearly less than the trusted rate) lowers it, so a wrong configured limit is
   still learned down;
2. a **learned** rate comes from what the provider *accepted* in the span before a 429 (up
   to a minute, never longer than the run): accepted requests / that span, the time the
   client spent paused left out (a pause is not a sample of the provider's rate). An estimate
   can only err high, which further 429s correct, never low, which only slow probing would
   undo; and it is taken only from a 429 that is one of many (saturation), or far below what
   is allowed;
3. ``Retry-After`` (seconds, HTTP-date, ``retry-after-ms``) is a **pause**: the request that
   got it waits that long; everyone pauses too when 429s are a large share of recent answers
   (saturation). A 429 without ``Retry-After`` whose headers say a limit is used up
   (``remaining: 0``) waits for that limit's reset. ``remaining: 0`` on a *successful* answer
   pauses nothing: its reset is the time to a *full* limit, far longer than to the next
   request, and the buckets already pace a known limit;
4. once 429s stop, a learned rate recovers to the trusted limit within seconds (+25%/s), or,
   with no trusted limit, probes upward gently (+5%/s after 2 quiet seconds);
5. **overload** (529, 503 and other 5xx, dropped connections) is not throttling: the failed
   request backs off (see :mod:`~tracedistill.clients.retry`); the shared concurrency is
   trimmed only while overloads are a large share of recent answers (a burst), gently
   (x0.8 per second, never below half) and restored after 3 quiet seconds;
6. a **stalled** request holds one slot, never the run: an attempt running far longer than
   recent answers took (``stall_after_s``, by default 4x their 95th percentile, at least 1 s)
   gives its slot back while it keeps running until its own timeout.

:meth:`RateLimiter.state` returns a :class:`LimiterState` record of all of it.
"""

from __future__ import annotations

import collections
import contextvars
import logging
import math
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import anyio
import attrs

from tracedistill.clients._rateheaders import (
    RateInfo,
    parse_rate_headers,
    parse_reset,
    parse_retry_after,
)
from tracedistill.errors import ConfigurationError, TeacherError

__all__ = [
    "LimiterClosed",
    "LimiterState",
    "Permit",
    "RateInfo",
    "RateLimiter",
    "RateLimits",
    "TokenBucket",
    "parse_rate_headers",
    "parse_reset",
    "parse_retry_after",
]

logger = logging.getLogger(__name__)

Clock = Callable[[], float]

#: the rate-limit headers of the current task's last answer (what its 429 said)
_OBSERVED: contextvars.ContextVar[RateInfo | None] = contextvars.ContextVar(
    "tracedistill_rate_info", default=None
)

#: the paced dimensions: requests, prompt tokens, completion tokens, OpenAI's combined tokens
DIMENSIONS = ("requests", "input", "output", "tokens")


def _positive_or_none(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (not isinstance(value, int | float) or value <= 0):
        raise ConfigurationError(f"RateLimits.{attribute.name} must be > 0 or None, got {value!r}")


def _fraction(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, int | float) or not 0 <= value < 0.5:
        raise ConfigurationError(f"RateLimits.{attribute.name} must be in [0, 0.5), got {value!r}")


@attrs.frozen(slots=True, kw_only=True)
class RateLimits:
    """The limits a client keeps to. ``None`` means unknown (read from headers or learned).

    Args:
        requests_per_minute: requests started per minute.
        input_tokens_per_minute: prompt tokens per minute (estimated before the request,
            corrected from the reported usage after it).
        output_tokens_per_minute: completion tokens per minute, reserved against ``max_tokens``.
        tokens_per_minute: prompt plus completion tokens per minute (OpenAI's TPM).
        burst_seconds: how many seconds' worth of each limit may be spent at once (the bucket
            size). Request buckets start empty, so a run starts at the rate, not with a burst.
        adaptive: learn from 429s and rate-limit headers. Off: keep to the configured limits
            and honour ``Retry-After``, nothing else.
        headroom: the fraction of a known limit left unused, so that jitter between the
            client's clock and the provider's window does not cost 429s.
        stall_after_s: an attempt running this long gives its slot back (it keeps running until
            the teacher's timeout). None: 4x the 95th percentile of recent answer times, >= 1 s.
    """

    requests_per_minute: float | None = attrs.field(default=None, validator=_positive_or_none)
    input_tokens_per_minute: float | None = attrs.field(default=None, validator=_positive_or_none)
    output_tokens_per_minute: float | None = attrs.field(default=None, validator=_positive_or_none)
    tokens_per_minute: float | None = attrs.field(default=None, validator=_positive_or_none)
    burst_seconds: float = attrs.field(default=0.5, validator=_positive_or_none)
    adaptive: bool = True
    headroom: float = attrs.field(default=0.02, validator=_fraction)
    stall_after_s: float | None = attrs.field(default=None, validator=_positive_or_none)


@attrs.frozen(slots=True, kw_only=True)
class LimiterState:
    """A snapshot of a :class:`RateLimiter`: what it allows now and what it went through.

    Rates are per minute; None means no limit of that kind is known.

    Attributes:
        request_rate: the request rate allowed now (requests are paced ``headroom`` below).
        request_rate_min: the lowest request rate allowed at any time of the run.
        configured_rpm: the configured request limit.
        header_rpm: the request limit the provider's headers announced.
        learned_rpm: the request rate learned from 429s, while it is below the trusted limit.
        input_tokens_rate / output_tokens_rate / tokens_rate: the token rates allowed now.
        concurrency / max_concurrency / concurrency_min: the slots allowed now, at most, and at
            the lowest point of the run.
        inflight: requests in flight now; inflight_mean: their time-weighted mean.
        throttled: 429 answers; overloaded: 529/503/5xx answers and lost connections.
        cuts: times the allowed request rate was lowered; paused_s: seconds every request was
            held by a pause (Retry-After, a used-up limit).
        stalls: attempts that gave their slot back because they ran far longer than usual.
    """

    request_rate: float | None
    request_rate_min: float | None
    configured_rpm: float | None
    header_rpm: float | None
    learned_rpm: float | None
    input_tokens_rate: float | None
    output_tokens_rate: float | None
    tokens_rate: float | None
    concurrency: int
    max_concurrency: int
    concurrency_min: int
    inflight: int
    inflight_mean: float
    throttled: int
    overloaded: int
    cuts: int
    paused_s: float
    stalls: int

    def describe(self) -> str:
        """One line for logs and summaries."""

        def rate(value: float | None) -> str:
            return "unlimited" if value is None else f"{value:,.0f}/min"

        lowest = "" if self.request_rate_min is None else f" (lowest {rate(self.request_rate_min)})"
        return (
            f"allowed {rate(self.request_rate)}{lowest}, concurrency {self.concurrency}"
            f"/{self.max_concurrency} (lowest {self.concurrency_min}, mean in flight "
            f"{self.inflight_mean:.1f}), {self.throttled} 429s, {self.overloaded} overloads, "
            f"{self.cuts} cuts, paused {self.paused_s:.1f}s, {self.stalls} stalls"
        )


class LimiterClosed(TeacherError):
    """The run is stopping: no new request may start."""


class TokenBucket:
    """A weighted token bucket that allows debt.

    ``rate`` tokens per second flow in up to ``capacity``. A request for more than the capacity
    waits for a full bucket and then takes everything it asked (the level goes negative), so a
    single large request is never blocked forever and the long-run rate still holds.
    """

    __slots__ = ("_clock", "_last", "capacity", "level", "rate")

    def __init__(self, rate: float, capacity: float, *, clock: Clock = time.monotonic) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError(f"rate and capacity must be > 0, got {rate!r}, {capacity!r}")
        self.rate = rate
        self.capacity = capacity
        self.level = capacity
        self._clock = clock
        self._last = clock()

    def _refill(self, now: float) -> None:
        if now > self._last:
            self.level = min(self.capacity, self.level + (now - self._last) * self.rate)
        self._last = now

    def wait_time(self, amount: float, now: float | None = None) -> float:
        """Seconds until ``amount`` (capped at the capacity) can be taken; 0 if now."""
        now = self._clock() if now is None else now
        self._refill(now)
        need = min(amount, self.capacity)
        if self.level >= need:
            return 0.0
        return (need - self.level) / self.rate

    def take(self, amount: float) -> None:
        """Take ``amount`` tokens (the level may go negative)."""
        self._refill(self._clock())
        self.level -= amount

    def refund(self, amount: float) -> None:
        """Give back ``amount`` unused tokens (never above the capacity)."""
        if amount > 0:
            self._refill(self._clock())
            self.level = min(self.capacity, self.level + amount)

    def empty(self, level: float = 1.0) -> None:
        """Start over at ``level`` (capped at the capacity) from now: no burst."""
        self.level = min(level, self.capacity)
        self._last = self._clock()

    def set_rate(self, rate: float, capacity: float) -> None:
        """Change the rate and capacity, keeping the tokens already accrued (capped)."""
        self._refill(self._clock())
        self.rate = rate
        self.capacity = capacity
        self.level = min(self.level, capacity)


@attrs.frozen(slots=True)
class Permit:
    """What one started attempt holds: its token reservations and when it was sent."""

    input_tokens: int
    output_tokens: int
    sent_at: float = 0.0


class _Lease:
    """One concurrency slot, held for one attempt (``async with limiter.slot()``)."""

    __slots__ = ("_limiter", "detached", "started")

    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter = limiter
        self.started = 0.0
        self.detached = False

    async def __aenter__(self) -> _Lease:
        slots = self._limiter._slots
        try:
            # A free slot with nobody queued is taken without a trip through the event loop
            # (the attempt that follows yields soon enough); otherwise wait in line.
            slots.acquire_on_behalf_of_nowait(self)
        except anyio.WouldBlock:
            await slots.acquire_on_behalf_of(self)
        return self

    def begin(self) -> None:
        """The attempt goes on the wire now (from here on it counts as in flight)."""
        if not self.started:
            self.started = self._limiter._clock()
            self._limiter._leased(self, +1)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.started:
            self._limiter._leased(self, -1)
        if not self.detached:
            self._limiter._slots.release_on_behalf_of(self)


class RateLimiter:
    """Shared by every request of a run: slots, token buckets and the model of the provider.

    Use ``async with limiter.slot() as lease:`` around one attempt, ``await
    limiter.acquire(...)`` and then ``lease.begin()`` just before it goes on the wire; report
    the outcome with :meth:`settle`, :meth:`on_success`, :meth:`on_throttled`,
    :meth:`on_overload`, :meth:`on_failure` and :meth:`observe`. Call :meth:`reap` now and
    then (the engine does, four times a second) so that stalled attempts give their slot back.
    """

    #: the longest span of accepted requests a 429 is compared with (per-minute limits)
    HORIZON = 60.0
    #: 429 episodes below a trusted limit, within EVIDENCE_SPAN seconds, that lower it
    EVIDENCE = 3
    EVIDENCE_SPAN = 30.0
    #: a trusted limit is "consistent" with a 429 when the provider accepted at least this share
    CONSISTENT = 0.9

    def __init__(
        self,
        limits: RateLimits | None = None,
        *,
        max_concurrency: int = 64,
        min_concurrency: int = 1,
        clock: Clock = time.monotonic,
    ) -> None:
        if max_concurrency < 1 or min_concurrency < 1 or min_concurrency > max_concurrency:
            raise ConfigurationError(
                f"concurrency must be >= 1 (got max {max_concurrency}, min {min_concurrency})"
            )
        self.limits = limits or RateLimits()
        self.max_concurrency = max_concurrency
        self.min_concurrency = min_concurrency
        self._clock = clock
        self._slots = anyio.CapacityLimiter(max_concurrency)
        # FIFO, and taken without a trip through the event loop when nobody waits for it.
        self._lock = anyio.Lock(fast_acquire=True)
        self._closed = anyio.Event()
        now = clock()
        self._started = now
        self._first_send: float | None = None
        self._primed = False
        # pauses: until when, and the seconds every request was held
        self._pause_until = 0.0
        self._pauses: collections.deque[tuple[float, float]] = collections.deque()
        self._paused_s = 0.0
        self._paused_mark = now
        lim = self.limits
        self._configured: dict[str, float | None] = {
            "requests": _per_s(lim.requests_per_minute),
            "input": _per_s(lim.input_tokens_per_minute),
            "output": _per_s(lim.output_tokens_per_minute),
            "tokens": _per_s(lim.tokens_per_minute),
        }
        self._header: dict[str, float | None] = dict.fromkeys(DIMENSIONS)
        self._learned: dict[str, float | None] = dict.fromkeys(DIMENSIONS)
        self._buckets: dict[str, TokenBucket | None] = dict.fromkeys(DIMENSIONS)
        for name in DIMENSIONS:
            self._recompute(name)
        # attempts sent, and those refused with a 429: (sent at, input tokens, output tokens)
        self._sends: collections.deque[tuple[float, float, float]] = collections.deque()
        self._refused: collections.deque[tuple[float, float, float]] = collections.deque()
        self._evidence: dict[str, collections.deque[float]] = {
            name: collections.deque() for name in DIMENSIONS
        }
        self._last_429 = -math.inf
        self._throttles: collections.deque[float] = collections.deque()
        self._last_raise = now
        self._rate_min = self.request_rate
        # overload and concurrency
        self._overloads: collections.deque[float] = collections.deque()
        self._answers: collections.deque[float] = collections.deque()
        self._conc = float(max_concurrency)
        self._last_trim = -math.inf
        self._last_overload = -math.inf
        self._conc_min = max_concurrency
        # slots in use, stalls and answer times
        self._leases: set[_Lease] = set()
        self._detached = 0
        self._latencies: collections.deque[float] = collections.deque(maxlen=256)
        self._inflight_area = 0.0
        self._inflight_mark = now
        self.throttled = 0
        self.overloaded = 0
        self.cuts = 0
        self.stalls = 0
        #: called with no argument when an attempt gives its slot back (the engine adds a worker)
        self.on_detach: Callable[[], None] | None = None

    # --- state -------------------------------------------------------------------------------

    @property
    def concurrency(self) -> int:
        """The current concurrency limit."""
        return int(self._slots.total_tokens)

    @property
    def request_rate(self) -> float | None:
        """The request rate (per second) allowed now, or None for unlimited."""
        return self._allowed("requests")

    @property
    def inflight(self) -> int:
        """Attempts holding a slot or running detached now."""
        return len(self._leases)

    @property
    def detached(self) -> int:
        """Stalled attempts still running that gave their slot back."""
        return self._detached

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed.is_set()

    def close(self) -> None:
        """Stop: waiting and future acquisitions raise :class:`LimiterClosed`."""
        self._closed.set()

    def trusted(self, name: str = "requests") -> float | None:
        """The trusted limit (per second) of one dimension: configured, else from headers."""
        configured = self._configured[name]
        return configured if configured is not None else self._header[name]

    def state(self) -> LimiterState:
        """A snapshot of what the limiter allows now and what it went through."""
        now = self._clock()
        self._account(now)

        def per_min(value: float | None) -> float | None:
            return None if value is None else value * 60.0

        elapsed = now - self._started
        return LimiterState(
            request_rate=per_min(self._allowed("requests")),
            request_rate_min=per_min(self._rate_min),
            configured_rpm=per_min(self._configured["requests"]),
            header_rpm=per_min(self._header["requests"]),
            learned_rpm=per_min(self._learned["requests"]),
            input_tokens_rate=per_min(self._allowed("input")),
            output_tokens_rate=per_min(self._allowed("output")),
            tokens_rate=per_min(self._allowed("tokens")),
            concurrency=self.concurrency,
            max_concurrency=self.max_concurrency,
            concurrency_min=self._conc_min,
            inflight=len(self._leases),
            inflight_mean=self._inflight_area / elapsed if elapsed > 0 else 0.0,
            throttled=self.throttled,
            overloaded=self.overloaded,
            cuts=self.cuts,
            paused_s=self._paused_s,
            stalls=self.stalls,
        )

    # --- slots -------------------------------------------------------------------------------

    def slot(self) -> _Lease:
        """One concurrency slot: ``async with limiter.slot(): ...`` holds it for one attempt."""
        return _Lease(self)

    def _leased(self, lease: _Lease, delta: int) -> None:
        now = self._clock()
        self._inflight_area += len(self._leases) * (now - self._inflight_mark)
        self._inflight_mark = now
        if delta > 0:
            self._leases.add(lease)
        else:
            self._leases.discard(lease)
            if lease.detached:
                self._detached -= 1

    def stall_after(self) -> float | None:
        """Seconds after which a running attempt gives its slot back (None: not yet known)."""
        if self.limits.stall_after_s is not None:
            return self.limits.stall_after_s
        if len(self._latencies) < 20:
            return None
        ordered = sorted(self._latencies)
        p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        return max(1.0, 4.0 * p95)

    def reap(self) -> int:
        """Give back the slots of attempts running past :meth:`stall_after`; return how many."""
        limit = self.stall_after()
        if limit is None or self._detached >= self.max_concurrency:
            return 0
        now = self._clock()
        freed = 0
        for lease in list(self._leases):
            if not lease.detached and now - lease.started > limit:
                lease.detached = True
                self._slots.release_on_behalf_of(lease)
                self._detached += 1
                self.stalls += 1
                freed += 1
                if self.on_detach is not None:
                    self.on_detach()
                if self._detached >= self.max_concurrency:
                    break
        if freed:
            logger.info("%d stalled request(s) gave their slot back (> %.1fs)", freed, limit)
        return freed

    # --- acquiring -----------------------------------------------------------------------------

    async def _sleep(self, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            await self._closed.wait()
        if self._closed.is_set():
            raise LimiterClosed("the run is stopping; no new request starts")

    def _amounts(self, input_tokens: int, output_tokens: int) -> dict[str, float]:
        return {
            "requests": 1.0,
            "input": float(input_tokens),
            "output": float(output_tokens),
            "tokens": float(input_tokens + output_tokens),
        }

    async def acquire(self, input_tokens: int = 0, output_tokens: int = 0) -> Permit:
        """Wait until one request with these token needs may start, and reserve them.

        Raises:
            LimiterClosed: the run is stopping.
        """
        if self._closed.is_set():
            raise LimiterClosed("the run is stopping; no new request starts")
        amounts = self._amounts(input_tokens, output_tokens)
        first = self._buckets["requests"]
        if not self._primed and first is not None:
            # The run starts at the rate, not with a burst, and half a second late: the first
            # requests wait for new connections and would reach the provider bunched together.
            first.empty(1.0 - 0.5 * first.rate)
        self._primed = True
        # FIFO: anyio's Lock wakes waiters in order, so requests start in the order they asked.
        async with self._lock:
            while True:
                if self._closed.is_set():
                    raise LimiterClosed("the run is stopping; no new request starts")
                now = self._clock()
                self._account(now)
                self._recover(now)
                wait = self._pause_until - now
                for name, amount in amounts.items():
                    bucket = self._buckets[name]
                    if bucket is not None and amount:
                        wait = max(wait, bucket.wait_time(amount, now))
                if wait <= 0:
                    break
                await self._sleep(wait)
            for name, amount in amounts.items():
                bucket = self._buckets[name]
                if bucket is not None and amount:
                    bucket.take(amount)
        if self._first_send is None:
            self._first_send = now
        self._sends.append((now, float(input_tokens), float(output_tokens)))
        while self._sends and self._sends[0][0] < now - self.HORIZON - 1.0:
            self._sends.popleft()
        _OBSERVED.set(None)
        return Permit(input_tokens, output_tokens, now)

    def settle(
        self, permit: Permit, *, input_tokens: int | None, output_tokens: int | None
    ) -> None:
        """Correct the reservations of a finished request with the tokens it really used."""
        used_in = permit.input_tokens if input_tokens is None else input_tokens
        used_out = permit.output_tokens if output_tokens is None else output_tokens
        for name, reserved, used in (
            ("input", permit.input_tokens, used_in),
            ("output", permit.output_tokens, used_out),
            ("tokens", permit.input_tokens + permit.output_tokens, used_in + used_out),
        ):
            bucket = self._buckets[name]
            if bucket is None:
                continue
            if used > reserved:
                bucket.take(used - reserved)
            else:
                bucket.refund(reserved - used)

    # --- the model -------------------------------------------------------------------------

    def _allowed(self, name: str) -> float | None:
        learned = self._learned[name]
        return learned if learned is not None else self.trusted(name)

    def _recompute(self, name: str) -> None:
        """Set bucket ``name`` to the rate allowed now, ``headroom`` below it."""
        allowed = self._allowed(name)
        if allowed is None:
            self._buckets[name] = None
            return
        pace = allowed * (1.0 - self.limits.headroom)
        capacity = _capacity(pace, self.limits.burst_seconds)
        bucket = self._buckets[name]
        if bucket is None:
            bucket = TokenBucket(pace, capacity, clock=self._clock)
            if name == "requests":
                bucket.level = min(1.0, capacity)  # start at the rate, not with a burst
            self._buckets[name] = bucket
        elif bucket.rate != pace:
            bucket.set_rate(pace, capacity)
        if name == "requests":
            current = self._allowed("requests")
            rate_min = getattr(self, "_rate_min", None)
            if current is not None and (rate_min is None or current < rate_min):
                self._rate_min = current

    def _account(self, now: float) -> None:
        """Count paused time (every request held) up to ``now``."""
        held_until = min(now, self._pause_until)
        if held_until > self._paused_mark:
            self._paused_s += held_until - self._paused_mark
        self._paused_mark = max(self._paused_mark, held_until)

    def _pause(self, now: float, seconds: float) -> None:
        self._account(now)
        self._paused_mark = max(self._paused_mark, now)
        until = now + min(seconds, 600.0)
        if until <= self._pause_until:
            return
        pauses = self._pauses
        if pauses and pauses[-1][1] >= now:
            pauses[-1] = (pauses[-1][0], until)  # extends the pause under way
        else:
            pauses.append((now, until))
        while pauses and pauses[0][1] < now - self.HORIZON:
            pauses.popleft()
        self._pause_until = until

    def _paused_within(self, start: float, end: float) -> float:
        """Seconds of [start, end] spent paused."""
        return sum(max(0.0, min(b, end) - max(a, start)) for a, b in self._pauses)

    def _accept(self, now: float) -> None:
        """Count an answer the provider's rate limiter let through (any answer but a 429)."""
        self._answers.append(now)
        self._forget_before(now - 2.0)

    def on_success(self, permit: Permit | None = None, *, latency: float | None = None) -> None:
        """Record an answer (pass the permit with the tokens really used, and the latency)."""
        now = self._clock()
        self._accept(now)
        if latency is not None:
            self._latencies.append(latency)
        self._recover(now)
        self._restore_concurrency(now)

    def on_failure(self, permit: Permit | None = None) -> None:
        """Record an attempt that failed for another reason than a 429 or an overload."""
        self._accept(self._clock())

    def _forget_before(self, horizon: float) -> None:
        """Drop 429s, overloads and answers older than ``horizon`` (the 2 s share window)."""
        for times in (self._throttles, self._overloads, self._answers):
            while times and times[0] < horizon:
                times.popleft()

    def _cluster(self, now: float) -> bool:
        """Whether 429s are a large share of the last two seconds' answers (saturation)."""
        self._forget_before(now - 2.0)
        recent = len(self._throttles)
        return recent >= 3 and recent >= 0.25 * (recent + len(self._answers))

    def _recover(self, now: float) -> None:
        """Raise learned rates back once 429s stop (at most every 0.2 s)."""
        if not self.limits.adaptive or now - self._last_raise < 0.2:
            return
        step = now - self._last_raise
        self._last_raise = now
        quiet = now - self._last_429
        for name in DIMENSIONS:
            learned = self._learned[name]
            if learned is None:
                continue
            trusted = self.trusted(name)
            if trusted is not None:
                if quiet < 1.0:
                    continue
                raised = learned * (1.25**step)  # back to the trusted limit within seconds
                self._learned[name] = None if raised >= trusted else raised
            else:
                if quiet < 2.0:
                    continue
                self._learned[name] = learned * (1.05**step)  # probe an unknown limit gently
            self._recompute(name)

    def _measure(self, name: str, sent: float, *, exclude_pauses: bool = True) -> float | None:
        """What the provider accepted per second in the span before ``sent`` (None: too early)."""
        if self._first_send is None:
            return None
        # Never longer than the run: an early 429 overestimates (more 429s correct it), it
        # never underestimates (which only slow probing would undo).
        span = max(0.05, min(self.HORIZON, sent - self._first_send))
        start = sent - span
        if exclude_pauses:
            span = max(0.05, span - self._paused_within(start, sent))
        # Attempts still in flight count as accepted: a 429 comes back at once, a success
        # only after the answer is written, and waiting for it would underestimate.
        sent_total = _sum_since(self._sends, name, start, sent)
        refused = _sum_since(self._refused, name, start, sent)
        return max(0.0, sent_total - refused) / span

    def on_throttled(
        self,
        retry_after: float | None = None,
        *,
        permit: Permit | None = None,
        info: RateInfo | None = None,
    ) -> None:
        """Record a 429: pause if it says so, and learn a lower rate if the evidence holds."""
        now = self._clock()
        if info is None:
            info = _OBSERVED.get()  # the headers of this task's 429, read by observe()
        self.throttled += 1
        self._last_429 = now
        self._throttles.append(now)
        name = _dimension_of(info)
        trusted = self.trusted(name)
        if retry_after is None and info is not None:
            # No Retry-After: the reset of the limit the headers say is used up stands in.
            resets = [reset for _dim, reset in info.exhausted()]
            retry_after = min(resets) if resets else None
        # A lone 429 may be noise (jitter, shared upstream capacity): only that request
        # waits. 429s that are a large share of the answers mean the provider is saturated:
        # everyone waits.
        if (
            retry_after is not None
            and retry_after > 0
            and (not self.limits.adaptive or self._cluster(now))
        ):
            self._pause(now, retry_after)
        if not self.limits.adaptive:
            return
        sent = permit.sent_at if permit is not None else now
        if permit is not None:
            self._refused.append((sent, float(permit.input_tokens), float(permit.output_tokens)))
            while self._refused and self._refused[0][0] < now - self.HORIZON - 1.0:
                self._refused.popleft()
        measured = self._measure(name, sent)
        if measured is None:
            return
        measured = max(measured, 1.0 / 60.0 if name == "requests" else 1.0)
        allowed = self._allowed(name)
        if trusted is not None:
            # Against a trusted limit the evidence must be conservative: the provider's window
            # includes the pauses it asked for.
            measured = self._measure(name, sent, exclude_pauses=False) or measured
            measured = max(measured, 1.0 / 60.0 if name == "requests" else 1.0)
            if measured >= self.CONSISTENT * trusted:
                return  # the provider was accepting the trusted rate: nothing to learn
        if trusted is not None and self._learned[name] is None:
            evidence = self._evidence[name]
            if not evidence or now - evidence[-1] >= 1.0:
                evidence.append(now)
            while evidence and evidence[0] < now - self.EVIDENCE_SPAN:
                evidence.popleft()
            if len(evidence) < self.EVIDENCE:
                return
        clustered = self._cluster(now)
        if allowed is None and not clustered:
            return  # a lone 429 with no limit known: only that request waits
        near = allowed is not None and measured >= allowed * (1.0 - self.limits.headroom - 0.04)
        if near and (not clustered or measured >= (allowed or 0.0)):
            return  # close to what is allowed: a lone 429 teaches nothing
        self._learned[name] = measured
        self.cuts += 1
        self._recompute(name)
        logger.info(
            "rate limited: the provider accepted %.1f %s/min; keeping to that",
            measured * 60.0,
            "requests" if name == "requests" else f"{name} tokens",
        )

    def on_overload(self, permit: Permit | None = None) -> None:
        """Record an overload (529, 503, other 5xx, a lost connection): not a rate signal.

        Concurrency is trimmed (x0.8, at most once a second, never below half) only while
        overloads are at least a quarter of the last two seconds' answers.
        """
        now = self._clock()
        self.overloaded += 1
        self._accept(now)
        self._overloads.append(now)
        self._forget_before(now - 2.0)
        if not self.limits.adaptive:
            return
        recent = len(self._overloads)
        if recent < 3 or recent < 0.25 * len(self._answers):  # answers include overloads
            return
        self._last_overload = now
        if now - self._last_trim >= 1.0:
            self._last_trim = now
            floor = max(float(self.min_concurrency), self.max_concurrency / 2.0)
            self._conc = max(floor, self._conc * 0.8)
            self._apply_concurrency()

    def failing_broadly(self) -> bool:
        """Whether overloads are at least half of the last two seconds' answers: a provider
        failing broadly, which a retry should back off from (see :meth:`RetryPolicy.delay`).
        """
        self._forget_before(self._clock() - 2.0)
        return len(self._overloads) >= 0.5 * max(1, len(self._answers))

    def _restore_concurrency(self, now: float) -> None:
        if self._conc < self.max_concurrency and now - self._last_overload >= 3.0:
            self._conc = float(self.max_concurrency)
            self._apply_concurrency()

    def observe(self, info: RateInfo) -> None:
        """Adopt what a response's rate-limit headers say."""
        if info.empty:
            return
        _OBSERVED.set(info)
        if self.limits.adaptive:
            for name, limit in (
                ("requests", info.requests_limit),
                ("input", info.input_limit),
                ("output", info.output_limit),
                ("tokens", info.tokens_limit if info.combined_tokens else None),
            ):
                if limit and self._configured[name] is None:
                    rate = limit / 60.0  # OpenAI's and Anthropic's limits are per minute
                    if self._header[name] != rate:
                        self._header[name] = rate
                        learned = self._learned[name]
                        if learned is not None and learned >= rate:
                            self._learned[name] = None
                        self._recompute(name)

    def _apply_concurrency(self) -> None:
        target = max(self.min_concurrency, min(self.max_concurrency, int(self._conc)))
        if target != self._slots.total_tokens:
            self._slots.total_tokens = target
        self._conc_min = min(self._conc_min, target)


def _sum_since(
    events: collections.deque[tuple[float, float, float]], name: str, start: float, end: float
) -> float:
    """The amount of dimension ``name`` in the events sent within [start, end]."""
    total = 0.0
    for at, tokens_in, tokens_out in reversed(events):
        if at > end:
            continue
        if at < start:
            break
        if name == "requests":
            total += 1.0
        elif name == "input":
            total += tokens_in
        elif name == "output":
            total += tokens_out
        else:
            total += tokens_in + tokens_out
    return total


def _dimension_of(info: RateInfo | None) -> str:
    """Which limit a 429 was about, from its headers (requests when they do not say)."""
    if info is not None:
        for name, _reset in info.exhausted():
            if name in ("input", "output"):
                return name
            if name == "tokens" and info.combined_tokens:
                return "tokens"
    return "requests"


def _per_s(per_minute: float | None) -> float | None:
    return None if per_minute is None else per_minute / 60.0


def _capacity(rate: float, burst_seconds: float) -> float:
    return max(1.0, rate * burst_seconds)
