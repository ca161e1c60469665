"""A provider simulator: the rate limits, headers and failures real LLM APIs show.

:class:`OpenAIProvider` (OpenAI / OpenRouter layouts) and :class:`AnthropicProvider` extend the
loopback servers of :mod:`tests.servers.base` with what a client meets in production:

- limits on requests, input tokens and output tokens, each enforced as a **token bucket**
  (Anthropic: continuously replenished up to the limit), a **fixed window** (the count resets at
  window boundaries) or a **sliding window** (at most N in any window, OpenRouter's "200 requests
  per 10 s"). As Anthropic documents, a request is admitted only if every limit has room for
  it: its input tokens (the prompt, system included, as its usage reports them; the simulator
  has no prompt cache) are counted at admission, and its output tokens are **reserved against
  ``max_tokens``** at admission, the unused part refunded when the answer is sent (a request that
  fails after admission refunds its whole output reservation). A ``remaining`` header therefore
  shows the reservations of the requests in flight. OpenAI's combined tokens per minute
  (``Limit("tokens", ...)``) is charged as OpenAI documents it: at admission, the prompt's
  tokens plus the whole ``max_tokens`` ("your rate limit is calculated as the maximum of
  max_tokens and the estimated number of tokens based on the character count of your
  request"; OpenAI's own parallel-request cookbook client counts prompt + ``max_tokens``;
  ``tokens_charge="max"`` charges the larger of the two, the guide's literal reading), and
  nothing is given back when the answer is shorter (``tokens_refund=True``: the unused part
  is released with the answer, as Azure OpenAI documents);
- 429 answers with ``Retry-After`` in seconds, ``retry-after-ms``, an HTTP-date, or no hint, and
  the provider's own error body;
- rate-limit headers in three dialects, on every answer or on none (OpenAI's and Anthropic's
  limits are per minute: a limit on a shorter window, used to shorten tests, is stated as its
  per-minute equivalent; one on a longer window, a daily budget, as its own count):
  OpenAI ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` with Go-style durations
  (``1s``, ``6m0s``, ``20ms``); Anthropic ``anthropic-ratelimit-{requests,input-tokens,
  output-tokens,tokens}-{limit,remaining,reset}`` with RFC 3339 resets; OpenRouter
  ``X-RateLimit-{Limit,Remaining,Reset}`` with the reset in epoch milliseconds (also copied into
  the 429 body's ``error.metadata.headers``, as OpenRouter does; ``header_style=
  "openrouter-upstream"`` sends them only there, as for a limit of the provider behind
  OpenRouter);
- 429s not tied to this client's load (shared upstream capacity), 529/503 overloads at random
  or in bursts, stalls (a request accepted and never answered), bodies cut off mid-way, plus the
  base server's faults (5xx, resets, malformed JSON, 200-with-error bodies, truncations).

Each admitted or refused request is counted in ``stats`` (see :class:`tests.servers.base.Stats`);
the tokens of every answer sent are in ``token_log``.
"""

from __future__ import annotations

import collections
import contextvars
import datetime as dt
import email.utils
import math
import time
from dataclasses import dataclass
from typing import Any

from tests.servers.anthropic_server import AnthropicServer
from tests.servers.base import Fault
from tests.servers.openai_server import OpenAIServer

__all__ = ["AnthropicProvider", "Limit", "OpenAIProvider", "go_duration"]


@dataclass(frozen=True)
class Limit:
    """One provider limit: ``amount`` of ``dimension`` per ``window`` seconds, by ``kind``.

    dimension: ``requests``, ``input`` (prompt tokens), ``output`` (completion tokens),
    ``tokens`` (OpenAI's combined tokens per minute: the prompt's tokens plus the whole
    ``max_tokens``, charged at admission).
    kind: ``token_bucket``, ``fixed`` or ``sliding``.
    """

    dimension: str
    amount: float
    window: float = 60.0
    kind: str = "token_bucket"


