r"""Honest statistics for benchmark accuracies: intervals and paired comparisons.

On 500 problems an accuracy near 85% has a standard error of about 1.6 points, so a bare
percentage cannot tell two checkpoints apart. This module gives:

- :func:`wilson_interval`: the Wilson score interval of one accuracy (good coverage even near
  0% and 100%, where the normal approximation fails);
- :func:`mcnemar_exact`: the exact (binomial) McNemar test of two models graded on the same
  problems, which looks only at the problems where they disagree;
- :func:`paired_difference`: the difference of two accuracies on the same problems, with
  Newcombe's hybrid score interval for paired proportions (his method 10), which uses the
  correlation between the two models' outcomes and is therefore much narrower than an unpaired
  interval when the models agree on most problems.

Everything is computed exactly from counts with the standard library (no scipy needed at run
time); the tests check each function against scipy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import attrs

from tracedistill.errors import EvaluationError

__all__ = [
    "Interval",
    "PairedComparison",
    "PairedCounts",
    "mcnemar_exact",
    "paired_counts",
    "paired_difference",
    "wilson_interval",
    "z_value",
]


def z_value(confidence: float) -> float:
    """The two-sided standard normal quantile of a confidence level (1.96 for 0.95)."""
    if not 0.0 < confidence < 1.0:
        raise EvaluationError(f"confidence must be in (0, 1), got {confidence!r}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


@attrs.frozen(slots=True)
class Interval:
    """A confidence interval ``[low, high]`` at level ``confidence`` (fractions, not percent)."""

    low: float
    high: float
    confidence: float = 0.95

    @property
    def width(self) -> float:
        """``high - low``."""
        return self.high - self.low

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in the interval (ends included)."""
        return self.low <= value <= self.high

    def percent(self, digits: int = 1) -> str:
        """The interval in percent, e.g. ``[83.1, 89.0]``."""
        return f"[{100 * self.low:.{digits}f}, {100 * self.high:.{digits}f}]"

    def to_dict(self) -> dict[str, float]:
        """Return a JSON-compatible dict."""
        return {"low": self.low, "high": self.high, "confidence": self.confidence}


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """The Wilson score interval of a proportion ``successes / n``.

    ``n == 0`` gives the uninformative interval ``[0, 1]``.
    """
    if n < 0 or successes < 0 or successes > n:
        raise EvaluationError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return Interval(0.0, 1.0, confidence)
    z = z_value(confidence)
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # Clamp rounding noise; at p = 0 or 1 one end is exactly 0 or 1.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return Interval(low, high, confidence)


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """The two-sided p-value of the exact McNemar test.

    ``only_first`` and ``only_second`` count the problems that exactly one of the two models
    solved. Under the null hypothesis (equal accuracy) each discordant problem is a fair coin;
    the p-value is twice the smaller binomial tail, capped at 1 (1.0 when there is no
    discordant problem). Computed with exact integer arithmetic.
    """
    if only_first < 0 or only_second < 0:
        raise EvaluationError("discordant counts must be >= 0")
    n = only_first + only_second
    if n == 0:
        return 1.0
    k = min(only_first, only_second)
    tail = sum(math.comb(n, i) for i in range(k + 1))
    # Python divides big integers exactly (correctly rounded), whatever their size.
    return min(1.0, (2 * tail) / (1 << n))


@attrs.frozen(slots=True)
class PairedCounts:
    """The 2x2 table of two models graded on the same ``n`` problems."""

    both: int
    only_first: int
    only_second: int
    neither: int

    @property
    def n(self) -> int:
        """Number of problems."""
        return self.both + self.only_first + self.only_second + self.neither

    @property
    def first_correct(self) -> int:
        """Problems the first model solved."""
        return self.both + self.only_first

    @property
    def second_correct(self) -> int:
        """Problems the second model solved."""
        return self.both + self.only_second

    def to_dict(self) -> dict[str, int]:
        """Return a JSON-compatible dict."""
        return {
            "both": self.both,
            "only_first": self.only_first,
            "only_second": self.only_second,
            "neither": self.neither,
        }


