"""Talking to models: HTTP transport, retries by error class, rate limiting, streaming events.

The low floor under :mod:`tracedistill.teachers` and :mod:`tracedistill.evaluation`: what both
need to send messages to a model and read its answer lives here once.
"""

from tracedistill.clients.ratelimit import RateInfo, RateLimiter, RateLimits
from tracedistill.clients.retry import RetryPolicy

__all__ = ["RateInfo", "RateLimiter", "RateLimits", "RetryPolicy"]
