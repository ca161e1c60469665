"""Deprecated: moved to :mod:`tracedistill.clients.ratelimit` (alias kept for one release)."""

import warnings

from tracedistill.clients.ratelimit import (
    LimiterClosed,
    LimiterState,
    Permit,
    RateInfo,
    RateLimiter,
    RateLimits,
    TokenBucket,
    parse_rate_headers,
    parse_reset,
    parse_retry_after,
)

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

warnings.warn(
    "tracedistill.teachers.ratelimit moved to tracedistill.clients.ratelimit",
    DeprecationWarning,
    stacklevel=2,
)
