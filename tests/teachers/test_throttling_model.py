"""The limiter's model of a wrong configured limit, on a fake clock: the learned ceiling, the
cuts under it, the probe above it, and pauses that end at the rate rather than with a burst.
"""

from __future__ import annotations

import pytest

from tracedistill.clients._rateevidence import Pauses, RecentAnswers, SendLog
from tracedistill.clients._ratemodel import RateModel
from tracedistill.clients.ratelimit import Permit, RateLimiter, RateLimits, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _model_with_ceiling(clock: FakeClock, ceiling: float, refused: float) -> RateModel:
    """A model told 40/s whose configured limit was replaced by ``ceiling`` (per second)."""
    model = RateModel(RateLimits(requests_per_minute=2400), clock=clock)
    model.ceiling["requests"] = ceiling
    model._refused["requests"] = refused
    model.recompute("requests")
    return model


def _lone_429(model: RateModel, clock: FakeClock, sent: float) -> None:
    model.last_429 = clock.now
    model.learn(
        "requests",
        sent,
        clock.now,
        log=SendLog(60.0),
        pauses=Pauses(clock.now, 60.0),
        recent=RecentAnswers(),
    )


def test_bucket_resumes_at_its_rate_after_a_pause() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10.0, 5.0, clock=clock)  # full: 5 requests could go at once
    bucket.resume_at(clock.now + 1.0, 1.0)
    bucket.resume_at(clock.now + 1.0, 1.0)  # said twice, it holds the same
    clock.now += 1.0
    assert bucket.wait_time(1.0) == 0.0
    assert bucket.wait_time(2.0) == pytest.approx(0.1)  # one now, the next at the rate
    bucket.resume_at(clock.now - 5.0, 3.0)  # a time already past holds at most that level
    assert bucket.level == pytest.approx(1.0)


def test_a_pause_ends_at_the_rate_not_with_a_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimits(requests_per_minute=600), clock=clock)  # 10/s
    clock.now += 5.0  # idle: the request bucket holds half a second's worth
    bucket = limiter._model.buckets["requests"]
    assert bucket is not None and bucket.wait_time(4.0) == 0.0
    for _ in range(4):  # 429s and no answer: saturated, everyone waits the Retry-After
        limiter.on_throttled(1.0, permit=Permit(0, 0, clock.now))
    assert limiter._pauses.until == pytest.approx(clock.now + 1.0)
    clock.now += 1.0
    # the provider's window emptied during the pause: one request now, the next at the rate
    assert bucket.wait_time(1.0) == 0.0
    assert bucket.wait_time(2.0) > 0.09


def test_lone_429_under_a_ceiling_cuts_just_under_the_rate_that_drew_it() -> None:
    clock = FakeClock()
    model = _model_with_ceiling(clock, 10.0, 12.0)
    _lone_429(model, clock, clock.now)
    assert model.ceiling["requests"] == pytest.approx(9.8)
    assert model.allowed("requests") == pytest.approx(9.8)  # no deeper cut under it
    assert model.cuts == 1
    clock.now += 0.1
    _lone_429(model, clock, clock.now - 0.2)  # sent before the cut: teaches nothing
    assert model.ceiling["requests"] == pytest.approx(9.8) and model.cuts == 1
    _lone_429(model, clock, clock.now)  # sent after it, still refused: a little lower again
    assert model.ceiling["requests"] == pytest.approx(9.8 * 0.98)


def _quiet(model: RateModel, clock: FakeClock, seconds: float) -> None:
    for _ in range(round(seconds / 0.2)):
        clock.now += 0.2
        model.recover(clock.now)


def test_ceiling_climbs_back_under_the_refused_rate_then_probes_gently() -> None:
    clock = FakeClock()
    model = _model_with_ceiling(clock, 8.0, 10.0)
    model.last_429 = clock.now
    _quiet(model, clock, 2.8)
    assert model.ceiling["requests"] == pytest.approx(8.0)  # not before 3 quiet seconds
    _quiet(model, clock, 5.0)
    climbed = model.ceiling["requests"]
    assert climbed is not None and 8.6 < climbed < 9.0  # +2%/s towards 0.98 x 10
    _quiet(model, clock, 10.0)
    # at 0.98 x 10 after about 13.3 quiet seconds, then only +0.5%/s (quiet for 10 s by now)
    probed = model.ceiling["requests"]
    assert probed is not None and 9.8 < probed <= 9.8 * 1.005**5
    assert model.allowed("requests") == probed


def test_ceiling_just_under_a_refused_rate_waits_before_probing() -> None:
    clock = FakeClock()
    model = _model_with_ceiling(clock, 9.8, 10.0)
    model.last_429 = clock.now
    _quiet(model, clock, 9.8)
    assert model.ceiling["requests"] == pytest.approx(9.8)  # 10 quiet seconds first
    _quiet(model, clock, 10.0)
    probed = model.ceiling["requests"]
    assert probed is not None and 9.8 * 1.005**9 < probed <= 9.8 * 1.005**10.2
    _quiet(model, clock, 600.0)
    assert model.ceiling["requests"] is None  # probed back up to the configured 40/s
    assert model.allowed("requests") == pytest.approx(40.0)
