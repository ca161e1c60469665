"""Unit tests of the shared mechanisms: buckets, headers, limiter, retries, cost, prompts."""

from __future__ import annotations

import contextvars
import datetime as dt
import heapq
import logging
import math
import random
import time

import anyio
import pytest

from tracedistill import CodeTests, Problem, SamplingParams
from tracedistill.clients.ratelimit import (
    LimiterClosed,
    Permit,
    TokenBucket,
    parse_rate_headers,
    parse_reset,
    parse_retry_after,
)
from tracedistill.clients.retry import error_for_status
from tracedistill.errors import (
    AuthenticationError,
    BudgetExceededError,
    ConfigurationError,
    InsufficientCreditsError,
    InvalidRequestError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
)
from tracedistill.records import TokenUsage
from tracedistill.teachers import (
    DEFAULT_PROMPTS,
    Budget,
    Pricing,
    PromptTemplate,
    RateLimiter,
    RateLimits,
    RetryPolicy,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --- token bucket ----------------------------------------------------------------------------


def test_bucket_refills_and_allows_debt() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10.0, 5.0, clock=clock)
    assert bucket.wait_time(5) == 0
    bucket.take(5)
    assert bucket.wait_time(1) == pytest.approx(0.1)
    clock.now += 0.3
    assert bucket.wait_time(3) == pytest.approx(0, abs=1e-9)
    # a request larger than the capacity waits for a full bucket, then goes into debt
    assert bucket.wait_time(50) == pytest.approx(0.2)
    clock.now += 0.2
    bucket.take(50)
    assert bucket.level == pytest.approx(-45)
    assert bucket.wait_time(1) == pytest.approx(4.6)
    bucket.refund(100)
    assert bucket.level == 5.0  # never above the capacity


# --- headers ---------------------------------------------------------------------------------


def test_parse_openai_headers() -> None:
    info = parse_rate_headers(
        {
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "1m30.5s",
            "x-ratelimit-limit-tokens": "30000",
            "x-ratelimit-reset-tokens": "250ms",
        }
    )
    assert info.requests_limit == 500 and info.requests_remaining == 0
    assert info.requests_reset == pytest.approx(90.5)
    assert info.tokens_limit == 30000 and info.tokens_reset == pytest.approx(0.25)


def test_parse_anthropic_headers() -> None:
    reset = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    info = parse_rate_headers(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-requests-reset": reset,
            "anthropic-ratelimit-input-tokens-limit": "30000",
            "anthropic-ratelimit-output-tokens-limit": "8000",
            "anthropic-ratelimit-output-tokens-remaining": "7000",
        }
    )
    assert info.requests_limit == 50 and 28 < (info.requests_reset or 0) <= 30
    assert info.input_limit == 30000 and info.output_limit == 8000
    assert info.output_remaining == 7000
    assert parse_rate_headers({}).empty


def test_parse_openrouter_and_durations() -> None:
    reset_ms = int((time.time() + 30) * 1000)
    info = parse_rate_headers(
        {
            "x-ratelimit-limit": "200",
            "x-ratelimit-remaining": "0",
            "x-ratelimit-reset": str(reset_ms),
        }
    )
    # OpenRouter's interval is not sent: kept apart, never read as a per-minute limit
    assert info.requests_limit is None and info.key_limit == 200
    assert 28 < (info.key_reset or 0) <= 30
    assert info.exhausted() and info.exhausted()[0][0] == "key"
    for text, seconds in [("6m0s", 360.0), ("1s", 1.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5)]:
        assert parse_reset(text) == pytest.approx(seconds)
    assert parse_reset(str(int(time.time()) + 10)) == pytest.approx(10, abs=1.5)  # epoch s
    assert parse_reset("soon") is None and parse_reset("") is None
    assert parse_rate_headers({"x-ratelimit-limit-tokens": "9000"}).combined_tokens
    assert not parse_rate_headers({"anthropic-ratelimit-tokens-limit": "9000"}).combined_tokens


def test_parse_retry_after() -> None:
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    when = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=20)).strftime(
        "%a, %d %b %Y %H:%M:%S GMT"
    )
    assert 18 < (parse_retry_after({"retry-after": when}) or 0) <= 20
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