class _Meter:
    """The state of one :class:`Limit`."""

    def __init__(self, limit: Limit, start: float) -> None:
        if limit.kind not in ("token_bucket", "fixed", "sliding"):
            raise ValueError(f"unknown limit kind {limit.kind!r}")
        self.limit = limit
        self.start = start
        self.level = limit.amount  # token bucket
        self.last = start
        self.window_index = 0  # fixed window
        self.used = 0.0  # fixed and sliding windows
        self.events: collections.deque[list[float]] = collections.deque()  # sliding: [at, size]

    def _advance(self, now: float) -> None:
        lim = self.limit
        if lim.kind == "token_bucket":
            rate = lim.amount / lim.window
            self.level = min(lim.amount, self.level + (now - self.last) * rate)
            self.last = now
        elif lim.kind == "fixed":
            index = int((now - self.start) // lim.window)
            if index != self.window_index:
                self.window_index, self.used = index, 0.0
        else:
            while self.events and self.events[0][0] <= now - lim.window:
                self.used -= self.events.popleft()[1]

    def remaining(self, now: float) -> float:
        self._advance(now)
        if self.limit.kind == "token_bucket":
            return self.level
        return self.limit.amount - self.used

    def wait(self, now: float, amount: float) -> float:
        """Seconds until ``amount`` fits (0: now). Amounts above the limit wait for a full one."""
        lim = self.limit
        need = min(amount, lim.amount)
        left = self.remaining(now)
        if left >= need and left > 0:
            return 0.0
        if lim.kind == "token_bucket":
            return (need - left) / (lim.amount / lim.window)
        if lim.kind == "fixed":
            return self.start + (self.window_index + 1) * lim.window - now
        freed = 0.0
        for at, size in self.events:
            freed += size
            if left + freed >= need:
                return at + lim.window - now
        return lim.window

    def reset(self, now: float) -> float:
        """Seconds until the limit is fully replenished."""
        lim = self.limit
        self._advance(now)
        if lim.kind == "token_bucket":
            return (lim.amount - self.level) / (lim.amount / lim.window)
        if lim.kind == "fixed":
            return self.start + (self.window_index + 1) * lim.window - now
        return self.events[-1][0] + lim.window - now if self.events else 0.0

    def take(self, now: float, amount: float) -> object:
        """Charge ``amount``; return a ticket for :meth:`refund`."""
        self._advance(now)
        if amount <= 0:
            return None
        if self.limit.kind == "token_bucket":
            self.level -= amount
            return None
        self.used += amount
        if self.limit.kind == "fixed":
            return self.window_index
        event = [now, amount]
        self.events.append(event)
        return event

    def refund(self, now: float, ticket: object, amount: float) -> None:
        """Give back ``amount`` of a charge (a reservation not used). A charge whose window
        has already passed is gone: nothing comes back."""
        self._advance(now)
        if amount <= 0:
            return
        lim = self.limit
        if lim.kind == "token_bucket":
            self.level = min(lim.amount, self.level + amount)
        elif lim.kind == "fixed":
            if ticket == self.window_index:
                self.used = max(0.0, self.used - amount)
        elif isinstance(ticket, list) and ticket[0] > now - lim.window:  # still in the window
            amount = min(amount, ticket[1])
            ticket[1] -= amount
            self.used -= amount


def go_duration(seconds: float) -> str:
    """Format a duration as OpenAI's headers do (Go's ``time.Duration``): ``6m0s``, ``20ms``."""
    if seconds < 1.0:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60.0)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


def _per_minute(limit: Limit) -> str:
    """A limit as OpenAI and Anthropic state it: per minute (a shorter window, used to shorten
    tests, is scaled). A longer window is stated as its own count, as hosts that send a daily
    request budget in ``x-ratelimit-limit-requests`` do (Groq's requests per day)."""
    if limit.window > 60.0:
        return f"{limit.amount:g}"
    return f"{limit.amount * 60.0 / limit.window:g}"


def _rfc3339(seconds_from_now: float) -> str:
    moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=max(0.0, seconds_from_now))
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


#: the output-token reservations (meter, ticket, tokens) of the request being served
_PENDING: contextvars.ContextVar[list[tuple[_Meter, object, float]] | None] = (
    contextvars.ContextVar("provider_pending", default=None)
)


