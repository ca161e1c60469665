"""The limiter's per-attempt fast paths keep the meaning of the general ones (issue 12, client
CPU): pauses hold requests, stale rate headers never reach a later 429, permits are the same
records, and lazily forgotten evidence counts as before."""

from __future__ import annotations

import time

import attrs
import pytest

from tracedistill.clients import ratelimit
from tracedistill.clients._rateevidence import RecentAnswers
from tracedistill.clients._ratelimits import new_permit
from tracedistill.clients.ratelimit import Permit, RateLimiter, RateLimits, parse_rate_headers
from tracedistill.teachers.cost import Budget


def test_new_permit_is_the_same_frozen_record() -> None:
    fast = new_permit(12, 64, 3.5, None)
    assert type(fast) is Permit and fast == Permit(12, 64, 3.5)
    assert new_permit(1, 2, 0.0, 7.5) == Permit(1, 2, 0.0, 7.5)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        fast.sent_at = 0.0  # type: ignore[misc]


@pytest.mark.anyio
async def test_unpaced_limiter_still_keeps_a_pause() -> None:
    # No limit known (no bucket): the fast path must still wait out a Retry-After pause (not
    # adaptive: every Retry-After pauses everyone, and nothing is learned).
    limiter = RateLimiter(RateLimits(adaptive=False))
    limiter.on_throttled(0.3, permit=await limiter.acquire())
    assert limiter.state().request_rate is None  # still unpaced
    started = time.monotonic()
    await limiter.acquire()
    assert time.monotonic() - started >= 0.25  # a lower bound: load only makes it longer


@pytest.mark.anyio
async def test_a_new_attempt_forgets_the_last_answers_rate_headers() -> None:
    limiter = RateLimiter(None)
    await limiter.acquire()
    limiter.observe(
        parse_rate_headers(
            {"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "0"}
        )
    )
    assert ratelimit._OBSERVED.get() is not None
    await limiter.acquire()
    assert ratelimit._OBSERVED.get() is None  # a 429 of this attempt reads its own headers
    await limiter.acquire()
    assert ratelimit._OBSERVED.get() is None


def test_answers_forget_lazily_but_count_the_same() -> None:
    recent = RecentAnswers()
    for i in range(3):
        recent.throttle(10.0 + 0.1 * i)
    recent.overload(10.3)
    assert recent.saturated(10.4)
    for i in range(40):  # answers inside the window forget nothing
        recent.answer(10.5 + 0.01 * i)
    recent.answer(13.0)  # the window moved past every 429 and overload
    assert not recent.saturated(13.0)
    assert recent.overload_share(13.0) == (0, 1)


def test_budget_reserve_uncapped_only_without_a_cap() -> None:
    budget = Budget(None)
    reservation = budget.reserve_uncapped()
    assert reservation.amount == 0.0 and not reservation.settled
    budget.settle(reservation, 0.5)
    assert budget.spent_usd == 0.5
    with pytest.raises(ValueError, match="cap"):
        Budget(1.0).reserve_uncapped()


@pytest.mark.anyio
async def test_slots_wait_in_line_and_a_cancelled_waiter_leaves_it() -> None:
    import anyio

    limiter = RateLimiter(None, max_concurrency=1)
    ran: list[str] = []
    scopes: dict[str, anyio.CancelScope] = {}

    async def attempt(name: str) -> None:
        with anyio.CancelScope() as scope:
            scopes[name] = scope
            async with limiter.slot():
                ran.append(name)

    holder = limiter.slot()
    await holder.__aenter__()
    async with anyio.create_task_group() as tg:
        for name in ("a", "b", "c", "d"):
            tg.start_soon(attempt, name)
            await anyio.sleep(0.01)  # they queue in this order
        scopes["b"].cancel()  # waiting: leaves the line
        await anyio.sleep(0.01)
        await holder.__aexit__(None, None, None)  # grants "a", then "c", then "d"
    assert ran == ["a", "c", "d"]
    assert limiter._slots.held == 0 and not limiter._slots._waiting