# --- limiter ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_limiter_paces_requests() -> None:
    limiter = RateLimiter(RateLimits(requests_per_minute=600, burst_seconds=0.1))  # 10/s, burst 1
    t0 = anyio.current_time()
    for _ in range(4):
        await limiter.acquire()
    assert anyio.current_time() - t0 >= 0.28


@pytest.mark.parametrize(("period", "stall"), [(100, 70), (120, 16)])
def test_starved_loop_never_overfills_a_second(period: int, stall: int) -> None:
    # A loaded machine starves the event loop: after a stall the request bucket would send its
    # whole capacity on top of the rate, and a provider's 1 s sliding window saw 1.5x its limit
    # (429s, then a cut under the told limit). No trailing second may hold more than its pace.
    # Stalls of 0.7 s every second, and of 0.16 s (just enough to fill the 0.15 s bucket) every
    # 1.2 s: the second after each burst then runs at the full pace on top of it.
    clock = FakeClock()
    limiter = RateLimiter(RateLimits(requests_per_minute=3600, burst_seconds=1.0), clock=clock)
    starts: list[int] = []  # in steps of 10 ms: a window's edges are exact
    for step in range(400):  # 4 s, looked at every 10 ms
        clock.now = step * 0.01
        if step % period < stall and step > 50:
            continue
        while limiter._wait_time((1.0, 0.0, 0.0, 0.0), clock.now) <= 0:
            limiter._start(clock.now, (1.0, 0.0, 0.0, 0.0), 0, 0)
            starts.append(step)
    pace = 60.0 * (1.0 - limiter.limits.headroom)
    assert len(starts) > 100
    assert max(sum(t - 100 < u <= t for u in starts) for t in starts) <= pace


def test_first_request_held_by_set_up_never_overfills_a_window() -> None:
    # The first request pays for the client's set-up and holds the event loop (0.15-0.6 s
    # measured); it reaches the provider with what the bucket releases after the stall. Told
    # 1,200/min against 40 per 2 s, the provider's first window held 41-43 (429s at ~2 s).
    clock = FakeClock()
    clock.now = 0.0
    limiter = RateLimiter(RateLimits(requests_per_minute=1200), clock=clock)
    amounts = (1.0, 0.0, 0.0, 0.0)
    limiter._start(clock.now, amounts, 0, 0)
    arrivals = [50]  # in steps of 10 ms: the first request arrives when the loop runs again
    for step in range(50, 650):  # 6 s, looked at every 10 ms after a 0.5 s stall
        clock.now = step * 0.01
        while limiter._wait_time(amounts, clock.now) <= 0:
            limiter._start(clock.now, amounts, 0, 0)
            arrivals.append(step)
    assert max(sum(t - 200 < u <= t for u in arrivals) for t in arrivals) <= 40
    # ...and it costs nothing: the pace (19.6/s) holds after the first second
    assert sum(u > 150 for u in arrivals) >= 0.97 * 19.6 * 5.0


@pytest.mark.parametrize("varied", [True, False])
def test_output_limit_holds_when_answer_lengths_vary(varied: bool) -> None:
    # Told 60,000 output tokens/min, answers of 30-1,500 tokens (log-uniform, mean ~365) against
    # max_tokens=2,000. The output bucket paces the mean length and settles each answer's
    # difference: a long answer pays its excess in full, so a short one must get its whole
    # refund back even into a full bucket. Clipped there, the full-scale run read 0.92 of the
    # limit with varied lengths, 0.976 with every answer the mean's length.
    clock, rng = FakeClock(), random.Random(7)
    clock.now = 0.0
    limiter = RateLimiter(
        RateLimits(requests_per_minute=1200, output_tokens_per_minute=60_000), clock=clock
    )
    running: list[tuple[float, int, Permit]] = []
    used = 0
    for step in range(30_000):  # 300 s, looked at every 10 ms
        clock.now = step * 0.01
        for done in [r for r in running if r[0] <= clock.now]:
            running.remove(done)
            limiter.settle(done[2], input_tokens=10, output_tokens=done[1])
            if clock.now > 150.0:
                used += done[1]
        amounts = limiter._amounts(10, 2000)
        while limiter._wait_time(amounts, clock.now, 2000) <= 0:
            length = round(30 * 50 ** rng.random()) if varied else 365
            permit = limiter._start(clock.now, amounts, 10, 2000)
            running.append((clock.now + 0.3 + 0.001 * length, length, permit))
            amounts = limiter._amounts(10, 2000)
    # the second half, against the limit less the 2% headroom the limiter keeps
    assert used / (1000.0 * 150.0) >= 0.95


