"""Client-side rate limiting: a model of the provider's limits, token buckets and slots.

A :class:`RateLimiter` paces requests/min, input tokens/min, output tokens/min and OpenAI's
combined tokens/min with token buckets (output tokens are reserved against ``max_tokens`` when
a request starts, the unused part refunded, as Anthropic documents; OpenAI's combined tokens
are charged the prompt plus the whole ``max_tokens``, nothing refunded, as OpenAI documents),
and holds a number of concurrency slots.

What it learns from, in order of trust, and what it ignores:

1. a **configured** limit (:class:`RateLimits`) or one the provider's **headers** announce
   (OpenAI ``x-ratelimit-limit-*``, Anthropic ``anthropic-ratelimit-*-limit``, per minute) is
   trusted; requests are paced ``headroom`` below it. A 429 seen while keeping to it is
   ignored as noise (clock jitter, other clients on the key, shared upstream capacity), and so
   are the client's own pauses: only repeated evidence (429 episodes in three separate seconds
   within 30 s, each showing the provider accepted clearly less than the trusted rate, with
   429s tied to load: clustered, or at least a tenth of what was sent) cuts under it.
   OpenRouter's ``X-RateLimit-Limit`` does not say its interval and is never read as a rate;
2. a **wrong trusted limit is replaced**: a second throttling episode (429s after a quiet
   second) within two minutes, at about the same learned rate, makes that rate a learned
   **ceiling**, the limit in place of the trusted one (a WARNING names it): just under the
   rate that drew the 429 when that is within 1.25x of what was accepted, else a little under
   what was accepted (since the last cut, the client's pauses left out). Above it the limiter
   only probes slowly (+2%/s after 3 quiet seconds, up to the trusted limit); a 429 while
   probing at it lowers it 5%, never below what the provider accepted, and a 429 under it
   keeps to 5% under the rate that drew it, not to what a span of earlier pauses averaged;
3. a **learned** rate (a temporary cut) comes only from what the provider *accepted* in the
   span before a 429 (up to a minute, never longer than the run): accepted requests / that
   span, where a span that is mostly the client's own pause leaves the pause out (a pause is
   not a sample of the provider's rate) and short pauses count (the provider's window refills
   during them). It is taken from 429s that are a large share of recent answers (saturation)
   or far below what is allowed (then one step of at most 10%); a lone 429 with no known
   limit teaches nothing, nor does a 429 for a request sent before the last cut or within a
   second after it (it reflects the old rate). With **no limit known**, the first estimate
   reads the opening burst: a fresh window admits its whole allowance at once and
   ``Retry-After`` then says how long nothing more is accepted, so the rate is what was
   accepted / (the time since the first requests reached the provider + ``Retry-After``),
   once at least three 429s make up a tenth of recent answers and of what was sent (at the
   start no answer is back: a few 429s not tied to load are no burst). Without ``Retry-After`` the
   reopening is measured: the first request accepted after a saturated episode shows how long
   the window stayed shut, and later cuts count from then; each window that shuts again, for
   at least half as long as it was open, is read from the reopening before to its own (its
   allowance over that time), with or without ``Retry-After``;
4. ``Retry-After`` (seconds, HTTP-date, ``retry-after-ms``) is a **pause**: the request that
   got it waits that long; everyone pauses too under saturation (429s a large share of recent
   answers, and a tenth of what was sent). A 429 without
   ``Retry-After`` whose headers say a limit is used up (``remaining: 0``) waits for that
   limit's reset. ``remaining: 0`` on a *successful* answer pauses nothing: its reset is the
   time to a *full* limit, and the buckets already pace a known limit;
5. once 429s stop, a learned rate recovers to the trusted limit or ceiling within seconds
   (+25%/s), or, with no limit known, probes upward gently: +5%/s after 2 quiet seconds, or,
   once an estimate was read from the opening burst or confirmed twice, +2%/s after one
   window (the first ``Retry-After``, at least 3 s) without a 429; rates rise only while
   requests can be sent (not through a pause). A learned rate resumes after a pause without
   a burst;
6. **overload** (529, 503 and other 5xx, dropped connections) is not throttling and never
   changes the rate: the failed
   request backs off (see :mod:`~tracedistill.clients.retry`); the shared concurrency is
   trimmed only while overloads are at least half of recent answers (a burst; faults spread
   at random are none), gently (x0.8 per second, never below three quarters) and restored
   after 3 quiet seconds;
7. a **stalled** request holds one slot, never the run: an attempt running far longer than
   recent answers took (``stall_after_s``, by default 4x their 95th percentile, at least 1 s)
   gives its slot back while it keeps running until its own timeout.

:meth:`RateLimiter.state` returns a :class:`LimiterState` record of all of it (its
``limit_rpm`` is the request limit believed now, ``ceiling_rpm`` a learned one).
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable

import anyio

from tracedistill.clients._concurrency import Lease, Slots
from tracedistill.clients._rateevidence import Pauses, RecentAnswers, SendLog, dimension_of
from tracedistill.clients._rateheaders import (
    RateInfo,
    parse_rate_headers,
    parse_reset,
    parse_retry_after,
)
from tracedistill.clients._ratelimits import (
    Clock,
    LimiterClosed,
    LimiterState,
    Permit,
    RateLimits,
    SecondCap,
    TokenBucket,
    new_permit,
)
from tracedistill.clients._ratemodel import RateModel
from tracedistill.errors import ConfigurationError

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

#: what a request takes from the buckets when none paces anything (no limit known)
_UNPACED = (1.0, 0.0, 0.0, 0.0)

#: the rate-limit headers of the current task's last answer (what its 429 said)
_OBSERVED: contextvars.ContextVar[RateInfo | None] = contextvars.ContextVar(
    "tracedistill_rate_info", default=None
)


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
    #: overloads a provider failing broadly shows at least, in two seconds: with one or two
    #: requests left at the end of a run, one 529 was half the answers and its back-off
    #: doubled to 12.6 s (an outside run's last 5% of answers took 3-6 s, not 1.7)
    BROAD_MIN = 3

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
        # FIFO, and taken without a trip through the event loop when nobody waits for it.
        self._lock = anyio.Lock(fast_acquire=True)
        #: requests waiting for (or holding) the lock: while there are any, no request overtakes
        self._queued = 0
        self._closed = anyio.Event()
        #: mirrors ``_closed``: read on every acquisition, where an attribute costs less
        self._stopping = False
        now = clock()
        self._started = now
        self._primed = False
        #: when the run's first request was recorded as sent, until the limiter next runs
        self._first_sent: float | None = None
        self._model = RateModel(self.limits, clock=clock)
        self._pauses = Pauses(now, self.HORIZON)
        self._log = SendLog(self.HORIZON)
        self._second = SecondCap(self._log)
        self._recent = RecentAnswers()
        self._slots = Slots(
            max_concurrency, min_concurrency, clock=clock, stall_after_s=self.limits.stall_after_s
        )
        self.throttled = 0
        self.overloaded = 0
        #: the provider's output-token bucket as Anthropic documents it: a minute of the limit,
        #: max_tokens reserved when a request starts, the unused part refunded when it ends; and
        #: the mean answer length, what an answer costs the output limit once settled
        self._reserve: TokenBucket | None = None
        self._mean_out: float | None = None

    # --- state -------------------------------------------------------------------------------

    @property
    def concurrency(self) -> int:
        """The current concurrency limit."""
        return self._slots.concurrency

    @property
    def request_rate(self) -> float | None:
        """The request rate (per second) allowed now, or None for unlimited."""
        return self._model.allowed("requests")

    @property
    def inflight(self) -> int:
        """Attempts holding a slot or running detached now."""
        return len(self._slots.leases)

    @property
    def detached(self) -> int:
        """Stalled attempts still running that gave their slot back."""
        return self._slots.detached

    @property
    def cuts(self) -> int:
        """Times an allowed rate was lowered."""
        return self._model.cuts

    @property
    def stalls(self) -> int:
        """Attempts that gave their slot back because they ran far longer than usual."""
        return self._slots.stalls

    @property
    def on_detach(self) -> Callable[[], None] | None:
        """Called with no argument when an attempt gives its slot back (adds a worker)."""
        return self._slots.on_detach

    @on_detach.setter
    def on_detach(self, callback: Callable[[], None] | None) -> None:
        self._slots.on_detach = callback

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._stopping

    def close(self) -> None:
        """Stop: waiting and future acquisitions raise :class:`LimiterClosed`."""
        self._stopping = True
        self._closed.set()

    @property
    def budgets(self) -> dict[str, tuple[float, float | None]]:
        """Header limits that are not per minute (an hourly or daily count), never paced:
        ``{dimension: (limit, seconds to its reset when last seen)}``.
        """
        return dict(self._model.budgets)

    def trusted(self, name: str = "requests") -> float | None:
        """The trusted limit (per second) of one dimension: configured, else from headers."""
        return self._model.trusted(name)

    def state(self) -> LimiterState:
        """A snapshot of what the limiter allows now and what it went through."""
        now = self._clock()
        self._pauses.account(now)
        model, slots = self._model, self._slots

        def per_min(value: float | None) -> float | None:
            return None if value is None else value * 60.0

        elapsed = now - self._started
        return LimiterState(
            request_rate=per_min(model.allowed("requests")),
            request_rate_min=per_min(model.rate_min),
            configured_rpm=per_min(model.configured["requests"]),
            header_rpm=per_min(model.header["requests"]),
            learned_rpm=per_min(model.learned["requests"]),
            ceiling_rpm=per_min(model.ceiling["requests"]),
            input_tokens_rate=per_min(model.allowed("input")),
            output_tokens_rate=per_min(model.allowed("output")),
            tokens_rate=per_min(model.allowed("tokens")),
            concurrency=slots.concurrency,
            max_concurrency=self.max_concurrency,
            concurrency_min=slots.concurrency_min,
            inflight=len(slots.leases),
            inflight_mean=slots.inflight_area / elapsed if elapsed > 0 else 0.0,
            throttled=self.throttled,
            overloaded=self.overloaded,
            cuts=model.cuts,
            paused_s=self._pauses.held_s,
            stalls=slots.stalls,
        )

    # --- slots -------------------------------------------------------------------------------

    def slot(self) -> Lease:
        """One concurrency slot: ``async with limiter.slot(): ...`` holds it for one attempt."""
        return Lease(self._slots)

    def stall_after(self) -> float | None:
        """Seconds after which a running attempt gives its slot back (None: not yet known)."""
        return self._slots.stall_after()

    def reap(self) -> int:
        """Give back the slots of attempts running past :meth:`stall_after`; return how many."""
        return self._slots.reap()

    # --- acquiring -----------------------------------------------------------------------------

    async def _sleep(self, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            await self._closed.wait()
        if self._stopping:
            raise LimiterClosed("the run is stopping; no new request starts")

    async def acquire(self, input_tokens: int = 0, output_tokens: int = 0) -> Permit:
        """Wait until one request with these token needs may start, and reserve them.

        Raises:
            LimiterClosed: the run is stopping.
        """
        if self._stopping:
            raise LimiterClosed("the run is stopping; no new request starts")
        if not self._primed:
            self._prime()
        if not self._queued:
            # Nobody waits: a request nothing holds back starts at once. No await comes
            # between the check and the reservation, so the order of requests still holds.
            now = self._clock()
            model = self._model
            if model.unpaced and self._first_sent is None and now >= self._pauses.until:
                # No limit known and no pause: nothing to wait for. What _wait_time would do
                # comes down to the model's recovery (paused time is counted when it is read).
                model.recover(now, self._pauses.until)
                if model.unpaced:
                    return self._start(now, _UNPACED, input_tokens, output_tokens)
            amounts = self._amounts(input_tokens, output_tokens)
            if self._wait_time(amounts, now, output_tokens) <= 0:
                return self._start(now, amounts, input_tokens, output_tokens)
        # FIFO: anyio's Lock wakes waiters in order, so requests start in the order they asked.
        self._queued += 1
        try:
            async with self._lock:
                return await self._acquire_in_turn(input_tokens, output_tokens)
        finally:
            self._queued -= 1

    async def _acquire_in_turn(self, input_tokens: int, output_tokens: int) -> Permit:
        """Wait, holding the lock, until this request may start; start it."""
        while True:
            if self._stopping:
                raise LimiterClosed("the run is stopping; no new request starts")
            now = self._clock()
            amounts = self._amounts(input_tokens, output_tokens)  # the mean may have moved
            wait = self._wait_time(amounts, now, output_tokens)
            if wait <= 0:
                return self._start(now, amounts, input_tokens, output_tokens)
            if self._model.refundable():
                # requests in flight give back unused token reservations (settle): look
                # again soon rather than sleep past tokens that came back meanwhile
                wait = min(wait, 0.02)
            await self._sleep(wait)

    def _amounts(self, input_tokens: int, output_tokens: int) -> tuple[float, ...]:
        """What a request takes from each bucket, in the order of DIMENSIONS: requests, input,
        output, combined tokens. The output bucket paces what answers use (their mean length
        so far, corrected when they settle); the whole ``max_tokens`` reservation is held
        against the provider's bucket in :meth:`_wait_time`.
        """
        mean = self._mean_out
        paced = float(output_tokens) if mean is None or mean > output_tokens else mean
        return (1.0, float(input_tokens), paced, float(input_tokens + output_tokens))

    def _prime(self) -> None:
        # The run starts at the rate, not with a burst, and half a second late: the first
        # requests wait for new connections and would reach the provider bunched together.
        first = self._model.buckets["requests"]
        if first is not None:
            first.empty(1.0 - 0.5 * first.rate)
        self._primed = True

    def _wait_time(self, amounts: tuple[float, ...], now: float, reserve: int = 0) -> float:
        """Seconds until a request needing ``amounts`` and reserving ``reserve`` output
        tokens may start (<= 0: now).
        """
        if self._first_sent is not None:
            # The first request pays for the client's set-up (its session, the first
            # connection), which can hold the event loop for half a second: it reaches the
            # provider, whose window starts then, no earlier than the limiter runs again.
            self._log.delayed(self._first_sent, now)
            self._first_sent = None
        self._pauses.account(now)
        model = self._model
        model.recover(now, self._pauses.until)
        wait = self._pauses.until - now
        if not model.unpaced:
            for bucket, amount in zip(model.buckets.values(), amounts, strict=True):
                if bucket is not None and amount:
                    wait = max(wait, bucket.wait_time(amount, now))
            limit = model.allowed("output") if reserve and model.buckets["output"] else None
            if limit is not None:
                # no headroom here: the provider admits a reservation later, and refunds
                # sooner, than this mirror of its bucket does
                held = self._reserve
                if held is None:
                    held = self._reserve = TokenBucket(limit, limit * 60.0, clock=self._clock)
                elif held.rate != limit:
                    held.set_rate(limit, limit * 60.0)
                wait = max(wait, held.wait_time(reserve, now))
            requests = model.buckets["requests"]
            if requests is not None:
                # a second of the limit believed now (told, announced or learned in place of
                # either) while keeping to it: not of an estimate of an untold one, nor during a
                # temporary cut under it (spread over the cut's pace, it would forbid the
                # bucket's catch-up after a stall, which the limit leaves room for)
                learned = model.learned["requests"]
                most = model.ceiling_of("requests") if learned is None else None
                wait = max(wait, self._second.wait_time(requests.rate, now, most))
        return wait

    def _start(
        self, now: float, amounts: tuple[float, ...], input_tokens: int, output_tokens: int
    ) -> Permit:
        """Reserve ``amounts`` for an attempt starting now, record it, and return its permit."""
        if not self._model.unpaced:
            for bucket, amount in zip(self._model.buckets.values(), amounts, strict=True):
                if bucket is not None and amount:
                    bucket.take(amount)
        if self._log.first_send is None:
            self._first_sent = now
        self._log.sent(now, float(input_tokens), float(output_tokens))
        if _OBSERVED.get() is not None:
            _OBSERVED.set(None)  # a set costs a new context each time: only when one was seen
        held = self._reserve
        if held is None or not output_tokens or self._model.buckets["output"] is None:
            return new_permit(input_tokens, output_tokens, now, None)
        held.take(output_tokens)
        return new_permit(input_tokens, output_tokens, now, amounts[2])

    def settle(
        self, permit: Permit, *, input_tokens: int | None, output_tokens: int | None
    ) -> None:
        """Correct the reservations of a finished request with the tokens it really used."""
        model = self._model
        if model.unpaced:
            return  # no limit known: nothing was reserved
        buckets = model.buckets
        if buckets["input"] is None and buckets["output"] is None and buckets["tokens"] is None:
            return  # no token limit (the usual case): nothing was reserved
        used_in = permit.input_tokens if input_tokens is None else input_tokens
        used_out = permit.output_tokens if output_tokens is None else output_tokens
        paced = permit.paced_output
        if paced is None:
            paced = permit.output_tokens
        else:
            held = self._reserve
            if held is not None:
                held.refund(permit.output_tokens - used_out)
            if used_out > 0:
                mean = self._mean_out
                self._mean_out = used_out if mean is None else 0.9 * mean + 0.1 * used_out
        # OpenAI's combined tokens: the whole max_tokens stays charged, whatever the answer
        # used (or a failure: unsuccessful requests count against the limit); only the
        # prompt's estimate is corrected
        combined = used_in + max(used_out, permit.output_tokens)
        for name, reserved, used in (
            ("input", permit.input_tokens, used_in),
            ("output", paced, used_out),
            ("tokens", permit.input_tokens + permit.output_tokens, combined),
        ):
            bucket = buckets[name]
            if bucket is None:
                continue
            if used > reserved:
                bucket.take(used - reserved)
            elif name == "output":
                # an answer shorter than the mean gives back all it was paced for, even into
                # a full bucket: longer ones pay their excess in full, so clipping the refunds
                # alone would pace under the limit when answer lengths vary
                bucket.refund(reserved - used, above=reserved)
            else:
                bucket.refund(reserved - used)

    # --- outcomes ------------------------------------------------------------------------------

    def on_success(self, permit: Permit | None = None, *, latency: float | None = None) -> None:
        """Record an answer (pass the permit with the tokens really used, and the latency)."""
        now = self._clock()
        self._recent.answer(now)
        slots = self._slots
        if latency is not None:
            slots.latencies.append(latency)
        model = self._model
        if model.awaiting_reopen:
            sent = permit.sent_at if permit is not None else now - (latency or 0.0)
            model.accepted(sent, now, self._log)
        model.recover(now, self._pauses.until)
        if slots.trimmed:
            slots.restore(now)

    def on_failure(self, permit: Permit | None = None) -> None:
        """Record an attempt that failed for another reason than a 429 or an overload."""
        self._recent.answer(self._clock())

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
        self._model.last_429 = now
        self._recent.throttle(now)
        if retry_after is None and info is not None:
            # No Retry-After: the reset of the limit the headers say is used up stands in.
            resets = [reset for _dim, reset in info.exhausted()]
            retry_after = min(resets) if resets else None
        # A lone 429 may be noise (jitter, shared upstream capacity): only that request
        # waits. 429s that are a large share of the answers (and of what was sent) mean the
        # provider is saturated: everyone waits.
        adaptive = self.limits.adaptive
        sent = now
        if permit is not None and adaptive:
            sent = permit.sent_at
            self._log.refused(permit, now)  # before the share of what was sent is read
        pause = retry_after is not None and retry_after > 0
        if pause and (not adaptive or self._recent.saturated(now, self._log)):
            self._pauses.pause(now, retry_after or 0.0)
        if not adaptive:
            return
        self._model.learn(
            dimension_of(info),
            sent,
            now,
            log=self._log,
            pauses=self._pauses,
            recent=self._recent,
            retry_after=retry_after,
        )

    def on_overload(self, permit: Permit | None = None) -> None:
        """Record an overload (529, 503, other 5xx, a lost connection): not a rate signal.

        Concurrency is trimmed (x0.8, at most once a second, never below three quarters) only
        in a burst: while overloads are at least half of the last two seconds' answers.
        """
        now = self._clock()
        self.overloaded += 1
        self._recent.overload(now)
        if not self.limits.adaptive:
            return
        overloads, answers = self._recent.overload_share(now)  # answers include overloads
        slots = self._slots
        if overloads >= slots.BURST_MIN and overloads >= slots.BURST_SHARE * answers:
            slots.trim(now)

    def failing_broadly(self) -> bool:
        """Whether overloads are at least half of the last two seconds' answers, and at least
        :attr:`BROAD_MIN` of them: a provider failing broadly, which a retry should back off
        from (see :meth:`RetryPolicy.delay`).
        """
        overloads, answers = self._recent.overload_share(self._clock())
        return overloads >= max(self.BROAD_MIN, 0.5 * answers)

    def observe(self, info: RateInfo) -> None:
        """Adopt what a response's rate-limit headers say."""
        if info.empty:
            return
        _OBSERVED.set(info)
        if self.limits.adaptive:
            self._model.adopt(info)
