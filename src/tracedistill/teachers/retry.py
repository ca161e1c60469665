"""Deprecated: moved to :mod:`tracedistill.clients.retry` (alias kept for one release)."""

import warnings

from tracedistill.clients.retry import RetryPolicy, error_for_status

__all__ = ["RetryPolicy", "error_for_status"]

warnings.warn(
    "tracedistill.teachers.retry moved to tracedistill.clients.retry",
    DeprecationWarning,
    stacklevel=2,
)