@pytest.mark.anyio
async def test_limiter_close_wakes_waiters() -> None:
    limiter = RateLimiter(RateLimits(requests_per_minute=1, burst_seconds=1))
    await limiter.acquire()
    outcome: list[BaseException] = []

    async def waiter() -> None:
        try:
            await limiter.acquire()
        except LimiterClosed as exc:
            outcome.append(exc)

    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.sleep(0.05)
            limiter.close()
    assert outcome
    with pytest.raises(LimiterClosed):
        await limiter.acquire()


def _send(
    limiter: RateLimiter, clock: FakeClock, per_s: float, seconds: float, refuse: int = 0
) -> None:
    """``per_s`` attempts a second for ``seconds``; every ``refuse``-th gets a 429 at once."""
    for i in range(int(per_s * seconds)):
        clock.now += 1.0 / per_s
        permit = Permit(0, 0, clock.now)
        limiter._log.sent(clock.now, 0.0, 0.0)
        if refuse and i % refuse == 0:
            limiter.on_throttled(None, permit=permit)
        else:
            limiter.on_success(permit)


def test_unknown_limit_learned_from_what_was_accepted() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimits(), max_concurrency=64, clock=clock)
    assert limiter.concurrency == 64 and limiter.request_rate is None
    # 40/s sent for 5 s; the provider accepted 20/s and refused the rest (429s answered at once)
    _send(limiter, clock, 40.0, 5.0, refuse=2)
    rate = limiter.request_rate
    assert rate is not None and 18.0 < rate < 23.0  # what was accepted, not the 429 count
    assert limiter.concurrency == 64  # a rate limit is not a concurrency limit
    assert limiter.cuts >= 1
    # quiet seconds: an unknown limit is probed upward gently
    for _ in range(50):
        clock.now += 0.1
        limiter.on_success()
    assert limiter.request_rate is not None and limiter.request_rate > rate


def test_probe_does_not_climb_through_a_pause() -> None:
    # A rate rises only over time requests could be sent at it: a probe that counted a 10 s
    # Retry-After resumed 22% above its estimate at once (and, against a sliding window, climbed
    # a window past the limit before the window could refuse anything).
    clock = FakeClock()
    limiter = RateLimiter(RateLimits(), max_concurrency=64, clock=clock)
    _send(limiter, clock, 40.0, 5.0, refuse=2)
    rate = limiter.request_rate
    assert rate is not None
    limiter._pauses.pause(clock.now, 10.0)
    clock.now += 10.5
    limiter.on_success()
    after = limiter.request_rate
    # half a second of probing at most (+5%/s): 1.05**10.5 = 1.67x before
    assert after is not None and after <= rate * 1.05**0.5 * 1.001, (rate, after)


def _learned_window(limiter: RateLimiter, clock: FakeClock, rate: float) -> None:
    """Set a confirmed estimate ``rate`` (per second), as a fresh window's burst gives one."""
    model = limiter._model
    model.learned["requests"] = rate
    model._confirmed["requests"] = True
    model._last_cut["requests"] = (clock.now, rate)
    model.recompute("requests")


def test_a_probes_lone_429_keeps_what_was_accepted_not_the_probes_rate() -> None:
    # Probing above an estimate, a sliding window refuses a window late, after the probe
    # climbed a window's worth past the limit: cut 5% under the probe's rate, a run stayed at
    # 1.10x the limit with 4-5% 429s. The limit lies between the rate last learned and the
    # probe's; what the provider accepted over the span says where.
    clock = FakeClock()
    limiter = RateLimiter(RateLimits(), max_concurrency=64, clock=clock)
    _learned_window(limiter, clock, 20.0)
    start = clock.now
    while clock.now < start + 20.0:  # sent at the rate allowed, all accepted
        _send(limiter, clock, limiter.request_rate or 1.0, 0.2)
    probe = limiter.request_rate
    assert probe is not None and probe > 1.25 * 20.0  # +2%/s after 3 quiet seconds
    limiter._log.sent(clock.now, 0.0, 0.0)
    limiter.on_throttled(None, permit=Permit(0, 0, clock.now))
    rate = limiter.request_rate
    # what was accepted over the span (~23/s), never under the rate last learned
    assert rate is not None and 20.0 <= rate < 0.9 * probe, (probe, rate)


