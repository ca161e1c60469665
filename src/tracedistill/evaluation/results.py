"""Evaluation results: per-problem outcomes, accuracies with intervals, paired comparisons.

Each evaluation of one model (or checkpoint) on one benchmark lives in one append-only JSON
Lines file, ``{run_dir}/evaluations/{label}/{benchmark}.jsonl``:

- a ``header`` line: the label, the model, the sampler, the benchmark and its file's sha256;
- a ``sample`` line as soon as a response arrives (so a crash never buys it twice);
- a ``grade`` line once the response is graded (the grader's name and version with it).

Lines are appended through :class:`tracedistill._jsonl.JsonlFile` (one ``write`` per line), so a
killed process leaves at most one torn final line, which the next open cuts away (its bytes kept
in ``<file>.torn``). :class:`EvalStore` finds and
loads these files; :func:`compare` pairs two results problem by problem.
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
import statistics
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from tracedistill._html import fields_html, fields_text
from tracedistill._jsonl import JsonlFile
from tracedistill.clients.base import Completion
from tracedistill.errors import EvaluationError, StoreCorruptError, TraceDistillError
from tracedistill.evaluation.stats import (
    Interval,
    PairedComparison,
    mcnemar_exact,
    paired_counts,
    paired_difference,
    wilson_interval,
)
from tracedistill.records import FinishReason, TaskKind, VerdictReason, utcnow
from tracedistill.verifiers.compliance import format_flags

__all__ = [
    "EVAL_SCHEMA",
    "UNREADABLE",
    "EvalLog",
    "EvalResult",
    "EvalStore",
    "FormatSummary",
    "PairedComparison",
    "ProblemOutcome",
    "compare",
    "format_flags",
    "slug",
]

log = logging.getLogger(__name__)

#: Version of the evaluation file layout.
EVAL_SCHEMA = 1

#: What reading one stored evaluation can raise: a corrupt or foreign file, a malformed record.
UNREADABLE: tuple[type[Exception], ...] = (
    TraceDistillError,
    OSError,
    KeyError,
    TypeError,
    ValueError,
)


def slug(text: str) -> str:
    """A file-name-safe form of a label or benchmark name (``/`` and spaces become ``_``)."""
    cleaned = re.sub(r"[^A-Za-z0-9._+=-]+", "_", text).strip("._")
    return cleaned[:120] or "unnamed"


@attrs.frozen(slots=True, kw_only=True)
class FormatSummary:
    """Format compliance and length over the responses of one evaluation.

    Rates are fractions of all responses; ``think_closed_rate`` is among the responses that
    opened a think block (None if none did). ``boxed_rate`` (math) or ``code_block_rate``
    (code) is None when it does not apply. Lengths are in characters and, when the sampler
    reported them, in tokens.
    """

    n: int
    think_opened_rate: float
    think_closed_rate: float | None
    boxed_rate: float | None
    code_block_rate: float | None
    truncated_rate: float
    mean_chars: float
    median_chars: float
    mean_tokens: float | None
    median_tokens: float | None

    @classmethod
    def of(cls, outcomes: Sequence[ProblemOutcome]) -> FormatSummary:
        """Summarize outcomes."""
        n = len(outcomes)

        def rate(key: str, among: Sequence[ProblemOutcome] = outcomes) -> float | None:
            values = [o.format[key] for o in among if key in o.format]
            return sum(values) / len(values) if values else None

        opened = [o for o in outcomes if o.format.get("think_opened")]
        tokens = [o.completion_tokens for o in outcomes if o.completion_tokens is not None]
        chars = [len(o.text) for o in outcomes]
        return cls(
            n=n,
            think_opened_rate=rate("think_opened") or 0.0,
            think_closed_rate=rate("think_closed", opened) if opened else None,
            boxed_rate=rate("boxed"),
            code_block_rate=rate("code_block"),
            truncated_rate=sum(o.finish_reason is FinishReason.LENGTH for o in outcomes) / n
            if n
            else 0.0,
            mean_chars=statistics.fmean(chars) if chars else 0.0,
            median_chars=float(statistics.median(chars)) if chars else 0.0,
            mean_tokens=statistics.fmean(tokens) if tokens else None,
            median_tokens=float(statistics.median(tokens)) if tokens else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict."""
        return attrs.asdict(self)


# --- outcomes and results --------------------------------------------------------------------


