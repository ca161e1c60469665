"""Reading what providers say about their rate limits: ``Retry-After`` and rate-limit headers.

Dialects read (each checked against the provider's documentation):

- ``Retry-After`` as delay-seconds or an HTTP-date (RFC 9110), and ``retry-after-ms``;
- OpenAI ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``: per-minute limits, resets as
  Go durations (``1s``, ``6m0s``, ``20ms``, ``1m30.5s``);
- Anthropic ``anthropic-ratelimit-{requests,input-tokens,output-tokens,tokens}-{limit,remaining,
  reset}``: per-minute limits, resets as RFC 3339 times; ``tokens`` is the most restrictive
  token limit in effect;
- OpenRouter ``X-RateLimit-{Limit,Remaining,Reset}``: a per-key limit whose interval is not sent
  (10 s, a minute or a day), the reset in epoch milliseconds.
"""

from __future__ import annotations

import datetime as _dt
import email.utils
import math
import re
import time
from collections.abc import Mapping

import attrs

__all__ = ["RateInfo", "parse_rate_headers", "parse_reset", "parse_retry_after"]


@attrs.frozen(slots=True, kw_only=True)
class RateInfo:
    """What a response's headers say about the provider's limits (None = not sent).

    Limits are per minute (OpenAI, Anthropic); resets are seconds from now. ``tokens_*`` is
    OpenAI's combined token limit, or Anthropic's most restrictive token limit
    (``combined_tokens`` tells which). ``key_*`` is OpenRouter's per-key limit, whose interval
    the headers do not say: it is used for pauses, never as a rate.
    """

    requests_limit: float | None = None
    requests_remaining: float | None = None
    requests_reset: float | None = None
    input_limit: float | None = None
    input_remaining: float | None = None
    input_reset: float | None = None
    output_limit: float | None = None
    output_remaining: float | None = None
    output_reset: float | None = None
    tokens_limit: float | None = None
    tokens_remaining: float | None = None
    tokens_reset: float | None = None
    key_limit: float | None = None
    key_remaining: float | None = None
    key_reset: float | None = None
    retry_after: float | None = None
    #: True when ``tokens_*`` is OpenAI's combined (input + output) limit
    combined_tokens: bool = False

    @property
    def empty(self) -> bool:
        """Whether no limit header was found."""
        return all(
            getattr(self, f.name) is None
            for f in attrs.fields(RateInfo)
            if f.name != "combined_tokens"
        )

    def exhausted(self) -> list[tuple[str, float]]:
        """``(dimension, seconds to reset)`` for every limit the headers say is used up."""
        out: list[tuple[str, float]] = []
        for name in ("requests", "input", "output", "tokens", "key"):
            remaining = getattr(self, f"{name}_remaining")
            reset = getattr(self, f"{name}_reset")
            if remaining is not None and remaining < 1 and reset:
                out.append((name, reset))
        return out


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_SCALE = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_reset(value: str, now: _dt.datetime | None = None) -> float | None:
    """Seconds until a reset given as ``6m0s``/``20ms``, seconds, epoch (s or ms) or RFC 3339."""
    value = value.strip()
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(number) or number < 0:
            return None
        if number > 1e11:  # epoch milliseconds (OpenRouter)
            return max(0.0, number / 1000.0 - time.time())
        if number > 1e9:  # epoch seconds
            return max(0.0, number - time.time())
        return number
    parts = _DURATION.findall(value)
    if parts and "".join(n + u for n, u in parts) == value:
        return sum(float(n) * _SCALE[u] for n, u in parts)
    try:
        moment = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.UTC)
    now = now or _dt.datetime.now(_dt.UTC)
    return max(0.0, (moment - now).total_seconds())


def _num(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """The wait a response asks for (``retry-after-ms`` or ``Retry-After``), in seconds.

    ``headers`` must answer lower-case names (httpx's headers do; so does the dict of
    lower-cased names the HTTP teachers collect).
    """
    ms = _num(headers.get("retry-after-ms"))
    if ms is not None:
        return ms / 1000.0
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _num(value)
    if seconds is not None:
        return seconds
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.UTC)
    return max(0.0, (moment - _dt.datetime.now(_dt.UTC)).total_seconds())


_GROUPS = {
    # field group: (Anthropic prefix, OpenAI name pattern)
    "requests": ("anthropic-ratelimit-requests", "x-ratelimit-{}-requests"),
    "input": ("anthropic-ratelimit-input-tokens", None),
    "output": ("anthropic-ratelimit-output-tokens", None),
    "tokens": ("anthropic-ratelimit-tokens", "x-ratelimit-{}-tokens"),
    "key": (None, "x-ratelimit-{}"),  # OpenRouter: no suffix
}


def parse_rate_headers(headers: Mapping[str, str]) -> RateInfo:
    """Read Anthropic's, OpenAI's and OpenRouter's rate-limit headers (lower-case names)."""
    values: dict[str, float | bool | None] = {}
    for group, (anthropic_prefix, openai_pattern) in _GROUPS.items():
        for part in ("limit", "remaining", "reset"):
            raw = None
            if anthropic_prefix is not None:
                raw = headers.get(f"{anthropic_prefix}-{part}")
            if raw is None and openai_pattern is not None:
                raw = headers.get(openai_pattern.format(part))
                if raw is not None and group == "tokens":
                    values["combined_tokens"] = True
            if raw is None:
                continue
            values[f"{group}_{part}"] = parse_reset(raw) if part == "reset" else _num(raw)
    values["retry_after"] = parse_retry_after(headers)
    return RateInfo(**values)  # type: ignore[arg-type]