def test_lone_429_teaches_nothing() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimits(), clock=clock)
    _send(limiter, clock, 20.0, 3.0)
    limiter.on_throttled(5.0, permit=Permit(0, 0, clock.now))  # e.g. shared upstream capacity
    assert limiter.request_rate is None and limiter.cuts == 0
    assert limiter._pauses.until < clock.now  # only that request waits: nobody else is paused


def test_configured_limit_is_trusted_then_learned_down() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimits(requests_per_minute=1200), clock=clock)  # 20/s
    # a few 429s while the provider accepts the configured rate: jitter, not a lower limit
    for _ in range(5):
        _send(limiter, clock, 20.0, 1.0)
        limiter.on_throttled(1.0, permit=Permit(0, 0, clock.now))
    assert limiter.request_rate == pytest.approx(20.0) and limiter.cuts == 0
    # the configured limit is wrong (the provider accepts 10/s): repeated evidence lowers it
    _send(limiter, clock, 20.0, 8.0, refuse=2)
    rate = limiter.request_rate
    assert rate is not None and rate < 17.0 and limiter.cuts >= 1
    # once 429s stop, it is back at the configured limit within seconds
    for _ in range(60):
        clock.now += 0.1
        limiter.on_success()
    assert limiter.request_rate == pytest.approx(20.0)


def test_retry_after_pause_is_not_a_rate_sample() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimits(), clock=clock)
    _send(limiter, clock, 20.0, 2.0)
    limiter._pauses.pause(clock.now, 8.0)  # a long Retry-After pause: nothing sent meanwhile
    clock.now += 8.0
    _send(limiter, clock, 40.0, 0.5, refuse=1)
    rate = limiter.request_rate
    # 40 accepted over the 2 s of sending: ~20/s, not 40 over 10.5 s (~4/s)
    assert rate is not None and rate > 12.0


def test_overload_is_not_throttling() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimits(requests_per_minute=600), max_concurrency=32, clock=clock)
    # 3% random 529s: no change at all
    for i in range(400):
        clock.now += 0.01
        if i % 33 == 0:
            limiter.on_overload()
        else:
            limiter.on_success()
    assert limiter.concurrency == 32 and limiter.request_rate == pytest.approx(10.0)
    assert limiter.overloaded > 10 and limiter.throttled == 0
    # a burst of 529s trims concurrency gently (never below three quarters), and briefly
    for _ in range(60):
        clock.now += 0.05
        limiter.on_overload()
    assert 24 <= limiter.concurrency < 32
    assert limiter.request_rate == pytest.approx(10.0)  # the rate is untouched
    clock.now += 3.5
    limiter.on_success()
    assert limiter.concurrency == 32


def test_random_faults_are_no_overload_burst() -> None:
    # A flaky provider: a quarter of the answers are faults (5xx, resets, bad bodies) spread at
    # random. Their share of a two-second window often tops a quarter; that is no burst, and
    # trimming on it halved a 256-wide run for good (the failed requests back off themselves).
    clock = FakeClock()
    limiter = RateLimiter(RateLimits(requests_per_minute=7200), max_concurrency=256, clock=clock)
    rng = random.Random(7)
    for _ in range(6000):  # 60 s at 100 answers a second
        clock.now += 0.01
        limiter.on_overload() if rng.random() < 0.25 else limiter.on_success()
    assert limiter.overloaded > 1000
    assert limiter.state().concurrency_min == 256


@pytest.mark.anyio
async def test_stalled_attempt_gives_its_slot_back() -> None:
    limiter = RateLimiter(RateLimits(stall_after_s=0.05), max_concurrency=1)
    released = []
    limiter.on_detach = lambda: released.append(True)
    async with limiter.slot() as lease:
        await limiter.acquire()
        lease.begin()
        await anyio.sleep(0.1)
        assert limiter.reap() == 1 and released
        # the slot is free for another attempt while this one still runs
        with anyio.fail_after(1):
            async with limiter.slot() as other:
                other.begin()
        assert limiter.detached == 1
    assert limiter.detached == 0 and limiter.state().stalls == 1


