"""Header-announced limits: a per-minute rate only when the reset shows a minute.

Header sets as providers document and send them: OpenAI (``x-ratelimit-*`` with Go durations),
a Groq-like host (requests per day and tokens per minute under the same names), Anthropic
(``anthropic-ratelimit-*`` with RFC 3339 resets).
"""

from __future__ import annotations

import datetime as dt

import pytest

from tracedistill.clients.ratelimit import RateLimiter, RateLimits, parse_rate_headers


def _adopted(*header_sets: dict[str, str], limits: RateLimits | None = None) -> RateLimiter:
    limiter = RateLimiter(limits)
    for headers in header_sets:
        limiter.observe(parse_rate_headers(headers))
    return limiter


def _at(seconds: float) -> str:
    moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_openai_per_minute_limits_are_adopted() -> None:
    limiter = _adopted(
        {
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "499",
            "x-ratelimit-reset-requests": "120ms",
            "x-ratelimit-limit-tokens": "30000",
            "x-ratelimit-remaining-tokens": "29000",
            "x-ratelimit-reset-tokens": "2s",
        }
    )
    state = limiter.state()
    assert state.header_rpm == pytest.approx(500)
    assert state.request_rate == pytest.approx(500)
    assert state.tokens_rate == pytest.approx(30_000)


def test_openai_reset_of_minutes_is_not_a_per_minute_rate() -> None:
    # "6m0s" (Go duration, as OpenAI writes it): the count refills over six minutes
    limiter = _adopted(
        {
            "x-ratelimit-limit-requests": "60",
            "x-ratelimit-remaining-requests": "59",
            "x-ratelimit-reset-requests": "1s",
            "x-ratelimit-limit-tokens": "150000",
            "x-ratelimit-remaining-tokens": "149984",
            "x-ratelimit-reset-tokens": "6m0s",
        }
    )
    state = limiter.state()
    assert state.request_rate == pytest.approx(60)
    assert state.tokens_rate is None  # a budget: not paced
    limit, reset = limiter.budgets["tokens"]
    assert limit == 150_000 and reset == pytest.approx(360.0)


def test_groq_like_requests_per_day_and_tokens_per_minute() -> None:
    # the same header names carry requests per day (reset minutes away) and tokens per minute
    limiter = _adopted(
        {
            "x-ratelimit-limit-requests": "14400",
            "x-ratelimit-remaining-requests": "14370",
            "x-ratelimit-reset-requests": "2m59.56s",
            "x-ratelimit-limit-tokens": "18000",
            "x-ratelimit-remaining-tokens": "17997",
            "x-ratelimit-reset-tokens": "7.66s",
        }
    )
    state = limiter.state()
    assert state.header_rpm is None and state.request_rate is None  # not 14,400/min
    assert state.tokens_rate == pytest.approx(18_000)
    assert limiter.budgets["requests"][0] == 14_400


def test_a_limit_once_seen_as_a_budget_stays_one() -> None:
    # a daily count lightly used refills in seconds: the first answer looks per-minute
    first = {
        "x-ratelimit-limit-requests": "14400",
        "x-ratelimit-remaining-requests": "14399",
        "x-ratelimit-reset-requests": "6s",
    }
    later = {**first, "x-ratelimit-remaining-requests": "14350", "x-ratelimit-reset-requests": "5m"}
    limiter = _adopted(first)
    assert limiter.state().header_rpm == pytest.approx(14_400)
    limiter = _adopted(first, later, first)
    state = limiter.state()
    assert state.header_rpm is None and state.request_rate is None


def test_anthropic_rfc3339_resets() -> None:
    limiter = _adopted(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-requests-reset": _at(1.2),
            "anthropic-ratelimit-input-tokens-limit": "30000",
            "anthropic-ratelimit-input-tokens-remaining": "29000",
            # a few seconds of clock skew past a minute still reads as per minute
            "anthropic-ratelimit-input-tokens-reset": _at(62.0),
            "anthropic-ratelimit-output-tokens-limit": "8000",
            "anthropic-ratelimit-output-tokens-remaining": "8000",
            "anthropic-ratelimit-output-tokens-reset": _at(0.0),
            "anthropic-ratelimit-tokens-limit": "8000",
            "anthropic-ratelimit-tokens-remaining": "8000",
            "anthropic-ratelimit-tokens-reset": _at(0.0),
        }
    )
    state = limiter.state()
    assert state.request_rate == pytest.approx(50)
    assert state.input_tokens_rate == pytest.approx(30_000)
    assert state.output_tokens_rate == pytest.approx(8_000)
    assert state.tokens_rate is None  # Anthropic's "tokens" is the tightest of the two above
    hourly = _adopted(
        {
            "anthropic-ratelimit-requests-limit": "1000",
            "anthropic-ratelimit-requests-remaining": "400",
            "anthropic-ratelimit-requests-reset": _at(1800.0),
        }
    )
    assert hourly.state().request_rate is None


def test_a_limit_without_reset_is_not_taken_per_minute() -> None:
    limiter = _adopted(
        {"x-ratelimit-limit-requests": "1000", "x-ratelimit-remaining-requests": "10"}
    )
    assert limiter.state().request_rate is None


def test_a_configured_limit_is_not_replaced_by_headers() -> None:
    limiter = _adopted(
        {
            "x-ratelimit-limit-requests": "14400",
            "x-ratelimit-remaining-requests": "14000",
            "x-ratelimit-reset-requests": "40m",
        },
        limits=RateLimits(requests_per_minute=300),
    )
    assert limiter.state().request_rate == pytest.approx(300)
