"""What one generation run did: :class:`GenerationSummary`, in text, HTML and fields."""

from __future__ import annotations

import attrs

from tracedistill._html import fields_html
from tracedistill.clients.ratelimit import LimiterState

__all__ = ["GenerationSummary", "StopReason"]


class StopReason:
    """Why a run stopped before its pool was done (values of ``GenerationSummary.stopped``)."""

    BUDGET = "budget"
    FATAL = "fatal"


@attrs.frozen(slots=True, kw_only=True)
class GenerationSummary:
    """What one :func:`generate` call did.

    Attributes:
        problems: problems read from the pool.
        requested: requests started this run (each may take several attempts).
        skipped: samples already answered in the store (resume) or duplicated in the pool.
        done: responses stored this run (truncated ones included).
        truncated: responses stored this run that stopped at ``max_tokens``.
        failed: requests that failed after their retries (stored as failed traces).
        resampled: requests sent to replace a truncated response (``resample_truncated``).
        attempts: HTTP attempts made, retries included.
        throttled: 429 answers seen.
        spend_usd: what this run spent.
        total_spend_usd: what the store records as spent, every run included.
        stopped: None when the pool was done, else ``"budget"`` or ``"fatal"``.
        error: the message of the error that stopped the run, if any.
        overloaded: server-side failures seen (not rate limiting): 5xx and 529 answers, lost
            connections, timeouts, unreadable bodies and HTTP 200 answers whose body is an error.
        cuts: times the limiter lowered the allowed request rate.
        paused_s: seconds every request was held by a pause (Retry-After, a used-up limit).
        limiter: the rate limiter's state at the end of the run (allowed rates, concurrency,
            stalls), or None where no limiter ran (batch APIs, replays).
    """

    teacher: str
    model: str
    problems: int
    requested: int
    skipped: int
    done: int
    truncated: int
    failed: int
    resampled: int
    attempts: int
    throttled: int
    input_tokens: int
    output_tokens: int
    spend_usd: float
    total_spend_usd: float
    elapsed_s: float
    stopped: str | None = None
    error: str | None = None
    overloaded: int = 0
    cuts: int = 0
    paused_s: float = 0.0
    limiter: LimiterState | None = None

    @property
    def requests_per_minute(self) -> float:
        """Stored traces (responses and failures) per minute of wall time."""
        return (self.done + self.failed) * 60.0 / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def tokens_per_minute(self) -> float:
        """Prompt plus completion tokens per minute of wall time."""
        tokens = self.input_tokens + self.output_tokens
        return tokens * 60.0 / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def __str__(self) -> str:
        lines = [
            f"{self.teacher} ({self.model}): {self.done} answered ({self.truncated} truncated), "
            f"{self.failed} failed, {self.skipped} already stored, from {self.problems} problems",
            f"  {self.attempts} attempts, {self.throttled} throttled, "
            f"{self.requests_per_minute:,.1f} req/min, {self.tokens_per_minute:,.0f} tok/min, "
            f"{self.elapsed_s:,.1f}s",
            f"  spend ${self.spend_usd:,.4f} this run, ${self.total_spend_usd:,.4f} in the store",
        ]
        if self.limiter is not None:
            lines.insert(2, f"  limiter: {self.limiter.describe()}")
        if self.stopped:
            lines.append(f"  stopped early ({self.stopped}): {self.error}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return fields_html(
            f"Generation: {self.teacher} ({self.model})",
            {
                "answered": f"{self.done:,} ({self.truncated:,} cut at max_tokens)",
                "failed": self.failed,
                "already stored": self.skipped,
                "problems": self.problems,
                "attempts (throttled)": f"{self.attempts:,} ({self.throttled:,})",
                "throughput": f"{self.requests_per_minute:,.1f} req/min, "
                f"{self.tokens_per_minute:,.0f} tok/min",
                "time": f"{self.elapsed_s:,.1f} s",
                "spend": f"${self.spend_usd:,.4f} (store: ${self.total_spend_usd:,.4f})",
                **_limiter_fields(self.limiter),
                "stopped early": None if not self.stopped else f"{self.stopped}: {self.error}",
            },
        )


def _limiter_fields(state: LimiterState | None) -> dict[str, object]:
    """The rows of the limiter's figures in a summary's HTML (none without a limiter)."""
    if state is None:
        return {}

    def rate(value: float | None) -> str:
        return "unlimited" if value is None else f"{value:,.0f}/min"

    lowest = "" if state.request_rate_min is None else f" (lowest {rate(state.request_rate_min)})"
    limit = state.describe_limit()
    return {
        "allowed rate": f"{rate(state.request_rate)}{lowest}",
        **({} if limit is None else {"request limit": limit}),
        "concurrency": f"{state.concurrency}/{state.max_concurrency} (lowest "
        f"{state.concurrency_min}, mean in flight {state.inflight_mean:.1f})",
        "429s, overloads": f"{state.throttled:,}, {state.overloaded:,}",
        "rate cuts": state.cuts,
        "paused": f"{state.paused_s:,.1f} s",
        "stalls": state.stalls,
    }