@pytest.mark.anyio
async def test_stalls_past_the_detached_bound_are_named_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter = RateLimiter(RateLimits(stall_after_s=0.05), max_concurrency=1)
    caplog.set_level(logging.WARNING, logger="tracedistill.clients.ratelimit")
    async with limiter.slot() as first:
        first.begin()
        await anyio.sleep(0.1)
        assert limiter.reap() == 1  # the one detached attempt the bound allows
        async with limiter.slot() as second:
            second.begin()
            await anyio.sleep(0.1)
            assert limiter.reap() == 0 and limiter.reap() == 0  # no slot left to give back
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "stream=True" in warnings[0].getMessage()


def test_retry_after_pauses_everyone() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimits(adaptive=False), clock=clock)
    limiter.on_throttled(retry_after=2.0)
    assert limiter._pauses.until == pytest.approx(clock.now + 2.0)
    assert limiter.concurrency == 64  # not adaptive: no cut


def test_clustered_429s_pause_everyone() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimits(requests_per_minute=1200), clock=clock)
    for _ in range(10):
        clock.now += 0.05
        limiter.on_throttled(2.0, permit=Permit(0, 0, clock.now))
    assert limiter._pauses.until == pytest.approx(clock.now + 2.0)
    clock.now += 2.0
    assert 2.0 <= limiter.state().paused_s <= 2.5  # from the third 429 on, extended by each


def test_headers_set_unknown_limits_only() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimits(), clock=clock)
    # OpenAI sends a reset with every limit; a minute or less away shows a per-minute limit
    per_minute = {"x-ratelimit-limit-requests": "120", "x-ratelimit-reset-requests": "1s"}
    limiter.observe(parse_rate_headers(per_minute))
    assert limiter.request_rate == pytest.approx(2.0)
    configured = RateLimiter(RateLimits(requests_per_minute=60), clock=clock)
    configured.observe(parse_rate_headers(per_minute))
    assert configured.request_rate == pytest.approx(1.0)
    limiter.observe(
        parse_rate_headers(
            {
                "anthropic-ratelimit-output-tokens-limit": "6000",
                "anthropic-ratelimit-output-tokens-remaining": "0",
                "anthropic-ratelimit-output-tokens-reset": "5",
            }
        )
    )
    # a used-up limit on a successful answer pauses nobody: the bucket paces it
    assert limiter._pauses.until < clock.now
    assert limiter.state().output_tokens_rate == pytest.approx(6000)
    # a 429 without Retry-After whose headers say a limit is used up waits for its reset
    info = parse_rate_headers(
        {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int((time.time() + 9) * 1000))}
    )
    for _ in range(3):
        limiter.on_throttled(None, info=info)
    assert 7.0 < limiter._pauses.until - clock.now <= 9.0


@pytest.mark.anyio
async def test_output_tokens_reserved_and_refunded() -> None:
    limiter = RateLimiter(
        RateLimits(output_tokens_per_minute=600, burst_seconds=10, headroom=0.0)
    )  # cap 100
    permit = await limiter.acquire(output_tokens=100)
    bucket = limiter._model.buckets["output"]
    assert bucket is not None and bucket.level == pytest.approx(0, abs=0.5)
    limiter.settle(permit, input_tokens=None, output_tokens=30)
    assert bucket.level == pytest.approx(70, abs=0.5)


def test_limits_validate() -> None:
    with pytest.raises(ConfigurationError, match="requests_per_minute"):
        RateLimits(requests_per_minute=0)
    with pytest.raises(ConfigurationError):
        RateLimiter(max_concurrency=0)


# --- retries ---------------------------------------------------------------------------------


def test_backoff_grows_with_jitter_and_cap() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0)
    rng = random.Random(1)
    for attempt, full in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        for _ in range(20):
            assert full / 2 <= policy.delay(attempt, rng=rng) <= full
    assert RetryPolicy(jitter=False).delay(3) == 4.0
    assert 5.0 <= policy.delay(1, retry_after=5.0, rng=rng) <= 5.1
    assert RetryPolicy(max_retry_after=10).delay(1, retry_after=1e6, rng=rng) <= 10.2