class _ProviderMixin:
    """Limits, rate headers and provider faults on top of a flavour's server."""

    header_style = "openai"

    def __init__(
        self,
        *,
        limits: tuple[Limit, ...] = (),
        header_style: str | None = "default",
        retry_after: str | None = "s",
        tokens_refund: bool = False,
        tokens_charge: str = "sum",
        random_429: float = 0.0,
        random_429_retry_after: float | None = 1.0,
        overload_rate: float = 0.0,
        overload_status: int = 529,
        overload_bursts: tuple[tuple[float, float], ...] = (),
        stall_rate: float = 0.0,
        stall_s: float = 0.0,
        drop_rate: float = 0.0,
        window_phase: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(retry_after=retry_after, **kwargs)  # type: ignore[call-arg]
        self.limits = limits
        #: how far (seconds) into a fixed window the first request arrives: a provider's fixed
        #: windows follow its clock (the minute), not the client's start, so the first is short
        self.window_phase = window_phase
        #: whether a combined ``tokens`` limit gives back the unused part of ``max_tokens``
        #: when the answer is sent (Azure OpenAI releases a finished request's reservation;
        #: OpenAI documents only the charge at admission, so by default nothing comes back)
        self.tokens_refund = tokens_refund
        #: what admitting a request charges a combined ``tokens`` limit: ``sum`` (the prompt
        #: plus max_tokens, as OpenAI's cookbook client counts it) or ``max`` (the larger of
        #: the two, the literal reading of OpenAI's guide)
        if tokens_charge not in ("sum", "max"):
            raise ValueError(f"tokens_charge must be 'sum' or 'max', got {tokens_charge!r}")
        self.tokens_charge = tokens_charge
        if header_style != "default":
            self.header_style = header_style  # type: ignore[assignment]
        self.random_429 = random_429
        self.random_429_retry_after = random_429_retry_after
        self.overload_rate = overload_rate
        self.overload_status = overload_status
        self.overload_bursts = overload_bursts
        self.stall_rate = stall_rate
        self.stall_s = stall_s
        self.drop_rate = drop_rate
        self.t0: float | None = None
        self._meters: list[_Meter] = []
        #: (time, input tokens, output tokens) of every answer sent, as its usage reports them
        self.token_log: list[tuple[float, float, float]] = []

    # --- admission -------------------------------------------------------------------------

    def _amounts(self, request: dict[str, Any], prompt: str) -> dict[str, float]:
        """What admitting ``request`` charges: one request, its prompt's tokens (as its usage
        will report them), and its whole ``max_tokens`` reserved (the flavour's default when
        the request sets none, as the answer's length uses)."""
        cap = request.get("max_tokens") or request.get("max_completion_tokens") or 64
        prompt_tokens = float(max(1, len(prompt) // 4))
        return {
            "requests": 1.0,
            "input": prompt_tokens,
            "output": float(int(cap)),
            "tokens": (
                prompt_tokens + float(int(cap))
                if self.tokens_charge == "sum"
                else max(prompt_tokens, float(int(cap)))
            ),
        }

    def admit(
        self, now: float, request: dict[str, Any], prompt: str
    ) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        if self.t0 is None:
            self.t0 = now
            self._meters = [
                _Meter(limit, now - (self.window_phase if limit.kind == "fixed" else 0.0))
                for limit in self.limits
            ]
        amounts = self._amounts(request, prompt)
        waits = [m.wait(now, amounts[m.limit.dimension]) for m in self._meters]
        if any(w > 0 for w in waits):
            return self._throttle(now, max(waits), "rate_limit_exceeded")
        rng = self.rng  # type: ignore[attr-defined]
        if self.random_429 and rng.random() < self.random_429:
            # Shared upstream capacity: refused whatever this client's own usage is.
            return self._throttle(now, self.random_429_retry_after, "upstream_rate_limited")
        elapsed = now - self.t0
        in_burst = any(start <= elapsed < start + length for start, length in self.overload_bursts)
        if in_burst or (self.overload_rate and rng.random() < self.overload_rate):
            status = self.overload_status
            return status, self.error_body(status, "Overloaded"), {}  # type: ignore[attr-defined]
        pending = _PENDING.get()
        for meter in self._meters:
            dimension = meter.limit.dimension
            ticket = meter.take(now, amounts[dimension])
            refunds = dimension == "output" or (dimension == "tokens" and self.tokens_refund)
            if refunds and pending is not None:  # settled with the answer: max_tokens' part
                pending.append((meter, ticket, amounts["output"]))
        return None

    async def _serve(self, *args: Any) -> bool:
        # The output reservations of this request (admit) are settled when its answer is sent
        # (answer_headers); whatever is left when it ends unanswered is refunded whole.
        pending: list[tuple[_Meter, object, float]] = []
        token = _PENDING.set(pending)
        try:
            served: bool = await super()._serve(*args)  # type: ignore[misc]
            return served
        finally:
            _PENDING.reset(token)
            now = time.monotonic()
            for meter, ticket, reserved in pending:
                meter.refund(now, ticket, reserved)

    def _throttle(
        self, now: float, wait: float | None, reason: str
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        headers: dict[str, str] = {}
        if wait is not None:
            if self.retry_after == "s":  # type: ignore[attr-defined]
                headers["retry-after"] = str(max(1, math.ceil(wait)))
            elif self.retry_after == "ms":  # type: ignore[attr-defined]
                headers["retry-after-ms"] = f"{wait * 1000.0:.0f}"
            elif self.retry_after == "date":  # type: ignore[attr-defined]
                headers["retry-after"] = email.utils.formatdate(
                    time.time() + math.ceil(wait), usegmt=True
                )
        headers.update(self.rate_headers_now(now))
        body = self.error_body(429, f"Rate limit exceeded ({reason})")  # type: ignore[attr-defined]
        if self.header_style in ("openrouter", "openrouter-upstream"):
            # OpenRouter passes the limiting provider's headers on inside the error body
            # ({"error": {"code": 429, "metadata": {"headers": {"X-RateLimit-Limit": "50",
            # ...}}}}); for an upstream limit they are not HTTP headers of the response at all.
            body["error"]["code"] = 429
            body["error"].setdefault("metadata", {})["headers"] = self._openrouter_headers(now)
        return 429, body, headers

    def _next_fault(self, prompt: str) -> Fault | None:
        fault: Fault | None = super()._next_fault(prompt)  # type: ignore[misc]
        if fault is None and (self.stall_rate or self.drop_rate):
            draw = self.rng.random()  # type: ignore[attr-defined]
            if draw < self.stall_rate:
                return Fault.hang(self.stall_s)
            if draw < self.stall_rate + self.drop_rate:
                return Fault.cut()
        return fault

    # --- answers and headers ---------------------------------------------------------------

    def answer_headers(self, request: dict[str, Any], body: dict[str, Any]) -> dict[str, str]:
        now = time.monotonic()
        usage = body.get("usage") or {}
        output = usage.get("completion_tokens", usage.get("output_tokens", 0))
        prompt = usage.get("prompt_tokens", usage.get("input_tokens", 0))
        self.token_log.append((now, float(prompt), float(output)))
        pending = _PENDING.get()
        while pending:  # refund what the answer did not use of its max_tokens reservation
            meter, ticket, reserved = pending.pop()
            used = min(float(output), reserved)
            meter.refund(now, ticket, reserved - used)
            if float(output) > reserved:
                meter.take(now, float(output) - reserved)
        return self.rate_headers_now(now)

    def rate_headers_now(self, now: float) -> dict[str, str]:
        """The rate-limit headers of this server's dialect, as they stand at ``now``."""
        style = self.header_style
        if not style or not self._meters:
            return {}
        by_dim = {m.limit.dimension: m for m in self._meters}
        headers: dict[str, str] = {}
        if style == "openai":
            # x-ratelimit-*-tokens: the combined limit where there is one, else the prompt's
            combined = "tokens" if "tokens" in by_dim else "input"
            names = {"requests": "requests", combined: "tokens"}
            for dim, name in names.items():
                meter = by_dim.get(dim)
                if meter is None:
                    continue
                headers[f"x-ratelimit-limit-{name}"] = _per_minute(meter.limit)
                headers[f"x-ratelimit-remaining-{name}"] = str(max(0, int(meter.remaining(now))))
                headers[f"x-ratelimit-reset-{name}"] = go_duration(meter.reset(now))
        elif style == "anthropic":
            names = {"requests": "requests", "input": "input-tokens", "output": "output-tokens"}
            for dim, name in names.items():
                meter = by_dim.get(dim)
                if meter is None:
                    continue
                prefix = f"anthropic-ratelimit-{name}"
                headers[f"{prefix}-limit"] = _per_minute(meter.limit)
                headers[f"{prefix}-remaining"] = str(max(0, int(meter.remaining(now))))
                headers[f"{prefix}-reset"] = _rfc3339(meter.reset(now))
            tokens = [by_dim[d] for d in ("input", "output") if d in by_dim]
            if tokens:  # the most restrictive token limit in effect
                meter = min(tokens, key=lambda m: m.remaining(now) / m.limit.amount)
                headers["anthropic-ratelimit-tokens-limit"] = _per_minute(meter.limit)
                headers["anthropic-ratelimit-tokens-remaining"] = str(
                    max(0, int(meter.remaining(now)))
                )
                headers["anthropic-ratelimit-tokens-reset"] = _rfc3339(meter.reset(now))
        elif style == "openrouter":
            headers.update(self._openrouter_headers(now))
        return headers

    def _openrouter_headers(self, now: float) -> dict[str, str]:
        """OpenRouter's ``X-RateLimit-*`` (reset in epoch milliseconds) for the request limit."""
        meter = next((m for m in self._meters if m.limit.dimension == "requests"), None)
        if meter is None:
            return {}
        reset_at = time.time() + meter.reset(now)
        return {
            "X-RateLimit-Limit": f"{meter.limit.amount:g}",
            "X-RateLimit-Remaining": str(max(0, int(meter.remaining(now)))),
            "X-RateLimit-Reset": str(int(reset_at * 1000)),
        }


class OpenAIProvider(_ProviderMixin, OpenAIServer):
    """An OpenAI-compatible provider (``header_style`` ``openai``, ``openrouter`` or
    ``openrouter-upstream``)."""

    header_style = "openai"

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        if self.header_style == "openai" and status == 429:
            # OpenAI's layout: a string code and a type naming the limit.
            return {
                "error": {
                    "message": message,
                    "type": "requests",
                    "param": None,
                    "code": "rate_limit_exceeded",
                }
            }
        return super().error_body(status, message)


class AnthropicProvider(_ProviderMixin, AnthropicServer):
    """Anthropic's Messages API with its limits, headers, 429s and 529 overloads."""

    header_style = "anthropic"
