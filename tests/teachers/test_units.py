"""Unit tests of the shared mechanisms: buckets, headers, limiter, retries, cost, prompts."""

from __future__ import annotations

import datetime as dt
import random

import anyio
import pytest

from tracedistill import CodeTests, Problem, SamplingParams
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
from tracedistill.teachers.ratelimit import (
    LimiterClosed,
    TokenBucket,
    parse_rate_headers,
    parse_retry_after,
)
from tracedistill.teachers.retry import error_for_status


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


def test_aimd_cuts_and_recovers() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimits(), max_concurrency=64, clock=clock)
    assert limiter.concurrency == 64 and limiter.request_rate is None
    # 20 accepted per second for a while, then 429s: the learned rate sits just below 20/s
    for _ in range(40):
        clock.now += 0.05
        limiter.on_success()
    limiter.on_throttled()
    assert limiter.concurrency == 32
    for _ in range(10):
        clock.now += 0.05
        limiter.on_success()
    limiter.on_throttled()  # within the cut interval: no second concurrency cut
    assert limiter.concurrency == 32
    rate = limiter.request_rate
    assert rate is not None and 15 < rate < 20
    # quiet seconds: the rate and the concurrency grow back gradually
    for _ in range(400):
        clock.now += 0.05
        limiter.on_success()
    assert limiter.request_rate is not None and limiter.request_rate > rate
    assert limiter.concurrency > 32


def test_retry_after_pauses_everyone() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimits(adaptive=False), clock=clock)
    limiter.on_throttled(retry_after=2.0)
    assert limiter._pause_until == pytest.approx(clock.now + 2.0)
    assert limiter.concurrency == 64  # not adaptive: no cut


def test_headers_set_unknown_limits_only() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimits(), clock=clock)
    limiter.observe(parse_rate_headers({"x-ratelimit-limit-requests": "120"}))
    assert limiter.request_rate == pytest.approx(2.0)
    configured = RateLimiter(RateLimits(requests_per_minute=60), clock=clock)
    configured.observe(parse_rate_headers({"x-ratelimit-limit-requests": "120"}))
    assert configured.request_rate == pytest.approx(1.0)
    limiter.observe(
        parse_rate_headers(
            {
                "anthropic-ratelimit-output-tokens-remaining": "0",
                "anthropic-ratelimit-output-tokens-reset": "5",
            }
        )
    )
    assert limiter._pause_until == pytest.approx(clock.now + 5)


@pytest.mark.anyio
async def test_output_tokens_reserved_and_refunded() -> None:
    limiter = RateLimiter(RateLimits(output_tokens_per_minute=600, burst_seconds=10))  # cap 100
    permit = await limiter.acquire(output_tokens=100)
    bucket = limiter._buckets["output"]
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