@attrs.frozen(slots=True, kw_only=True)
class ProblemOutcome:
    """One problem of one evaluation: the response, its grade and its format."""

    problem_id: str
    passed: bool
    reason: VerdictReason = attrs.field(converter=VerdictReason)
    text: str
    finish_reason: FinishReason = attrs.field(converter=FinishReason)
    completion_tokens: int | None = None
    latency_s: float = 0.0
    format: dict[str, bool] = attrs.field(factory=dict)
    details: dict[str, Any] = attrs.field(factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict."""
        return {
            "problem_id": self.problem_id,
            "passed": self.passed,
            "reason": str(self.reason),
            "text": self.text,
            "finish_reason": str(self.finish_reason),
            "completion_tokens": self.completion_tokens,
            "latency_s": self.latency_s,
            "format": self.format,
            "details": self.details,
        }


@attrs.frozen(slots=True, kw_only=True)
class EvalResult:
    """The evaluation of one model (or checkpoint) on one benchmark.

    ``accuracy`` is ``correct / n`` over the graded problems, with its Wilson ``interval``.
    ``complete`` is False when some problems have no graded response yet (a partial or failed
    run): the accuracy then covers only the graded ones. ``grader`` identifies the grader
    (name, version, truncation and prompt settings) and ``protocol`` says which answers it
    counts, in words (None when the grader does not say or an older log did not record it).
    """

    label: str
    benchmark: str
    kind: TaskKind = attrs.field(converter=TaskKind)
    model: str
    sampler: dict[str, Any]
    benchmark_sha256: str
    benchmark_source: str
    params: dict[str, Any]
    outcomes: tuple[ProblemOutcome, ...]
    expected: int
    interval: Interval
    format: FormatSummary
    path: Path | None = None
    created_at: _dt.datetime = attrs.field(factory=utcnow)
    grader: str | None = None
    protocol: str | None = None

    @property
    def n(self) -> int:
        """Graded problems."""
        return len(self.outcomes)

    @property
    def correct(self) -> int:
        """Problems solved."""
        return sum(o.passed for o in self.outcomes)

    @property
    def accuracy(self) -> float:
        """``correct / n`` (0.0 when nothing was graded)."""
        return self.correct / self.n if self.n else 0.0

    @property
    def complete(self) -> bool:
        """Whether every problem of the benchmark was graded."""
        return self.n == self.expected

    @property
    def standard_error(self) -> float:
        """The binomial standard error of the accuracy."""
        return (self.accuracy * (1 - self.accuracy) / self.n) ** 0.5 if self.n else 0.0

    def outcome(self, problem_id: str) -> ProblemOutcome:
        """The outcome of one problem."""
        for o in self.outcomes:
            if o.problem_id == problem_id:
                return o
        raise KeyError(problem_id)

    def reasons(self) -> dict[str, int]:
        """How many outcomes had each verdict reason."""
        counts: dict[str, int] = {}
        for o in self.outcomes:
            counts[str(o.reason)] = counts.get(str(o.reason), 0) + 1
        return counts

    def compare(self, other: EvalResult, *, confidence: float = 0.95) -> PairedComparison:
        """Pair this result (first) with ``other`` (second); see :func:`compare`."""
        return compare(self, other, confidence=confidence)

    def summary(self) -> str:
        """One line: ``MATH-500 step-300: 86.4% [83.1, 89.1] (432/500)``."""
        partial = "" if self.complete else f", PARTIAL: {self.n} of {self.expected} graded"
        return (
            f"{self.benchmark} {self.label}: {100 * self.accuracy:.1f}% "
            f"{self.interval.percent()} ({self.correct}/{self.n}{partial})"
        )

    def _fields(self) -> dict[str, Any]:
        fmt = self.format
        fields: dict[str, Any] = {
            "accuracy": f"{100 * self.accuracy:.1f}% {self.interval.percent()} (95% Wilson)",
            "correct": f"{self.correct} of {self.n} graded"
            + ("" if self.complete else f" (PARTIAL: {self.expected} expected)"),
            "model": self.model,
            "sampler": self.sampler.get("backend", ""),
            "benchmark file": f"{self.benchmark_source} (sha256 {self.benchmark_sha256[:12]})",
            "answers that count": self.protocol,
            "think block closed": None
            if fmt.think_closed_rate is None
            else f"{100 * fmt.think_closed_rate:.1f}%",
        }
        if fmt.boxed_rate is not None:
            fields["\\boxed{} answer"] = f"{100 * fmt.boxed_rate:.1f}%"
        if fmt.code_block_rate is not None:
            fields["code block"] = f"{100 * fmt.code_block_rate:.1f}%"
        fields["cut at max_tokens"] = f"{100 * fmt.truncated_rate:.1f}%"
        fields["mean response"] = f"{fmt.mean_chars:,.0f} chars" + (
            "" if fmt.mean_tokens is None else f", {fmt.mean_tokens:,.0f} tokens"
        )
        fields["verdicts"] = ", ".join(f"{k} {v}" for k, v in sorted(self.reasons().items()))
        return fields

    def __repr__(self) -> str:
        return f"<EvalResult {self.summary()}>"

    def __str__(self) -> str:
        return fields_text(f"EvalResult {self.benchmark} {self.label}", self._fields())

    def _repr_html_(self) -> str:
        return fields_html(f"{self.benchmark} — {self.label}", self._fields())

    def to_dict(self, *, outcomes: bool = False) -> dict[str, Any]:
        """Return a JSON-compatible dict (per-problem outcomes only when asked)."""
        data: dict[str, Any] = {
            "label": self.label,
            "benchmark": self.benchmark,
            "kind": str(self.kind),
            "model": self.model,
            "sampler": self.sampler,
            "benchmark_sha256": self.benchmark_sha256,
            "benchmark_source": self.benchmark_source,
            "params": self.params,
            "n": self.n,
            "expected": self.expected,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "interval": self.interval.to_dict(),
            "format": self.format.to_dict(),
            "reasons": self.reasons(),
            "path": None if self.path is None else str(self.path),
            "created_at": self.created_at.isoformat(),
            "grader": self.grader,
            "protocol": self.protocol,
        }
        if outcomes:
            data["outcomes"] = [o.to_dict() for o in self.outcomes]
        return data


def compare(
    first: EvalResult,
    second: EvalResult,
    *,
    confidence: float = 0.95,
    allow_different_files: bool = False,
) -> PairedComparison:
    """Compare two results problem by problem (``second - first``).

    Only problems graded in both count. Results on different benchmark files (sha256) are
    refused unless ``allow_different_files``.

    Raises:
        EvaluationError: different benchmarks or files, or no problem in common.
    """
    if first.benchmark_sha256 != second.benchmark_sha256 and not allow_different_files:
        raise EvaluationError(
            f"{first.label} and {second.label} were evaluated on different benchmark files "
            f"({first.benchmark_sha256[:12]} vs {second.benchmark_sha256[:12]}); pass "
            "allow_different_files=True to pair them on their shared problem ids anyway"
        )
    second_by_id = {o.problem_id: o.passed for o in second.outcomes}
    shared = [o for o in first.outcomes if o.problem_id in second_by_id]
    if not shared:
        raise EvaluationError(f"{first.label} and {second.label} share no graded problem")
    if len(shared) < max(first.n, second.n):
        log.warning(
            "comparing %s and %s on the %d problems graded in both (of %d and %d)",
            first.label,
            second.label,
            len(shared),
            first.n,
            second.n,
        )
    counts = paired_counts([o.passed for o in shared], [second_by_id[o.problem_id] for o in shared])
    diff, interval = paired_difference(counts, confidence)
    return PairedComparison(
        benchmark=first.benchmark,
        first=first.label,
        second=second.label,
        counts=counts,
        difference=diff,
        interval=interval,
        p_value=mcnemar_exact(counts.only_first, counts.only_second),
    )


# --- the append-only log ---------------------------------------------------------------------


def _problem_id(record: Mapping[str, Any], path: Path, number: int) -> str:
    problem_id = record.get("problem_id")
    if not isinstance(problem_id, str):
        raise StoreCorruptError(path, number, "a sample or grade line without a problem_id")
    return problem_id


class EvalLog:
    """The append-only file of one evaluation (see the module docstring).

    Open it with :meth:`open`; it reads what is there (cutting a torn last line), then appends.
    ``samples`` and ``grades`` map problem ids to the latest stored line of each kind.
    """

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        self.header = header
        self.samples: dict[str, dict[str, Any]] = {}
        self.grades: dict[str, dict[str, Any]] = {}
        self._file = JsonlFile(path)

    @classmethod
    def open(cls, path: str | Path, header: Mapping[str, Any]) -> EvalLog:
        """Open (or create) the log at ``path``; an existing file must be for the same model
        and benchmark file as ``header``.

        Raises:
            EvaluationError: the file holds another model's or another benchmark file's
                evaluation.
            StoreCorruptError: a line other than the last is not valid JSON.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        log_ = cls(path, dict(header))
        existing = log_._read()
        if existing is None:
            log_._append({"type": "header", "schema": EVAL_SCHEMA, **header})
        else:
            for key in ("model", "benchmark", "benchmark_sha256"):
                if existing.get(key) != header.get(key):
                    raise EvaluationError(
                        f"{path} holds an evaluation of {key} {existing.get(key)!r}, not "
                        f"{header.get(key)!r}: use another label (or run directory) for a "
                        "different model or benchmark file. Nothing was changed."
                    )
            if any(
                existing.get(k) != header.get(k) for k in ("request_keys", "grader", "protocol")
            ):
                # Another subset, sampling setting or grader: the latest header describes the
                # evaluation being run (responses are matched by request key, grades by grader).
                log_._append({"type": "header", "schema": EVAL_SCHEMA, **header})
                existing = {"type": "header", "schema": EVAL_SCHEMA, **header}
            log_.header = existing
        return log_

    @classmethod
    def read(cls, path: str | Path) -> EvalLog:
        """Read a log without opening it for writing."""
        log_ = cls(Path(path), {})
        header = log_._read(repair=False)
        if header is None:
            raise EvaluationError(f"{path}: no evaluation stored there")
        log_.header = header
        return log_

    def _read(self, *, repair: bool = True) -> dict[str, Any] | None:
        if repair:
            self._file.repair()
        header: dict[str, Any] | None = None
        for number, _offset, record in self._file.index(repair=False):
            assert isinstance(record, dict)  # no header pattern: every line is parsed
            kind = record.get("type")
            if kind == "header":
                if record.get("schema", 0) > EVAL_SCHEMA:
                    raise EvaluationError(
                        f"{self.path} was written by a newer tracedistill (schema "
                        f"{record.get('schema')}); upgrade to read it"
                    )
                header = record  # the latest header describes the latest run
            elif kind == "sample":
                self.samples[_problem_id(record, self.path, number)] = record
            elif kind == "grade":
                self.grades[_problem_id(record, self.path, number)] = record
        return header

    def _append(self, record: Mapping[str, Any]) -> None:
        self._file.append(record)

    def add_sample(self, problem_id: str, key: str, completion: Completion) -> dict[str, Any]:
        """Store a response (before it is graded)."""
        record = {
            "type": "sample",
            "problem_id": problem_id,
            "key": key,
            **completion.to_dict(),
            "created_at": utcnow().isoformat(),
        }
        self._append(record)
        self.samples[problem_id] = record
        return record

    def add_grade(
        self,
        problem_id: str,
        key: str,
        *,
        grader: str,
        passed: bool,
        reason: VerdictReason,
        details: Mapping[str, Any],
        format: Mapping[str, bool],
        elapsed_s: float,
    ) -> dict[str, Any]:
        """Store the grade of the response stored under ``key``."""
        record = {
            "type": "grade",
            "problem_id": problem_id,
            "key": key,
            "grader": grader,
            "passed": passed,
            "reason": str(reason),
            "details": dict(details),
            "format": dict(format),
            "elapsed_s": elapsed_s,
        }
        self._append(record)
        self.grades[problem_id] = record
        return record

    def sample_for(self, problem_id: str, key: str) -> dict[str, Any] | None:
        """The stored response to the request ``key`` of a problem, if any."""
        record = self.samples.get(problem_id)
        return record if record is not None and record.get("key") == key else None

    def grade_for(self, problem_id: str, key: str, grader: str) -> dict[str, Any] | None:
        """The stored grade of that response by ``grader`` (name and version), if any."""
        record = self.grades.get(problem_id)
        if record is None or record.get("key") != key or record.get("grader") != grader:
            return None
        return record

    def outcomes(
        self, keys: Mapping[str, str] | None = None, grader: str | None = None
    ) -> list[ProblemOutcome]:
        """The graded outcomes stored: only of the given ``problem id -> request key`` and by
        the given grader, when given.
        """
        found: list[ProblemOutcome] = []
        for problem_id, grade in self.grades.items():
            if keys is not None and keys.get(problem_id) != grade.get("key"):
                continue
            if grader is not None and grade.get("grader") != grader:
                continue
            sample = self.samples.get(problem_id)
            if sample is None or sample.get("key") != grade.get("key"):
                continue
            found.append(outcome_of(sample, grade))
        return found

    def close(self) -> None:
        """Force what was appended to disk and close the file (idempotent)."""
        self._file.sync()
        self._file.close()

    def __enter__(self) -> EvalLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def outcome_of(sample: Mapping[str, Any], grade: Mapping[str, Any]) -> ProblemOutcome:
    """Build a :class:`ProblemOutcome` from a stored sample line and its grade line."""
    return ProblemOutcome(
        problem_id=sample["problem_id"],
        passed=bool(grade["passed"]),
        reason=grade["reason"],
        text=sample["text"],
        finish_reason=sample["finish_reason"],
        completion_tokens=sample.get("completion_tokens"),
        latency_s=float(sample.get("latency_s") or 0.0),
        format=dict(grade.get("format") or {}),
        details=dict(grade.get("details") or {}),
    )


def build_result(
    header: Mapping[str, Any],
    outcomes: Sequence[ProblemOutcome],
    *,
    expected: int,
    order: Sequence[str] | None = None,
    path: Path | None = None,
    confidence: float = 0.95,
) -> EvalResult:
    """Assemble an :class:`EvalResult` from a log header and outcomes (in benchmark order)."""
    if order is not None:
        rank = {pid: i for i, pid in enumerate(order)}
        outcomes = sorted(outcomes, key=lambda o: rank.get(o.problem_id, len(rank)))
    correct = sum(o.passed for o in outcomes)
    created = header.get("created_at")
    grader, protocol = header.get("grader"), header.get("protocol")
    return EvalResult(
        label=str(header.get("label", "")),
        benchmark=str(header.get("benchmark", "")),
        kind=header.get("kind", TaskKind.MATH),
        model=str(header.get("model", "")),
        sampler=dict(header.get("sampler") or {}),
        benchmark_sha256=str(header.get("benchmark_sha256", "")),
        benchmark_source=str(header.get("benchmark_source", "")),
        params=dict(header.get("params") or {}),
        outcomes=tuple(outcomes),
        expected=expected,
        interval=wilson_interval(correct, len(outcomes), confidence),
        format=FormatSummary.of(outcomes),
        path=path,
        created_at=_dt.datetime.fromisoformat(created) if isinstance(created, str) else utcnow(),
        grader=grader if isinstance(grader, str) else None,
        protocol=protocol if isinstance(protocol, str) else None,
    )


class EvalStore:
    """The evaluations kept under one run directory (``{root}/evaluations/...``).

    Args:
        root: the run directory.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path_for(self, label: str, benchmark: str) -> Path:
        """The file of one (label, benchmark) evaluation."""
        return self.root / "evaluations" / slug(label) / f"{slug(benchmark)}.jsonl"

    def open(self, label: str, benchmark: str, header: Mapping[str, Any]) -> EvalLog:
        """Open (or create) the log of one evaluation for appending."""
        return EvalLog.open(self.path_for(label, benchmark), header)

    def load(self, label: str, benchmark: str, *, confidence: float = 0.95) -> EvalResult:
        """Load a stored evaluation as a result (every graded problem of its latest responses).

        Raises:
            EvaluationError: nothing is stored for this label and benchmark.
        """
        return self._load(self.path_for(label, benchmark), confidence)

    def _load(self, path: Path, confidence: float) -> EvalResult:
        if not path.is_file():
            raise EvaluationError(f"no evaluation stored at {path}")
        log_ = EvalLog.read(path)
        keys = log_.header.get("request_keys")
        keys = keys if isinstance(keys, dict) else None
        grader = log_.header.get("grader")
        expected = len(keys) if keys is not None else len(log_.grades)
        return build_result(
            log_.header,
            log_.outcomes(keys, grader if isinstance(grader, str) else None),
            expected=expected,
            order=list(keys) if keys is not None else None,
            path=path,
            confidence=confidence,
        )

    def results(
        self, *, confidence: float = 0.95, errors: list[tuple[str, str]] | None = None
    ) -> Iterator[EvalResult]:
        """Every stored evaluation, by label then benchmark.

        Without ``errors``, the first log that cannot be read raises. With a list, such a log
        is skipped with a warning and ``(file, why)`` appended to it, so the rest can still be
        reported: ``Results.from_evaluations(store.results(errors=errs), unreadable=errs)``
        lists them under "Not included".

        Raises:
            StoreCorruptError: a corrupt line (file and line named), when ``errors`` is None.
            EvaluationError: a log of a newer schema or without a header, likewise.
        """
        base = self.root / "evaluations"
        if not base.is_dir():
            return
        for path in sorted(base.glob("*/*.jsonl")):
            if errors is None:
                yield self._load(path, confidence)
                continue
            try:
                result = self._load(path, confidence)
            except UNREADABLE as exc:
                why = str(exc) if isinstance(exc, StoreCorruptError) else f"{path}: {exc!r}"
                log.warning("evaluation %s skipped: %s", path, why)
                errors.append((str(path), why))
                continue
            yield result

    def labels(self) -> list[str]:
        """The labels with stored evaluations (as stored in their headers)."""
        return sorted({r.label for r in self.results()})