def test_isolated_failures_retry_without_growing_backoff() -> None:
    policy = RetryPolicy(base_delay=0.25, max_delay=8.0)
    rng = random.Random(2)
    # one request's bad luck (the provider answers most others): the wait never doubles
    assert all(policy.delay(a, rng=rng, isolated=True) <= 0.25 for a in range(1, 7))
    assert policy.delay(5, rng=rng) >= 2.0  # a broad failure still backs off
    assert policy.delay(5, retry_after=3.0, rng=rng, isolated=True) >= 3.0  # told when


def test_failing_broadly_reads_the_share_of_overloads() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimits(requests_per_minute=6000), max_concurrency=32, clock=clock)
    for i in range(200):  # a quarter of the answers are overloads: isolated bad luck
        clock.now += 0.01
        limiter.on_overload() if i % 4 == 0 else limiter.on_success()
    assert not limiter.failing_broadly()
    for _ in range(100):  # then nearly everything fails
        clock.now += 0.01
        limiter.on_overload()
    assert limiter.failing_broadly()
    clock.now += 2.5  # the burst has passed out of the window
    limiter.on_success()
    assert not limiter.failing_broadly()
    # the last request or two of a run: one overload is half the answers, not a broad failure
    clock.now += 2.5
    limiter.on_overload()
    assert not limiter.failing_broadly()
    clock.now += 0.1
    limiter.on_overload()
    limiter.on_overload()
    assert limiter.failing_broadly()  # three with nothing answered: the provider is down


@pytest.mark.parametrize(
    ("status", "cls", "retryable", "fatal"),
    [
        (400, InvalidRequestError, False, False),
        (404, InvalidRequestError, False, False),
        (401, AuthenticationError, False, True),
        (403, AuthenticationError, False, True),
        (402, InsufficientCreditsError, False, True),
        (408, ProviderTimeoutError, True, False),
        (429, RateLimitError, True, False),
        (500, ProviderUnavailableError, True, False),
        (502, ProviderUnavailableError, True, False),
        (529, ProviderUnavailableError, True, False),
    ],
)
def test_errors_by_status(status: int, cls: type, retryable: bool, fatal: bool) -> None:
    error = error_for_status(status, "m", retry_after=1.5)
    assert type(error) is cls and error.retryable is retryable and error.fatal is fatal
    assert error.status == status and error.retry_after == 1.5
    assert RetryPolicy(max_attempts=3).should_retry(error, 1) is retryable
    assert not RetryPolicy(max_attempts=3).should_retry(error, 3)


# --- cost ------------------------------------------------------------------------------------


def test_pricing() -> None:
    price = Pricing(input_per_million=3.0, output_per_million=15.0)
    assert price.cost(TokenUsage(prompt_tokens=1000, completion_tokens=2000)) == pytest.approx(
        0.033
    )
    assert price.worst_case(1000, 4096) == pytest.approx(0.003 + 0.06144)
    with pytest.raises(ConfigurationError):
        Pricing(input_per_million=-1, output_per_million=0)


@pytest.mark.anyio
async def test_budget_reserves_worst_case() -> None:
    budget = Budget(1.0, spent_usd=0.5)
    first = await budget.reserve(0.3)
    assert budget.reserved_usd == pytest.approx(0.3)
    # 0.5 + 0.3 + 0.3 > 1: the second waits for the first to settle
    async with anyio.create_task_group() as tg:
        results = []

        async def second() -> None:
            results.append(await budget.reserve(0.3))

        tg.start_soon(second)
        await anyio.sleep(0.02)
        assert not results
        budget.settle(first, 0.1)
    assert budget.spent_usd == pytest.approx(0.6) and results
    budget.settle(results[0], 0.3)
    with pytest.raises(BudgetExceededError, match="budget"):
        await budget.reserve(0.3)  # 0.9 + 0.3 > 1 and nothing in flight


@pytest.mark.anyio
async def test_budget_unknown_price_one_at_a_time() -> None:
    budget = Budget(0.01)
    first = await budget.reserve(None)
    with anyio.move_on_after(0.05) as scope:
        await budget.reserve(None)
    assert scope.cancelled_caught  # waits: the first cost is not known yet
    budget.settle(first, 0.004)
    second = await budget.reserve(None)  # now reserved at the largest cost seen
    assert second.amount == pytest.approx(0.004)
    budget.settle(second, 0.004)
    with pytest.raises(BudgetExceededError):
        await budget.reserve(None)  # 0.008 + 0.004 > 0.01


