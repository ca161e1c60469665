"""Client-side rate limiting: weighted token buckets, a concurrency limit, and adaptation.

A :class:`RateLimiter` enforces requests/min, input tokens/min and output tokens/min as token
buckets (output tokens are reserved against ``max_tokens`` when a request starts and the unused
part is refunded), plus a maximum number of requests in flight. It adapts to the provider: it
honours ``Retry-After`` / ``retry-after-ms``, reads the rate-limit headers providers send
(``anthropic-ratelimit-*``, ``x-ratelimit-*``), and on 429 cuts concurrency and the request rate
and recovers them gradually (AIMD), so it also works where the limits are unknown.
"""

from __future__ import annotations

import collections
import datetime as _dt
import email.utils
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import attrs

from tracedistill.errors import ConfigurationError, TeacherError

__all__ = [
    "LimiterClosed",
    "Permit",
    "RateInfo",
    "RateLimiter",
    "RateLimits",
    "TokenBucket",
    "parse_rate_headers",
    "parse_retry_after",
]

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


def _positive_or_none(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (not isinstance(value, int | float) or value <= 0):
        raise ConfigurationError(f"RateLimits.{attribute.name} must be > 0 or None, got {value!r}")


@attrs.frozen(slots=True, kw_only=True)
class RateLimits:
    """The limits a client keeps to. ``None`` means unknown (learned from the provider).

    Args:
        requests_per_minute: requests started per minute.
        input_tokens_per_minute: prompt tokens per minute (estimated before the request,
            corrected from the reported usage after it).
        output_tokens_per_minute: completion tokens per minute, reserved against ``max_tokens``.
        burst_seconds: how many seconds' worth of each limit may be spent at once (the bucket
            size). Small values keep the client under providers that enforce per-minute limits on
            a finer grain.
        adaptive: learn from 429s and rate-limit headers (cut, then recover gradually).
    """

    requests_per_minute: float | None = attrs.field(default=None, validator=_positive_or_none)
    input_tokens_per_minute: float | None = attrs.field(default=None, validator=_positive_or_none)
    output_tokens_per_minute: float | None = attrs.field(default=None, validator=_positive_or_none)
    burst_seconds: float = attrs.field(default=0.5, validator=_positive_or_none)
    adaptive: bool = True


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

    def set_rate(self, rate: float, capacity: float) -> None:
        """Change the rate and capacity, keeping the tokens already accrued (capped)."""
        self._refill(self._clock())
        self.rate = rate
        self.capacity = capacity
        self.level = min(self.level, capacity)


# --- headers -------------------------------------------------------------------------------


@attrs.frozen(slots=True, kw_only=True)
class RateInfo:
    """What a response's headers say about the provider's limits (None = not sent).

    Resets are in seconds from now. ``tokens_*`` is OpenAI's combined token limit.
    """

    requests_limit: float | None = None
    requests_remaining: float | None = None
    requests_reset: float | None = None
    input_limit: float | None = None
    input_remaining: float | None = None
    input_reset: float | None = None
    output_limit: float | None = None
    output_remaining: float | None = None
    output_reset: float | None = None
    tokens_limit: float | None = None
    tokens_remaining: float | None = None
    tokens_reset: float | None = None
    retry_after: float | None = None

    @property
    def empty(self) -> bool:
        """Whether no limit header was found."""
        return all(getattr(self, f.name) is None for f in attrs.fields(RateInfo))


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def _parse_reset(value: str, now: _dt.datetime | None = None) -> float | None:
    """Parse ``1s``, ``6m0s``, ``20ms``, a number of seconds, or an RFC 3339 time."""
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if parts and "".join(n + u for n, u in parts) == value:
        scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
        return sum(float(n) * scale[u] for n, u in parts)
    try:
        moment = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.UTC)
    now = now or _dt.datetime.now(_dt.UTC)
    return max(0.0, (moment - now).total_seconds())


