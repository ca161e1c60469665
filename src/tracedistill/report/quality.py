"""Trace quality: how good a teacher's stored traces are, before any training."""

from __future__ import annotations

import re
import statistics

import attrs

from tracedistill.chat import LengthReport
from tracedistill.records import TaskKind
from tracedistill.store.base import TraceStore
from tracedistill.verifiers.compliance import complies, trace_flags

__all__ = ["TraceQuality", "trace_quality"]


@attrs.frozen(slots=True, kw_only=True)
class TraceQuality:
    """How good a teacher's traces are, before any training.

    Each length figure has one unit. ``mean_tokens`` and ``median_tokens`` are the teacher's
    completion tokens as its provider counted them; ``truncation_rate`` is the share of traces
    the teacher stopped at its own ``max_tokens`` (the provider's finish reason, no count
    compared). ``over_max_length`` is the share of the run's training examples (prompt plus
    trace, rendered in the student's chat format) longer than ``max_length`` tokens of the
    *student's* tokenizer, as the trainer's length policy measured them; None before training
    prepared the data (the examples the length policy dropped or cut).
    """

    teacher: str
    task: str
    pool: int
    verified: int
    passed: int
    mean_tokens: float | None
    median_tokens: float | None
    truncation_rate: float | None
    self_corrections_per_trace: float | None
    format_compliance: float | None
    spend_usd: float
    max_length: int | None = None
    over_max_length: float | None = None

    @property
    def pass_rate(self) -> float | None:
        """Passed over verified traces."""
        return self.passed / self.verified if self.verified else None


_SELF_CORRECTION = re.compile(
    r"\b(wait|hmm+|let me (?:re-?consider|re-?check|double[- ]check|verify|re-?think)|"
    r"on second thought|actually,|i made (?:a|an) (?:mistake|error))\b",
    re.IGNORECASE,
)


def trace_quality(
    store: TraceStore,
    *,
    teacher: str,
    task: TaskKind | str,
    length: LengthReport | None = None,
    verifier: str | None = None,
) -> TraceQuality:
    r"""Measure a teacher's traces of one task in a store.

    Truncation counts the traces the teacher stopped at its ``max_tokens``. ``length``, the
    length report of the training data prepared from these traces (``data.json`` of a
    training run), adds the share of training examples over the student's ``max_length``,
    counted in the student tokenizer's tokens (the study's 4,096-token limit). Format
    compliance (:func:`~tracedistill.verifiers.compliance.complies`): a non-empty reasoning and
    a final ``\boxed{}`` answer the boxed extraction finds (math) or a fenced code block (code).
    Self-correction markers: "wait", "hmm", "let me reconsider", ... per trace.
    """
    kind = TaskKind(task)
    stats = store.stats(teacher=teacher, kind=kind, verifier=verifier)
    count = truncated = compliant = corrections = 0
    tokens: list[int] = []
    for trace in store.traces(teacher=teacher, kind=kind):
        count += 1
        truncated += trace.truncated
        compliant += complies(trace_flags(trace.reasoning, trace.answer, kind))
        corrections += len(_SELF_CORRECTION.findall(trace.reasoning))
        tokens.append(trace.usage.completion_tokens)
    over = length.affected / length.total if length is not None and length.total else None
    return TraceQuality(
        teacher=teacher,
        task=str(kind),
        pool=count + stats.failed,
        verified=stats.verified,
        passed=stats.passed,
        mean_tokens=statistics.fmean(tokens) if tokens else None,
        median_tokens=statistics.median(tokens) if tokens else None,
        truncation_rate=truncated / count if count else None,
        self_corrections_per_trace=corrections / count if count else None,
        format_compliance=compliant / count if count else None,
        spend_usd=stats.spend_usd,
        max_length=None if length is None else length.max_length,
        over_max_length=over,
    )