def test_unlimited_budget_counts() -> None:
    budget = Budget(None)
    assert budget.remaining_usd is None and not budget.exhausted
    with pytest.raises(ConfigurationError):
        Budget(-1)


# --- prompts ---------------------------------------------------------------------------------


def test_prompts_render_per_task() -> None:
    math = Problem(kind="math", prompt="What is {id} + 1?", answer="2")
    messages = DEFAULT_PROMPTS.render(math)
    assert len(messages) == 1 and messages[0].role == "user"
    assert messages[0].content.startswith("What is {id} + 1?")  # problem text kept literally
    assert "\\boxed{}" in messages[0].content
    code = Problem(kind="code", prompt="Write add(a, b).", tests=CodeTests(asserts=["x"]))
    assert "```python" in DEFAULT_PROMPTS.render(code)[0].content


def test_prompts_overridable() -> None:
    template = PromptTemplate(user="Q: {prompt} (source {source})", system="Be brief.")
    prompts = DEFAULT_PROMPTS.with_template("math", template)
    problem = Problem(kind="math", prompt="1+1", answer="2", source="demo")
    messages = prompts.render(problem)
    assert [m.role for m in messages] == ["system", "user"]
    assert messages[1].content == "Q: 1+1 (source demo)"
    assert PromptTemplate.from_dict(template.to_dict()) == template
    assert prompts.with_template("code", "Solve: {prompt}").code.user == "Solve: {prompt}"
    with pytest.raises(ConfigurationError, match="prompt"):
        PromptTemplate(user="no placeholder")


def test_prompt_and_params_change_the_key() -> None:
    from tracedistill.teachers import OpenAICompatTeacher

    problem = Problem(kind="math", prompt="1+1", answer="2")
    a = OpenAICompatTeacher("m", base_url="http://x", params=SamplingParams(max_tokens=10))
    b = OpenAICompatTeacher("m", base_url="http://x", params=SamplingParams(max_tokens=11))
    c = OpenAICompatTeacher(
        "m",
        base_url="http://x",
        params=SamplingParams(max_tokens=10),
        prompts=DEFAULT_PROMPTS.with_template("math", "{prompt}"),
    )
    keys = {t.request_key(problem) for t in (a, b, c)}
    assert len(keys) == 3
    assert a.request_key(problem) == a.request_key(problem)
    assert a.request_key(problem, 1) != a.request_key(problem, 0)


def test_unknown_window_without_retry_after_is_read_from_its_reopening() -> None:
    # a fresh 2 s sliding window admits its 40 at once, then refuses everything, with no
    # Retry-After, until it reopens: the rate is that allowance over the time it stayed shut.
    # An empty context: no rate headers seen by an earlier test stand in for this 429's.
    contextvars.Context().run(_reopening)


def _reopening() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimits(), max_concurrency=64, clock=clock)

    def send() -> Permit:
        limiter._log.sent(clock.now, 0.0, 0.0)
        return Permit(0, 0, clock.now)

    start = clock.now
    burst = [send() for _ in range(64)]
    clock.now += 0.01
    for permit in burst[40:]:
        limiter.on_throttled(None, permit=permit)
    clock.now += 0.04
    for permit in burst[:40]:
        limiter.on_success(permit, latency=0.05)
    while clock.now < start + 2.0:  # refused at 30/s until the window reopens, 2 s after the burst
        clock.now += 1.0 / 30.0
        limiter.on_throttled(None, permit=send())
    before = limiter.request_rate
    assert before is not None and before > 25.0  # read from the opening allowance: too high
    limiter.on_success(send(), latency=0.05)
    rate = limiter.request_rate
    assert rate is not None and 19.0 < rate < 21.0, (before, rate)