def _num(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Return the wait a response asks for (``retry-after-ms`` or ``Retry-After``), in seconds."""
    ms = _num(headers.get("retry-after-ms"))
    if ms is not None:
        return ms / 1000.0
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _num(value)
    if seconds is not None:
        return seconds
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.UTC)
    return max(0.0, (moment - _dt.datetime.now(_dt.UTC)).total_seconds())


def parse_rate_headers(headers: Mapping[str, str]) -> RateInfo:
    """Read Anthropic's ``anthropic-ratelimit-*`` and OpenAI's ``x-ratelimit-*`` headers."""
    values: dict[str, float | None] = {}
    groups = {
        "requests": ("anthropic-ratelimit-requests", "x-ratelimit-{}-requests"),
        "input": ("anthropic-ratelimit-input-tokens", None),
        "output": ("anthropic-ratelimit-output-tokens", None),
        "tokens": ("anthropic-ratelimit-tokens", "x-ratelimit-{}-tokens"),
    }
    for group, (anthropic_prefix, openai_pattern) in groups.items():
        for part in ("limit", "remaining", "reset"):
            raw = headers.get(f"{anthropic_prefix}-{part}")
            if raw is None and openai_pattern is not None:
                raw = headers.get(openai_pattern.format(part))
            if raw is None:
                continue
            values[f"{group}_{part}"] = _parse_reset(raw) if part == "reset" else _num(raw)
    values["retry_after"] = parse_retry_after(headers)
    return RateInfo(**values)


# --- the limiter ---------------------------------------------------------------------------


@attrs.frozen(slots=True)
class Permit:
    """What one started request holds: its token reservations, to settle when it ends."""

    input_tokens: int
    output_tokens: int


class RateLimiter:
    """Shared by every request of a run: concurrency, token buckets and adaptation.

    Use ``async with limiter.slot():`` around a request's attempts and ``await
    limiter.acquire(...)`` before each attempt goes on the wire; report the outcome with
    :meth:`settle`, :meth:`on_success`, :meth:`on_throttled` and :meth:`observe`.
    """

    #: at most one multiplicative cut per this many seconds (a burst of 429s is one event)
    CUT_INTERVAL = 1.0
    #: seconds of accepted requests used to estimate the provider's rate after a 429
    WINDOW = 5.0

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
        self._conc = float(max_concurrency)
        self._lock = anyio.Lock()
        self._closed = anyio.Event()
        self._pause_until = 0.0
        burst = self.limits.burst_seconds
        # configured limits per second; learned ones replace None
        self._configured = {
            "requests": _per_s(self.limits.requests_per_minute),
            "input": _per_s(self.limits.input_tokens_per_minute),
            "output": _per_s(self.limits.output_tokens_per_minute),
        }
        self._header_rate: dict[str, float | None] = {
            "requests": None,
            "input": None,
            "output": None,
        }
        self._buckets: dict[str, TokenBucket | None] = {
            name: None if rate is None else TokenBucket(rate, _capacity(rate, burst), clock=clock)
            for name, rate in self._configured.items()
        }
        # AIMD state of the request rate learned from 429s (None: no 429 seen)
        self._learned: float | None = None
        self._ceiling: float | None = None
        self._last_cut = -math.inf
        self._last_throttle = -math.inf
        self._episode = -math.inf
        self._last_raise = -math.inf
        self._accepted: collections.deque[float] = collections.deque()
        self._started = clock()
        self.throttled = 0

    # --- state -------------------------------------------------------------------------------

    @property
    def concurrency(self) -> int:
        """The current concurrency limit."""
        return int(self._slots.total_tokens)

    @property
    def request_rate(self) -> float | None:
        """The request rate (per second) the client keeps to now, or None for unlimited."""
        bucket = self._buckets["requests"]
        return None if bucket is None else bucket.rate

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed.is_set()

    def close(self) -> None:
        """Stop: waiting and future acquisitions raise :class:`LimiterClosed`."""
        self._closed.set()

    # --- acquiring -----------------------------------------------------------------------------

    def slot(self) -> anyio.CapacityLimiter:
        """The concurrency limiter: ``async with limiter.slot(): ...`` holds one slot."""
        return self._slots

    async def _sleep(self, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            await self._closed.wait()
        if self._closed.is_set():
            raise LimiterClosed("the run is stopping; no new request starts")

    async def acquire(self, input_tokens: int = 0, output_tokens: int = 0) -> Permit:
        """Wait until one request with these token needs may start, and reserve them.

        Raises:
            LimiterClosed: the run is stopping.
        """
        if self._closed.is_set():
            raise LimiterClosed("the run is stopping; no new request starts")
        # FIFO: anyio's Lock wakes waiters in order, so requests start in the order they asked.
        async with self._lock:
            while True:
                if self._closed.is_set():
                    raise LimiterClosed("the run is stopping; no new request starts")
                now = self._clock()
                wait = self._pause_until - now
                for name, amount in (
                    ("requests", 1),
                    ("input", input_tokens),
                    ("output", output_tokens),
                ):
                    bucket = self._buckets[name]
                    if bucket is not None and amount:
                        wait = max(wait, bucket.wait_time(amount, now))
                if wait <= 0:
                    break
                await self._sleep(wait)
            for name, amount in (
                ("requests", 1),
                ("input", input_tokens),
                ("output", output_tokens),
            ):
                bucket = self._buckets[name]
                if bucket is not None and amount:
                    bucket.take(amount)
        return Permit(input_tokens, output_tokens)

    def settle(
        self, permit: Permit, *, input_tokens: int | None, output_tokens: int | None
    ) -> None:
        """Correct the reservations of a finished request with the tokens it really used."""
        bucket = self._buckets["input"]
        if bucket is not None and input_tokens is not None:
            diff = input_tokens - permit.input_tokens
            if diff > 0:
                bucket.take(diff)
            else:
                bucket.refund(-diff)
        bucket = self._buckets["output"]
        if bucket is not None:
            used = permit.output_tokens if output_tokens is None else output_tokens
            bucket.refund(permit.output_tokens - used)

    # --- adaptation ----------------------------------------------------------------------------

    def _recompute(self, name: str) -> None:
        """Set bucket ``name`` to the lowest of its configured, header and learned rates."""
        candidates = [r for r in (self._configured[name], self._header_rate[name]) if r is not None]
        if name == "requests" and self._learned is not None:
            candidates.append(self._learned)
        if not candidates:
            self._buckets[name] = None
            return
        effective = min(candidates)
        burst = self.limits.burst_seconds
        if name == "requests" and effective == self._learned:
            burst = min(burst, 0.25)  # a learned limit gets a small burst: its grain is unknown
        capacity = _capacity(effective, burst)
        bucket = self._buckets[name]
        if bucket is None:
            bucket = TokenBucket(effective, capacity, clock=self._clock)
            if name == "requests":
                bucket.level = 1.0  # a limit learned mid-run starts without a burst
            self._buckets[name] = bucket
        elif bucket.rate != effective:
            bucket.set_rate(effective, capacity)

    def on_success(self) -> None:
        """Record an accepted request: grows concurrency and the learned rate back gradually."""
        now = self._clock()
        self._accepted.append(now)
        horizon = now - self.WINDOW
        while self._accepted and self._accepted[0] < horizon:
            self._accepted.popleft()
        if not self.limits.adaptive:
            return
        if self._conc < self.max_concurrency:
            # additive increase: about one slot per round of `concurrency` successes
            self._conc = min(float(self.max_concurrency), self._conc + 1.0 / self._conc)
            self._apply_concurrency()
        if (
            self._learned is not None
            and now - self._last_cut >= self.CUT_INTERVAL
            and now - self._last_raise >= self.CUT_INTERVAL
        ):
            self._last_raise = now
            # far below the rate of the last 429: recover quickly; near it: probe gently
            step = 0.10 if self._ceiling is None or self._learned < 0.9 * self._ceiling else 0.01
            self._learned *= 1.0 + step
            self._recompute("requests")

    def _measure(self, now: float) -> float | None:
        """The accepted request rate since this stretch of 429s began (None: too little data)."""
        start = max(self._episode, now - self.WINDOW)
        span = now - start
        accepted = sum(1 for t in self._accepted if t > start)
        if (accepted >= 3 and span >= 0.25) or (accepted >= 1 and span >= self.WINDOW / 2):
            return accepted / span
        return None

    def on_throttled(self, retry_after: float | None = None) -> None:
        """Record a 429 (or 529): pause for ``retry_after`` and cut concurrency and rate.

        While 429s keep coming the provider is saturated, so the rate it accepts since they
        began is its limit: the request rate is set just under it. Concurrency is halved at
        most once per :attr:`CUT_INTERVAL`.
        """
        now = self._clock()
        self.throttled += 1
        if retry_after is not None and retry_after > 0:
            self._pause_until = max(self._pause_until, now + min(retry_after, 600.0))
        if not self.limits.adaptive:
            return
        if now - self._last_throttle > self.WINDOW:
            self._episode = now  # a new stretch of saturation begins
        self._last_throttle = now
        current = self.request_rate
        measured = self._measure(now)
        target = None if measured is None else max(0.05, 0.97 * measured)
        cut_due = now - self._last_cut >= self.CUT_INTERVAL
        if cut_due:
            self._last_cut = now
            self._conc = max(float(self.min_concurrency), self._conc / 2.0)
            self._apply_concurrency()
            if self._learned is not None and (target is None or target >= self._learned):
                target = self._learned * 0.9  # still throttled at the learned rate: back off
        if target is not None and (current is None or target < current):
            self._ceiling = measured if measured is not None else current
            self._learned = target
            self._recompute("requests")
            logger.info(
                "rate limited: concurrency %d, request rate %.1f/min",
                self.concurrency,
                target * 60.0,
            )

    def observe(self, info: RateInfo) -> None:
        """Adopt what a response's rate-limit headers say."""
        if info.empty:
            return
        now = self._clock()
        for name, limit in (
            ("requests", info.requests_limit),
            ("input", info.input_limit),
            ("output", info.output_limit),
        ):
            if limit and self.limits.adaptive and self._configured[name] is None:
                rate = limit / 60.0
                if self._header_rate[name] != rate:
                    self._header_rate[name] = rate
                    self._recompute(name)
        for remaining, reset in (
            (info.requests_remaining, info.requests_reset),
            (info.input_remaining, info.input_reset),
            (info.output_remaining, info.output_reset),
            (info.tokens_remaining, info.tokens_reset),
        ):
            if remaining is not None and remaining < 1 and reset:
                self._pause_until = max(self._pause_until, now + min(reset, 600.0))

    def _apply_concurrency(self) -> None:
        target = max(self.min_concurrency, min(self.max_concurrency, int(self._conc)))
        if target != self._slots.total_tokens:
            self._slots.total_tokens = target


def _per_s(per_minute: float | None) -> float | None:
    return None if per_minute is None else per_minute / 60.0


def _capacity(rate: float, burst_seconds: float) -> float:
    return max(1.0, rate * burst_seconds)