def paired_counts(first: Sequence[bool], second: Sequence[bool]) -> PairedCounts:
    """Count the 2x2 table of two outcome lists aligned problem by problem."""
    if len(first) != len(second):
        raise EvaluationError(
            f"paired outcomes need the same problems: {len(first)} vs {len(second)}"
        )
    both = only_first = only_second = neither = 0
    for a, b in zip(first, second, strict=True):
        if a and b:
            both += 1
        elif a:
            only_first += 1
        elif b:
            only_second += 1
        else:
            neither += 1
    return PairedCounts(both, only_first, only_second, neither)


def paired_difference(counts: PairedCounts, confidence: float = 0.95) -> tuple[float, Interval]:
    """The accuracy of the second model minus the first's, and its confidence interval.

    The interval is Newcombe's (1998) hybrid score interval for a difference of paired
    proportions (method 10): Wilson intervals of both accuracies, combined with the phi
    correlation of the two outcome columns.
    """
    n = counts.n
    if n == 0:
        return 0.0, Interval(-1.0, 1.0, confidence)
    a, b, c, d = counts.both, counts.only_first, counts.only_second, counts.neither
    p1 = (a + b) / n
    p2 = (a + c) / n
    diff = p2 - p1
    l1, u1 = attrs.astuple(wilson_interval(a + b, n, confidence))[:2]
    l2, u2 = attrs.astuple(wilson_interval(a + c, n, confidence))[:2]
    # phi is taken as 0 when a margin is empty (one model solved all or none).
    denom = (a + b) * (c + d) * (a + c) * (b + d)
    phi = (a * d - b * c) / math.sqrt(denom) if denom > 0 else 0.0
    # The interval of p2 - p1: swap the roles in Newcombe's formula for p1 - p2.
    delta = math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    eps = math.sqrt(max(0.0, (u2 - p2) ** 2 - 2 * phi * (u2 - p2) * (p1 - l1) + (p1 - l1) ** 2))
    return diff, Interval(max(-1.0, diff - delta), min(1.0, diff + eps), confidence)


@attrs.frozen(slots=True, kw_only=True)
class PairedComparison:
    """Two results on the same problems: the difference ``second - first`` and its test.

    ``interval`` is Newcombe's paired interval of the difference; ``p_value`` is the exact
    McNemar test of equal accuracy.
    """

    benchmark: str
    first: str
    second: str
    counts: PairedCounts
    difference: float
    interval: Interval
    p_value: float

    @property
    def first_accuracy(self) -> float:
        """The first model's accuracy on the shared problems."""
        return self.counts.first_correct / self.counts.n if self.counts.n else 0.0

    @property
    def second_accuracy(self) -> float:
        """The second model's accuracy on the shared problems."""
        return self.counts.second_correct / self.counts.n if self.counts.n else 0.0

    def significant(self, alpha: float = 0.05) -> bool:
        """Whether McNemar's test rejects equal accuracy at level ``alpha``."""
        return self.p_value < alpha

    def summary(self) -> str:
        """One line: ``MATH-500 step-300 - base: +5.8 pts [+3.1, +8.4], McNemar p=0.0001``."""
        return (
            f"{self.benchmark} {self.second} - {self.first}: {100 * self.difference:+.1f} pts "
            f"[{100 * self.interval.low:+.1f}, {100 * self.interval.high:+.1f}], "
            f"McNemar p={self.p_value:.3g} (n={self.counts.n}, {self.counts.only_second} "
            f"gained, {self.counts.only_first} lost)"
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict."""
        return {
            "benchmark": self.benchmark,
            "first": self.first,
            "second": self.second,
            "counts": self.counts.to_dict(),
            "first_accuracy": self.first_accuracy,
            "second_accuracy": self.second_accuracy,
            "difference": self.difference,
            "interval": self.interval.to_dict(),
            "p_value": self.p_value,
        }