@pytest.mark.parametrize(("window", "allowance", "per_s"), [(2.0, 40, 50.0), (10.0, 200, 256.0)])
def test_unknown_window_let_in_over_time_is_read_from_its_reopening(
    window: float, allowance: int, per_s: float
) -> None:
    # The window admits its allowance as fast as the client sends (behind new connections,
    # over the first second), refuses everything until it reopens, with no Retry-After: its
    # rate is the allowance over the whole window, counted from the first acceptance. Counted
    # from the first refusal, an allowance let in over a third of a 2 s window read 1.47x.
    contextvars.Context().run(_let_in_over_time, window, allowance, per_s)


def _let_in_over_time(window: float, allowance: int, per_s: float) -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimits(), max_concurrency=64, clock=clock)
    start, latency = clock.now, 0.1
    events: list[tuple[float, int, Permit | None, bool]] = []
    sends = [start + i / per_s for i in range(int(per_s))]  # the first second
    sends += [start + 1.0 + i / 30.0 for i in range(int(30 * (window - 1.0)))]  # then 30/s
    for i, at in enumerate(sends):
        heapq.heappush(events, (at, i, None, i < allowance))
    while events:
        clock.now, i, permit, ok = heapq.heappop(events)
        if permit is None:  # sent; answered a latency later, refused at once
            limiter._log.sent(clock.now, 0.0, 0.0)
            back = clock.now + (latency if ok else 0.01)
            heapq.heappush(events, (back, i, Permit(0, 0, clock.now), ok))
        elif ok:
            limiter.on_success(permit, latency=latency)
        else:
            limiter.on_throttled(None, permit=permit)
    clock.now = start + window + 0.01  # reopened: the next request is accepted
    limiter._log.sent(clock.now, 0.0, 0.0)
    permit = Permit(0, 0, clock.now)
    clock.now += latency
    limiter.on_success(permit, latency=latency)
    rate = limiter.request_rate
    assert rate is not None and 19.0 < rate < 21.0, rate


@pytest.mark.parametrize("told", [False, True], ids=["no Retry-After", "Retry-After"])
def test_a_fixed_window_joined_late_is_read_from_the_next_reopening(told: bool) -> None:
    # A fixed window follows the provider's clock: the run joins the first one 6 s into 10,
    # and its allowance over the 4 s left reads 2.5x the rate. The next window, filled at that
    # rate and shut until it reopens, shows the rate: its allowance over the time between
    # its opening and the reopening. Before, only the first reopening was read, and the cuts
    # made while the second window was shut settled wherever the last one fell; with a
    # Retry-After (whole seconds to the window's end) the later windows taught nothing, and
    # the run burst and paused at 2.9x the rate with 14% 429s.
    contextvars.Context().run(_joined_late, told)


def _joined_late(told: bool) -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimits(), max_concurrency=64, clock=clock)
    start, latency, window, allowance = clock.now, 0.1, 10.0, 200
    phase = 6.0  # the run starts this far into the provider's window

    def admitted(at: float, used: dict[int, int]) -> bool:
        index = int((at - start + phase) // window)
        used[index] = used.get(index, 0) + 1
        return used[index] <= allowance

    used: dict[int, int] = {}
    events: list[tuple[float, int, Permit | None, bool]] = []
    sends = [start + i / 200.0 for i in range(800)]  # the first window: 200/s
    sends += [start + 4.0 + i / 50.0 for i in range(550)]  # the next, as read from the first
    for i, at in enumerate(sends):
        heapq.heappush(events, (at, i, None, False))
    reads, reopenings = [], [start + 4.0, start + 14.0]
    while events:
        clock.now, i, permit, ok = heapq.heappop(events)
        if permit is None:  # sent; answered a latency later, refused at once
            limiter._log.sent(clock.now, 0.0, 0.0)
            ok = admitted(clock.now, used)
            heapq.heappush(
                events, (clock.now + (latency if ok else 0.01), i, Permit(0, 0, clock.now), ok)
            )
        elif ok:
            limiter.on_success(permit, latency=latency)
            if reopenings and permit.sent_at >= reopenings[0] - 1e-9:
                reopenings.pop(0)
                reads.append(limiter.request_rate)
        else:
            left = window - (permit.sent_at - start + phase) % window
            limiter.on_throttled(math.ceil(left) if told else None, permit=permit)
    first, second = reads
    assert first is not None and 45.0 < first < 60.0, reads  # the short first window
    assert second is not None and 19.5 < second < 20.5, reads
