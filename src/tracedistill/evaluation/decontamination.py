"""Decontamination: training problems that share word 8-grams with benchmark prompts.

The protocol is open-r1's (lowercase, collapse whitespace, word 8-grams), implemented once in
:mod:`tracedistill.problems.dedup`; this module runs it against :class:`Benchmark` s and reports
which training problems overlap which benchmark problems, then filters either side on request.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import attrs

from tracedistill.evaluation.benchmarks import Benchmark
from tracedistill.problems.dedup import DEFAULT_NGRAM, Decontaminator, Overlap
from tracedistill.records import Problem

__all__ = ["DecontaminationReport", "decontaminate"]

T = TypeVar("T")


@attrs.frozen(slots=True, kw_only=True)
class DecontaminationReport:
    """Which training problems overlap which benchmark problems.

    ``overlaps`` lists every (training problem, benchmark problem) pair that shares at least
    one word n-gram, with the number of shared n-grams and one of them as evidence.
    """

    n: int
    checked: int
    benchmarks: dict[str, int]
    overlaps: tuple[Overlap, ...]

    @property
    def training_ids(self) -> frozenset[str]:
        """Training problems that overlap some benchmark problem."""
        return frozenset(o.problem_id for o in self.overlaps)

    def benchmark_ids(self, benchmark: str | None = None) -> frozenset[str]:
        """Benchmark problems that some training problem overlaps (of one benchmark or all)."""
        return frozenset(
            o.benchmark_id for o in self.overlaps if benchmark is None or o.benchmark == benchmark
        )

    @property
    def contaminated(self) -> bool:
        """Whether any overlap was found."""
        return bool(self.overlaps)

    def clean(self, problems: Iterable[T]) -> list[T]:
        """The training problems (or anything with an ``id``) that overlap no benchmark."""
        dropped = self.training_ids
        return [p for p in problems if getattr(p, "id", p) not in dropped]

    def clean_benchmark(self, benchmark: Benchmark) -> Benchmark:
        """The benchmark without the problems training data overlaps (same file hash)."""
        return benchmark.exclude(self.benchmark_ids(benchmark.name))

    def summary(self) -> str:
        """One line per benchmark."""
        if not self.overlaps:
            return f"{self.checked} training problems: no {self.n}-gram overlap with " + ", ".join(
                self.benchmarks
            )
        parts = [
            f"{name}: {len(self.benchmark_ids(name))} of {size} benchmark problems overlapped"
            for name, size in self.benchmarks.items()
        ]
        return (
            f"{len(self.training_ids)} of {self.checked} training problems share a word "
            f"{self.n}-gram with a benchmark; " + "; ".join(parts)
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict."""
        return {
            "n": self.n,
            "checked": self.checked,
            "benchmarks": self.benchmarks,
            "training_ids": sorted(self.training_ids),
            "overlaps": [o.to_dict() for o in self.overlaps],
        }


def decontaminate(
    training: Iterable[Problem] | Iterable[tuple[str, str]],
    benchmarks: Benchmark | Sequence[Benchmark],
    *,
    n: int = DEFAULT_NGRAM,
) -> DecontaminationReport:
    """Find the training problems that share a word ``n``-gram with a benchmark's prompts.

    ``training`` yields problems (their ``prompt`` is compared) or ``(id, text)`` pairs, read
    once. The benchmark side is each problem's statement (``Problem.prompt``), the text a
    training set could have copied.
    """
    items = [benchmarks] if isinstance(benchmarks, Benchmark) else list(benchmarks)
    index = Decontaminator({b.name: {p.id: p.prompt for p in b.problems} for b in items}, n=n)
    overlaps: list[Overlap] = []
    checked = 0
    for item in training:
        checked += 1
        item_id, text = (item.id, item.prompt) if isinstance(item, Problem) else item
        overlaps.extend(index.overlaps(item_id, text))
    return DecontaminationReport(
        n=n,
        checked=checked,
        benchmarks={b.name: len(b) for b in items},
        overlaps=tuple(overlaps),
    )
