"""Retries by error class: which provider errors are retried, and how long to wait between tries.

- 408, 429, 5xx, 529, connection errors and timeouts: retried with exponential backoff, jitter
  and a cap (or exactly the wait the provider asked for with ``Retry-After``), a bounded number
  of times, then recorded as a failed trace. A 429 says "not now", not "not this request": 429s
  have their own, larger budget and do not use up the attempts kept for real failures.
- 429 whose body says the account is out of quota (OpenAI's ``insufficient_quota`` and its
  billing codes), and Anthropic's 400 "credit balance is too low": fatal, like 402; waiting
  does not bring the credit back, and every other request would fail the same way.
- 400 and other client errors: never retried; recorded with the provider's message.
- 401, 402, 403: fatal; the whole run stops (see :mod:`tracedistill.teachers.engine`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import attrs

from tracedistill.errors import (
    AuthenticationError,
    ConfigurationError,
    InsufficientCreditsError,
    InvalidRequestError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
)

__all__ = ["QUOTA_CODES", "RetryPolicy", "error_body_code", "error_for_status", "retry_call"]

#: codes OpenAI sends with a 429 when the account, not the rate, is the limit: no wait helps
#: ("insufficient_quota", and the billing codes it documents beside it)
QUOTA_CODES = frozenset(
    {
        "insufficient_quota",
        "credit_balance_exhausted",
        "organization_spend_limit_exceeded",
        "project_spend_limit_exceeded",
        "organization_usage_limit_exceeded",
    }
)

log = logging.getLogger(__name__)

T = TypeVar("T")


def _positive(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, int | float) or value <= 0:
        raise ConfigurationError(f"RetryPolicy.{attribute.name} must be > 0, got {value!r}")


@attrs.frozen(slots=True, kw_only=True)
class RetryPolicy:
    """How retryable failures are retried.

    Args:
        max_attempts: attempts per request, the first included (1 = never retry); attempts
            refused with a 429 do not count here. A failed attempt is not billed, and an
            unattended run should not give a problem up to a flaky provider's bad luck: at
            the default of 10, a provider failing a fifth of all attempts at random loses
            about one problem in ten million (at 6, about one in ten thousand: an outside
            run with 25% injected faults lost one of 2,000 problems in 3 of 5 runs).
        max_throttled: attempts per request that may be refused with a 429 (rate limited)
            before the request is recorded as failed. A busy provider refuses for a while and
            then accepts, so an unattended run keeps asking (about ten minutes of back-off at
            the defaults when no ``Retry-After`` is sent) instead of giving the problem up.
        base_delay: the first back-off, in seconds; it doubles with each attempt.
        max_delay: the longest back-off between two attempts.
        max_retry_after: the longest ``Retry-After`` honoured (longer waits are capped).
        jitter: randomize each back-off between half and all of its value, so that requests
            that failed together do not come back together.
    """

    max_attempts: int = attrs.field(default=10, validator=_positive)
    max_throttled: int = attrs.field(default=20, validator=_positive)
    base_delay: float = attrs.field(default=1.0, validator=_positive)
    max_delay: float = attrs.field(default=60.0, validator=_positive)
    max_retry_after: float = attrs.field(default=300.0, validator=_positive)
    jitter: bool = True

    def delay(
        self,
        attempt: int,
        retry_after: float | None = None,
        rng: random.Random | None = None,
        *,
        isolated: bool = False,
    ) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        ``isolated`` says the failure is one request's bad luck while the provider answers
        most others (a random 5xx, a dropped connection): the wait stays at ``base_delay``
        instead of doubling, since doubling protects a provider that is failing broadly, not
        one that is not.
        """
        rand = rng.random() if rng is not None else random.random()
        if retry_after is not None and retry_after >= 0:
            # The provider said when: honour it, plus a little spread so waiters do not stampede.
            wait = min(retry_after, self.max_retry_after)
            return wait + (0.1 * min(wait, self.base_delay) * rand if self.jitter else 0.0)
        exponent = 0 if isolated else max(0, attempt - 1)
        backoff = min(self.max_delay, self.base_delay * 2.0**exponent)
        return backoff * (0.5 + 0.5 * rand) if self.jitter else backoff

    def shortest_delay(self, retry_after: float | None = None) -> float:
        """The least :meth:`delay` can return after any failed attempt, for ``retry_after``.

        Jitter and doubling only add to it, so a failure remembered for this long is never
        still standing when the next attempt of a retry loop starts.
        """
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, self.max_retry_after)
        backoff = min(self.max_delay, self.base_delay)
        return 0.5 * backoff if self.jitter else backoff

    def should_retry(
        self, error: ProviderError, attempt: int, *, throttled: int | None = None
    ) -> bool:
        """Whether to try again after ``error`` ended attempt number ``attempt``.

        ``throttled`` is how many of the ``attempt`` attempts were refused with a 429 (this
        one included); given, 429s count against :attr:`max_throttled` and the other failures
        against :attr:`max_attempts`. Left out, every attempt counts against
        :attr:`max_attempts`.
        """
        if not error.retryable or error.fatal:
            return False
        if throttled is None:
            return attempt < self.max_attempts
        if isinstance(error, RateLimitError):
            return throttled < self.max_throttled
        return attempt - throttled < self.max_attempts


