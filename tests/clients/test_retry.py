"""The one retry loop (``retry_call``) that teachers and model clients share."""

from __future__ import annotations

import random

import pytest

from tracedistill.clients.retry import RetryPolicy, retry_call
from tracedistill.errors import (
    AuthenticationError,
    InvalidRequestError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitError,
)

pytestmark = pytest.mark.anyio

POLICY = RetryPolicy(max_attempts=4, base_delay=1.0, max_delay=60.0, jitter=False)


class Flaky:
    """Fails with the given errors in turn, then answers ``"ok"``."""

    def __init__(self, *errors: ProviderError) -> None:
        self.errors = list(errors)
        self.calls: list[tuple[object, ...]] = []

    async def __call__(self, *args: object) -> str:
        self.calls.append(args)
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


class Waits:
    """Records the waits instead of sleeping."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)


async def test_retryable_errors_are_retried_with_growing_backoff() -> None:
    attempt, wait = Flaky(ProviderUnavailableError("502"), RateLimitError("429")), Waits()
    outcome, attempts = await retry_call(POLICY, attempt, "a", 1, wait=wait)
    assert (outcome, attempts) == ("ok", 3)
    assert attempt.calls == [("a", 1)] * 3  # the same arguments every time
    assert wait.seconds == [1.0, 2.0]


async def test_a_fatal_error_ends_the_loop_at_once() -> None:
    attempt, wait = Flaky(ProviderUnavailableError("502"), AuthenticationError("401")), Waits()
    outcome, attempts = await retry_call(POLICY, attempt, wait=wait)
    assert isinstance(outcome, AuthenticationError) and outcome.fatal
    assert attempts == 2 and wait.seconds == [1.0]


async def test_a_client_error_is_not_retried() -> None:
    attempt, wait = Flaky(InvalidRequestError("400")), Waits()
    outcome, attempts = await retry_call(POLICY, attempt, wait=wait)
    assert isinstance(outcome, InvalidRequestError) and attempts == 1 and wait.seconds == []


async def test_the_last_error_is_returned_when_attempts_run_out() -> None:
    attempt, wait = Flaky(*(ProviderUnavailableError(f"5xx {i}") for i in range(9))), Waits()
    outcome, attempts = await retry_call(POLICY, attempt, wait=wait)
    assert isinstance(outcome, ProviderUnavailableError) and str(outcome) == "5xx 3"
    assert attempts == POLICY.max_attempts and len(wait.seconds) == 3


async def test_isolated_failures_wait_the_base_delay_and_retry_after_wins() -> None:
    errors: list[ProviderError] = [ProviderUnavailableError("a"), ProviderUnavailableError("b")]
    errors.append(RateLimitError("told", retry_after=7.0))
    attempt, wait = Flaky(*errors), Waits()
    seen: list[ProviderError] = []

    def isolated(error: ProviderError) -> bool:
        seen.append(error)
        return True

    outcome, attempts = await retry_call(POLICY, attempt, wait=wait, isolated=isolated)
    assert (outcome, attempts) == ("ok", 4)
    assert wait.seconds == [1.0, 1.0, 7.0]  # no doubling; the provider's Retry-After honoured
    assert [str(e) for e in seen] == ["a", "b", "told"]


async def test_other_exceptions_propagate() -> None:
    async def broken() -> str:
        raise KeyError("not a provider error")

    with pytest.raises(KeyError):
        await retry_call(POLICY, broken)


@pytest.mark.parametrize(
    "policy",
    [
        RetryPolicy(),
        POLICY,
        RetryPolicy(base_delay=0.2, max_delay=0.1),
        RetryPolicy(max_retry_after=2.0),
    ],
)
@pytest.mark.parametrize("retry_after", [None, 0.0, 0.3, 5.0, 1e6])
def test_shortest_delay_is_the_least_delay_can_return(
    policy: RetryPolicy, retry_after: float | None
) -> None:
    shortest = policy.shortest_delay(retry_after)
    # delay's lowest draw (rng.random() == 0.0), over every attempt, isolated or not.
    floor = min(
        policy.delay(attempt, retry_after, _Zero(), isolated=isolated)
        for attempt in range(1, 8)
        for isolated in (False, True)
    )
    assert shortest == pytest.approx(floor)


class _Zero(random.Random):
    """A random source whose every draw is the lowest, 0.0."""

    def random(self) -> float:
        return 0.0
