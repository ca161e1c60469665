"""What a sampled pool is: its problems, the report of how they were chosen, and skipped rows.

A row or problem left out of a pool is a :class:`Skipped` item with a :class:`SkipReason`; a
:class:`PoolReport` counts them, and a :class:`ProblemPool` carries the problems with their report.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeAlias, overload

import attrs

from tracedistill.problems.dedup import DuplicatePair, Overlap
from tracedistill.records import Problem

__all__ = [
    "PoolReport",
    "ProblemPool",
    "RowParser",
    "ScanItem",
    "ScanStats",
    "SkipReason",
    "Skipped",
    "Validator",
]

_EXAMPLES = 20  # skipped rows kept as examples per reason in a report


class SkipReason(enum.StrEnum):
    """Why a row or problem is not in a pool."""

    INVALID_ROW = "invalid-row"  # the row lacks a field or holds malformed data
    NO_ANSWER = "no-answer"  # a math row without a checkable gold answer ("proof", empty)
    INVALID_GOLD = "invalid-gold"  # the answer parser could not parse the gold answer
    NO_TESTS = "no-tests"  # a code row without any test case
    FILTERED = "filtered"  # rejected by a filter of the source
    DUPLICATE = "duplicate"  # same id or (normalized) text as a problem already in the pool
    CONTAMINATED = "contaminated"  # shares word n-grams with an evaluation benchmark


@attrs.frozen(slots=True, kw_only=True)
class Skipped:
    """A row or problem left out of a pool, and why.

    ``row`` is the row's position in its source (when known) and ``problem_id`` the id the
    problem has or would have had (when it could be built).
    """

    reason: SkipReason
    detail: str
    row: int | None = None
    problem_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict."""
        return {
            "reason": str(self.reason),
            "detail": self.detail,
            "row": self.row,
            "problem_id": self.problem_id,
        }


ScanItem: TypeAlias = Problem | Skipped
#: Checks a batch of problems; returns, per problem, None to keep it or why it is dropped.
Validator: TypeAlias = Callable[[Sequence[Problem]], Awaitable[Sequence[Skipped | None]]]
#: Turns one row (and its position) into a problem, or says why it cannot.
RowParser: TypeAlias = Callable[[Mapping[str, Any], int], ScanItem]


@attrs.frozen(slots=True, kw_only=True)
class PoolReport:
    """What sampling a pool read, kept and left out, and why.

    ``skipped`` counts every reason. Rows left out while reading (invalid rows, missing
    answers or tests, filters) are counted over the whole source with up to 20 ``examples``
    per reason; problems left out while selecting (invalid gold answers, duplicates,
    contamination) are listed in full in ``dropped``, with the pairs behind them in
    ``duplicates`` and ``overlaps``.
    """

    source: str
    seed: int
    requested: int | None
    selected: int
    rows: int
    problems: int
    examined: int
    passes: int
    skipped: Mapping[str, int]
    examples: Mapping[str, tuple[Skipped, ...]]
    dropped: tuple[Skipped, ...]
    duplicates: tuple[DuplicatePair, ...]
    overlaps: tuple[Overlap, ...]
    contaminated_kept: int
    benchmarks: tuple[str, ...]

    @property
    def short(self) -> bool:
        """Whether the source held fewer usable problems than requested."""
        return self.requested is not None and self.selected < self.requested

    def overlaps_by_benchmark(self) -> dict[str, int]:
        """Number of distinct problems overlapping each benchmark."""
        seen: dict[str, set[str]] = {name: set() for name in self.benchmarks}
        for overlap in self.overlaps:
            seen.setdefault(overlap.benchmark, set()).add(overlap.problem_id)
        return {name: len(ids) for name, ids in seen.items()}

    def summary(self) -> str:
        """A few human-readable lines."""
        want = "all" if self.requested is None else f"{self.requested:,}"
        lines = [
            f"{self.source}: selected {self.selected:,} of {want} requested (seed {self.seed}); "
            f"read {self.rows:,} rows -> {self.problems:,} problems, examined "
            f"{self.examined:,} in {self.passes} pass(es)"
        ]
        for reason, count in sorted(self.skipped.items()):
            lines.append(f"  skipped {reason}: {count:,}")
        for name, count in self.overlaps_by_benchmark().items():
            action = "kept" if self.contaminated_kept else "removed"
            lines.append(f"  overlapping {name}: {count:,} problem(s) ({action})")
        if self.short:
            lines.append("  WARNING: the source holds fewer usable problems than requested")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict."""
        return {
            "source": self.source,
            "seed": self.seed,
            "requested": self.requested,
            "selected": self.selected,
            "rows": self.rows,
            "problems": self.problems,
            "examined": self.examined,
            "passes": self.passes,
            "skipped": dict(self.skipped),
            "examples": {k: [s.to_dict() for s in v] for k, v in self.examples.items()},
            "dropped": [s.to_dict() for s in self.dropped],
            "duplicates": [d.to_dict() for d in self.duplicates],
            "overlaps": [o.to_dict() for o in self.overlaps],
            "contaminated_kept": self.contaminated_kept,
            "benchmarks": list(self.benchmarks),
        }


class ProblemPool(Sequence[Problem]):
    """A sampled pool: the problems in sampling order, and the report of how they were chosen."""

    __slots__ = ("_problems", "report")

    def __init__(self, problems: Sequence[Problem], report: PoolReport) -> None:
        self._problems = tuple(problems)
        self.report = report

    @overload
    def __getitem__(self, index: int) -> Problem: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Problem]: ...
    def __getitem__(self, index: int | slice) -> Problem | Sequence[Problem]:
        return self._problems[index]

    def __len__(self) -> int:
        return len(self._problems)

    def __repr__(self) -> str:
        return f"ProblemPool({self.report.source!r}, {len(self)} problems)"

    @property
    def ids(self) -> list[str]:
        """The problem ids, in pool order."""
        return [p.id for p in self._problems]


class ScanStats:
    """Counters of one scan; examples are kept only on the first pass."""

    def __init__(self) -> None:
        self.rows = 0
        self.problems = 0
        self.skipped: Counter[str] = Counter()
        self.examples: dict[str, list[Skipped]] = {}
        self.recording = True

    def skip(self, item: Skipped) -> None:
        """Count a skipped row (and keep it as an example) while recording."""
        if not self.recording:
            return
        self.skipped[str(item.reason)] += 1
        examples = self.examples.setdefault(str(item.reason), [])
        if len(examples) < _EXAMPLES:
            examples.append(item)