def error_for_status(
    status: int,
    message: str,
    *,
    provider_message: str | None = None,
    retry_after: float | None = None,
    code: str | None = None,
) -> ProviderError:
    """Return the exception that an HTTP status (or a status in an error body) stands for.

    ``code`` is the error body's own code or type where it has one (OpenAI's ``error.code``,
    else ``error.type``): a 429 with a quota code is fatal, not a rate limit.
    """
    cls: type[ProviderError]
    if status in (401, 403):
        cls = AuthenticationError
        message += " (check the API key and its permissions; the run stops)"
    elif status == 402:
        cls = InsufficientCreditsError
        message += " (add credits to the provider account; the run stops)"
    elif status == 408:
        cls = ProviderTimeoutError
    elif status == 400 and _CREDIT_TOO_LOW in (provider_message or message).lower():
        # Anthropic answers an account without credit with a 400 invalid_request_error
        cls = InsufficientCreditsError
        message += " (add credits to the provider account; the run stops)"
    elif status == 429 and code in QUOTA_CODES:
        cls = InsufficientCreditsError
        message += " (the account is out of quota or over a spend limit; the run stops)"
    elif status == 429:
        cls = RateLimitError
    elif status >= 500 or status == 529:
        cls = ProviderUnavailableError
    else:
        cls = InvalidRequestError
    return cls(message, status=status, provider_message=provider_message, retry_after=retry_after)


_CREDIT_TOO_LOW = "credit balance is too low"


def error_body_code(body: Any) -> str | None:
    """The code of an error body (``{"error": {"code": ..., "type": ...}}``), if it has one.

    A quota code wins over a generic one, since OpenAI has sent quota errors with
    ``code: null`` and the reason in ``type``.
    """
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    found = [str(value) for value in (error.get("code"), error.get("type")) if value]
    return next((c for c in found if c in QUOTA_CODES), found[0] if found else None)


async def retry_call(
    policy: RetryPolicy,
    attempt: Callable[..., Awaitable[T]],
    *args: Any,
    wait: Callable[[float], Awaitable[Any]] | None = None,
    isolated: Callable[[ProviderError], bool] | None = None,
    label: str = "request",
) -> tuple[T | ProviderError, int]:
    """Await ``attempt(*args)`` until it returns, or fails with an error not worth retrying.

    The one retry loop of the package: the teachers (around their rate limiter) and the model
    clients both run their attempts through it. A :class:`ProviderError` is retried as
    ``policy`` says (:meth:`RetryPolicy.should_retry`, then :meth:`RetryPolicy.delay`); a fatal
    one (401/402/403) ends the loop at once. Any other exception propagates.

    Args:
        policy: how many attempts, and the waits between them.
        attempt: one attempt; raises a :class:`ProviderError` when it fails.
        *args: the arguments of every call of ``attempt``.
        wait: sleeps the given seconds between attempts (default ``anyio.sleep``; the engine
            passes one that wakes when the run stops).
        isolated: says whether a failure is one request's bad luck while the provider answers
            most others (the back-off then does not grow; see :meth:`RetryPolicy.delay`).
        label: what is attempted, for the debug log.

    Returns:
        What the last attempt returned, or the error that ended the loop (fatal, not
        retryable, or the last allowed attempt's), with the number of attempts made.
    """
    count = throttled = 0
    while True:
        count += 1
        try:
            return await attempt(*args), count
        except ProviderError as exc:
            error = exc
        throttled += isinstance(error, RateLimitError)
        if not policy.should_retry(error, count, throttled=throttled):
            log.debug("%s failed after %d attempt(s): %s", label, count, error)
            return error, count
        apart = isolated(error) if isolated is not None else False
        delay = policy.delay(count, error.retry_after, isolated=apart)
        log.debug("attempt %d of %s failed (%s); retrying in %.2fs", count, label, error, delay)
        await (wait or anyio.sleep)(delay)
