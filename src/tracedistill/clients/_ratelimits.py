"""The limiter's records and token buckets: what a client keeps to, what it reports, what one
attempt holds. Re-exported by :mod:`tracedistill.clients.ratelimit`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import attrs

from tracedistill.errors import ConfigurationError, TeacherError
from tracedistill.records.base import trusted_maker

__all__ = [
    "DIMENSIONS",
    "Clock",
    "LimiterClosed",
    "LimiterState",
    "Permit",
    "RateLimits",
    "TokenBucket",
    "capacity_for",
    "new_permit",
    "per_second",
]

Clock = Callable[[], float]

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
        tokens_per_minute: prompt plus completion tokens per minute (OpenAI's TPM), charged
            the prompt plus the whole ``max_tokens`` when a request starts, from a bucket of a
            minute of the limit, as OpenAI counts it.
        burst_seconds: how many seconds' worth of each limit may be spent at once (the bucket
            size; a request bucket holds at most 0.15 s, and no trailing second starts more
            requests than one second of the pace). Request buckets start empty, so a run
            starts at the rate, not with a burst.
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
        ceiling_rpm: the request limit learned in place of a trusted one (configured, else
            announced) that repeated 429s showed wrong: the limiter keeps to it and probes
            slowly above it. None while the trusted limit stands. :attr:`limit_rpm` is the
            request limit believed now, whichever it is.
        learned_rpm: a temporary cut under that limit, learned from a burst of 429s; it climbs
            back to the limit within seconds once they stop (None: no cut under way).
        input_tokens_rate / output_tokens_rate / tokens_rate: the token rates allowed now.
        concurrency / max_concurrency / concurrency_min: the slots allowed now, at most, and at
            the lowest point of the run.
        inflight: requests in flight now; inflight_mean: their time-weighted mean.
        throttled: 429 answers; overloaded: server-side failures (5xx and 529 answers, lost
            connections, timeouts, unreadable bodies, HTTP 200 answers whose body is an error).
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
    ceiling_rpm: float | None = None

    @property
    def limit_rpm(self) -> float | None:
        """The request limit believed now: the learned ceiling, else configured, else announced."""
        for value in (self.ceiling_rpm, self.configured_rpm, self.header_rpm):
            if value is not None:
                return value
        return None

    def describe_limit(self) -> str | None:
        """The learned request limit and the trusted one it replaced (None: none learned)."""
        if self.ceiling_rpm is None:
            return None
        trusted = self.configured_rpm if self.configured_rpm is not None else self.header_rpm
        source = "configured" if self.configured_rpm is not None else "announced"
        replaced = "" if trusted is None else f" in place of the {source} {trusted:,.0f}/min"
        return f"learned limit {self.ceiling_rpm:,.0f}/min{replaced}"

    def describe(self) -> str:
        """One line for logs and summaries."""

        def rate(value: float | None) -> str:
            return "unlimited" if value is None else f"{value:,.0f}/min"

        lowest = "" if self.request_rate_min is None else f" (lowest {rate(self.request_rate_min)})"
        limit = self.describe_limit()
        return (
            f"allowed {rate(self.request_rate)}{lowest}"
            f"{'' if limit is None else f' ({limit})'}, concurrency {self.concurrency}"
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
        # a level above the capacity (a refund's, see refund()) neither grows nor is cut
        if now > self._last and self.level < self.capacity:
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

    def refund(self, amount: float, above: float = 0.0) -> None:
        """Give back ``amount`` unused tokens, never above the capacity plus ``above``."""
        if amount > 0:
            self._refill(self._clock())
            level = self.level
            self.level = min(level + amount, max(level, self.capacity + above))

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


class RecentStarts(Protocol):
    """A record of request starts, newest last (the limiter's :class:`SendLog`)."""

    def nth_last(self, n: int) -> float | None:
        """When the ``n``-th most recent request started (None: fewer were recorded)."""


class SecondCap:
    """No trailing second holds more request starts than one second of the pace.

    A token bucket allows its capacity *on top of* the rate in any span: after the event loop
    was starved for half a second (a loaded machine), a bucket holding ``burst_seconds`` of the
    rate sends that much at once, and a provider's sliding window of one second (or five) sees
    up to 1.5x (1.1x) its limit and answers 429s. Capping every trailing second at the pace's
    worth bounds every window of one second or longer to the pace, whatever the bucket holds.
    Under ``MIN_PACE`` per second, rounding the pace down would cost a large share of it
    (19.6/s capped at 19 is 3% under the pace): there the cap is a second of the *limit*
    (``headroom`` above the pace), where that is a whole number at least the pace, spread
    over the time the pace takes for it: it never holds the pace back, and still keeps every
    window of a second or more within the limit, with the headroom to spare.

    It keeps no record of its own: it reads the starts the limiter records for its model of
    the provider (one record of recent sends serves both).
    """

    MIN_PACE = 20.0

    __slots__ = ("_starts",)

    def __init__(self, starts: RecentStarts) -> None:
        self._starts = starts

    def wait_time(self, pace: float, now: float, limit: float | None = None) -> float:
        """Seconds until one more request may start at ``pace`` per second, kept under
        ``limit`` per second (<= 0: now).
        """
        if pace >= self.MIN_PACE:
            cap = int(pace)
        elif limit is not None and int(limit) >= pace:
            cap = int(limit)
        else:
            return 0.0
        # ...over cap/pace seconds (a little over a second, by the headroom): a second of the
        # limit never spans less than it takes at the pace, so the provider's clock, a few ms
        # off the client's, never sees two such seconds back to back
        span = max(1.0, cap / pace)
        # the cap-th most recent start leaves the trailing span when one more may start
        oldest = self._starts.nth_last(cap)
        if oldest is None or oldest <= now - span:
            return 0.0
        return oldest + span - now


@attrs.frozen(slots=True)
class Permit:
    """What one started attempt holds: its token reservations and when it was sent.

    ``paced_output``: what the output-token bucket was charged (the mean answer length), when
    the output limit is paced; the whole ``output_tokens`` is held against it until settled.
    """

    input_tokens: int
    output_tokens: int
    sent_at: float = 0.0
    paced_output: float | None = None


_MAKE_PERMIT = trusted_maker(Permit)


def new_permit(
    input_tokens: int, output_tokens: int, sent_at: float, paced_output: float | None
) -> Permit:
    """``Permit(input_tokens, output_tokens, sent_at, paced_output)`` from values the limiter
    produced itself (it has no converter or validator to run), at about half the cost: one is
    built for every attempt.
    """
    permit: Permit = _MAKE_PERMIT(input_tokens, output_tokens, sent_at, paced_output)
    return permit


def per_second(per_minute: float | None) -> float | None:
    """A per-minute figure per second (None stays None)."""
    return None if per_minute is None else per_minute / 60.0


def capacity_for(rate: float, burst_seconds: float) -> float:
    """The size of a bucket paced at ``rate`` holding ``burst_seconds`` of it (at least 1)."""
    return max(1.0, rate * burst_seconds)
