"""Scores and paired comparisons: one model (or checkpoint) graded on one benchmark."""

from __future__ import annotations

import collections
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

import attrs

from tracedistill.evaluation.stats import (
    Interval,
    mcnemar_exact,
    paired_counts,
    paired_difference,
    wilson_interval,
)
from tracedistill.verifiers.compliance import complies

if TYPE_CHECKING:
    from tracedistill.evaluation.results import EvalResult

__all__ = ["ALPHA", "BASE", "Comparison", "RunInfo", "Score", "compare", "parse_label"]

#: The label of the base model's scores.
BASE = "base"
#: Significance level of the paired tests shown in the tables.
ALPHA = 0.05


def _outcomes(value: Mapping[str, bool]) -> dict[str, bool]:
    return dict(value)


def _counts(value: Mapping[str, int]) -> dict[str, int]:
    return dict(value)


@attrs.frozen(slots=True, kw_only=True)
class Score:
    """One model (or checkpoint) graded on one benchmark, problem by problem.

    ``outcomes`` maps each problem id to whether the response passed; paired comparisons use
    the problems two scores share. ``step`` is None for the base model. ``extractions``
    counts the passed responses by the answer extraction that graded them (a grade's
    ``details["extraction"]``: ``boxed``, ``answer_is``, ``last_math``, ...), when the grader
    records it. ``protocol`` says which answers the grader counted, in words, when the
    evaluation recorded it. ``expected`` is the number of problems the benchmark has (None:
    unknown); a score with fewer graded problems is partial (:attr:`complete` is False): its
    cell says so and the report never picks it as a best checkpoint or a Pareto point.
    """

    model: str
    benchmark: str
    outcomes: Mapping[str, bool] = attrs.field(converter=_outcomes)
    step: int | None = None
    samples: int | None = None
    format_compliance: float | None = None
    mean_response_chars: float | None = None
    extractions: Mapping[str, int] = attrs.field(factory=dict, converter=_counts)
    protocol: str | None = None
    expected: int | None = None

    @property
    def n(self) -> int:
        """Number of problems graded."""
        return len(self.outcomes)

    @property
    def complete(self) -> bool:
        """Whether every problem of the benchmark was graded (True when ``expected`` is unknown)."""
        return self.expected is None or self.n >= self.expected

    def partial_note(self) -> str:
        """``partial n/N`` for a partial score, else the empty string."""
        return "" if self.complete else f"partial {self.n}/{self.expected}"

    @property
    def correct(self) -> int:
        """Number of problems passed."""
        return sum(1 for v in self.outcomes.values() if v)

    @property
    def accuracy(self) -> float:
        """Fraction of problems passed (0 when nothing was graded)."""
        return self.correct / self.n if self.n else 0.0

    @property
    def interval(self) -> Interval:
        """The 95% Wilson interval of the accuracy."""
        return wilson_interval(self.correct, self.n)

    @property
    def label(self) -> str:
        """``model`` for the base model, ``model@step`` for a checkpoint."""
        return self.model if self.step is None else f"{self.model}@{self.step}"

    def cell(self) -> str:
        """The accuracy in percent with its interval, e.g. ``88.0 [84.8, 90.6]``; a partial
        score is marked ``(partial n/N)``, and one with nothing graded shows no accuracy.
        """
        if self.n == 0 and not self.complete:
            return f"not graded ({self.partial_note()})"
        cell = f"{100 * self.accuracy:.1f} {self.interval.percent()}"
        return cell if self.complete else f"{cell} ({self.partial_note()})"

    def __repr__(self) -> str:
        # Not the outcomes: a benchmark has hundreds of them.
        of = "" if self.complete else f" of {self.expected}"
        return f"<Score {self.label} on {self.benchmark}: {self.cell()}, n={self.n}{of}>"

    @classmethod
    def from_evaluation(
        cls,
        result: EvalResult,
        *,
        model: str | None = None,
        step: int | None = None,
        samples: int | None = None,
        protocol: str | None = None,
    ) -> Score:
        r"""The score of one :class:`~tracedistill.evaluation.EvalResult`.

        ``model`` and ``step`` default to what the result's label says (see
        :func:`parse_label`). Format compliance counts a response as compliant when it closes
        its think block and then answers in the trained form (a final ``\boxed{}`` answer the
        boxed extraction finds, or a fenced code block; see
        :mod:`tracedistill.verifiers.compliance`). ``protocol`` defaults to the one the
        evaluation recorded.
        """
        if model is None:
            model, parsed_step = parse_label(result.label)
            step = parsed_step if step is None else step
        compliant = [complies(o.format) for o in result.outcomes]
        extractions = collections.Counter(
            str(o.details["extraction"])
            for o in result.outcomes
            if o.passed and "extraction" in o.details
        )
        return cls(
            model=model,
            benchmark=result.benchmark,
            step=step,
            samples=samples,
            outcomes={o.problem_id: o.passed for o in result.outcomes},
            format_compliance=sum(compliant) / len(compliant) if compliant else None,
            mean_response_chars=result.format.mean_chars if result.outcomes else None,
            extractions=dict(extractions),
            protocol=result.protocol if protocol is None else protocol,
            expected=result.expected,
        )


_LABEL = re.compile(r"^(?P<model>.+)@(?P<step>\d+)$")


def parse_label(label: str, *, base: str = BASE) -> tuple[str, int | None]:
    """Split an evaluation label into (model, step): ``run@300`` is run ``run`` at step 300.

    ``base`` (default ``"base"``) names the base model, which has no step.

    Raises:
        ValueError: the label is neither ``base`` nor ``<run>@<step>``.
    """
    if label == base:
        return BASE, None
    match = _LABEL.match(label)
    if match is None:
        raise ValueError(
            f"evaluation label {label!r} is neither the base model's label {base!r} nor "
            "'<run>@<step>' (e.g. 'sonnet-math@300'); evaluate with label='<run>@<step>' or "
            "pass base="
        )
    return match["model"], int(match["step"])


@attrs.frozen(slots=True, kw_only=True)
class Comparison:
    """A paired comparison of two scores on the problems they share: ``second - first``."""

    first: str
    second: str
    benchmark: str
    n: int
    difference: float
    interval: Interval
    p_value: float

    @property
    def significant(self) -> bool:
        """Whether the exact McNemar test rejects equal accuracy at the 5% level."""
        return self.p_value < ALPHA

    def cell(self) -> str:
        """The difference in points with its interval and a significance mark."""
        mark = "*" if self.significant else ""
        return (
            f"{100 * self.difference:+.1f}{mark} "
            f"[{100 * self.interval.low:+.1f}, {100 * self.interval.high:+.1f}]"
        )


def compare(first: Score, second: Score) -> Comparison:
    """Compare two scores of the same benchmark, paired on their common problems."""
    if first.benchmark != second.benchmark:
        raise ValueError(f"cannot pair {first.benchmark!r} with {second.benchmark!r}")
    common = sorted(first.outcomes.keys() & second.outcomes.keys())
    counts = paired_counts(
        [first.outcomes[k] for k in common], [second.outcomes[k] for k in common]
    )
    diff, interval = paired_difference(counts)
    return Comparison(
        first=first.label,
        second=second.label,
        benchmark=first.benchmark,
        n=counts.n,
        difference=diff,
        interval=interval,
        p_value=mcnemar_exact(counts.only_first, counts.only_second),
    )


@attrs.frozen(slots=True, kw_only=True)
class RunInfo:
    """What a run is, for the tables: its teacher, its task and the in-domain benchmark."""

    name: str
    teacher: str
    task: str
    in_domain: str
