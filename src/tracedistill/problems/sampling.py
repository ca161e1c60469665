"""Drawing a reproducible pool from a source: sampling keys, selection passes and the report.

Every problem gets a key hashed from the seed and its id; a pass reads every row once and keeps
the problems with the smallest keys above the last pass's (a bounded heap), then examines them
in key order: decontamination, validation, dedup. Passes repeat, each with a wider margin, until
the pool is full or the source is exhausted.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import anyio
import anyio.to_thread
import attrs

from tracedistill._progress import Progress
from tracedistill.errors import ConfigurationError, ProblemSourceError
from tracedistill.problems.dedup import Decontaminator, Deduplicator, DuplicatePair, Overlap
from tracedistill.problems.pool import (
    PoolReport,
    ProblemPool,
    ScanStats,
    Skipped,
    SkipReason,
    Validator,
)
from tracedistill.records import Problem

__all__ = ["Sampling", "draw_pool", "sample_key", "take"]

log = logging.getLogger(__name__)

#: Rows handed to a worker thread at a time: large enough to amortize the hop.
CHUNK = 2048


class Scannable(Protocol):
    """What sampling needs of a source (see :class:`~tracedistill.problems.ProblemSource`)."""

    name: str

    def scan(self) -> Iterator[Problem | Skipped]:
        """Yield every row in source order."""
        ...

    def validation(self) -> contextlib.AbstractAsyncContextManager[Validator]:
        """The batch validator used while sampling."""
        ...


def sample_key(seed: int, problem_id: str) -> int:
    """Return the 64-bit sampling key of a problem: the pool takes the smallest keys."""
    digest = hashlib.blake2b(f"{seed}\x00{problem_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@attrs.frozen(slots=True, kw_only=True)
class Sampling:
    """The settings of one draw (see :meth:`ProblemSource.sample` for their meaning)."""

    n: int | None
    seed: int = 0
    dedup: bool = True
    decontaminate: Decontaminator | None = None
    remove_contaminated: bool = True
    batch_size: int = 512
    progress: bool | None = None

    def __attrs_post_init__(self) -> None:
        if self.n is not None and self.n < 0:
            raise ConfigurationError(f"sample size must be >= 0 or None, got {self.n}")
        if self.batch_size < 1:
            raise ConfigurationError(f"batch_size must be >= 1, got {self.batch_size}")


async def draw_pool(source: Scannable, settings: Sampling) -> ProblemPool:
    """Draw the reproducible pool ``settings`` describe from ``source``."""
    return await _Draw(source, settings).run()


class _Draw:
    """One draw: selection passes over the source until the pool is full."""

    def __init__(self, source: Scannable, settings: Sampling) -> None:
        self.source = source
        self.settings = settings
        self.selection = _Selection(
            dedup=Deduplicator() if settings.dedup else None,
            decontaminate=settings.decontaminate,
            remove_contaminated=settings.remove_contaminated,
        )
        self.stats = ScanStats()
        self.accepted: list[Problem] = []
        self.passes = 0

    def _full(self) -> bool:
        n = self.settings.n
        return n is not None and len(self.accepted) >= n

    async def run(self) -> ProblemPool:
        n = self.settings.n
        lower: tuple[int, int] | None = None
        margin = 64 if n is None else max(64, n // 10)
        async with self.source.validation() as validate:
            while not self._full():
                self.passes += 1
                cap = None if n is None else n - len(self.accepted) + margin
                candidates, more = await self._collect(lower, cap)
                self.stats.recording = False
                await self._select(candidates, validate)
                if not more or not candidates:
                    break
                lower = (candidates[-1].key, candidates[-1].row)
                margin *= 4
        report = self._report()
        _log_report(report)
        return ProblemPool(self.accepted, report)

    async def _select(self, candidates: list[_Candidate], validate: Validator) -> None:
        n, size = self.settings.n, self.settings.batch_size
        total = n if n is not None else len(candidates)
        name = f"{self.source.name}: selecting"
        with Progress(total, name, unit="problem", enabled=self.settings.progress) as bar:
            bar.advance(len(self.accepted))
            for start in range(0, len(candidates), size):
                batch = candidates[start : start + size]
                kept = await self.selection.run(batch, validate, n, self.accepted)
                bar.advance(kept, dropped=len(self.selection.dropped))
                if self._full():
                    break

    def _report(self) -> PoolReport:
        stats, selection, index = self.stats, self.selection, self.settings.decontaminate
        return PoolReport(
            source=self.source.name,
            seed=self.settings.seed,
            requested=self.settings.n,
            selected=len(self.accepted),
            rows=stats.rows,
            problems=stats.problems,
            examined=selection.examined,
            passes=self.passes,
            skipped=dict(stats.skipped + selection.counts),
            examples={k: tuple(v) for k, v in stats.examples.items()},
            dropped=tuple(selection.dropped),
            duplicates=tuple(selection.duplicates),
            overlaps=tuple(selection.overlaps),
            contaminated_kept=selection.contaminated_kept,
            benchmarks=() if index is None else index.benchmarks,
        )

    async def _collect(
        self, lower: tuple[int, int] | None, cap: int | None
    ) -> tuple[list[_Candidate], bool]:
        """Read every row once; return the ``cap`` smallest-key problems above ``lower``
        (sorted) and whether more problems lie beyond them.
        """
        heap = _Heap(self.settings.seed, lower, cap, self.stats)
        items = self.source.scan()
        iterator = enumerate(items)
        name = f"{self.source.name}: reading"
        with Progress(None, name, unit="row", enabled=self.settings.progress) as bar:
            try:
                while True:
                    chunk = await anyio.to_thread.run_sync(_take_absorb, iterator, heap.absorb)
                    if not chunk:
                        break
                    bar.advance(chunk)
            finally:
                close = getattr(items, "close", None)
                if close is not None:
                    close()
        candidates = sorted((entry[2] for entry in heap.entries), key=lambda c: (c.key, c.row))
        return candidates, heap.beyond


class _Heap:
    """The ``cap`` smallest-key problems seen so far above ``lower`` (a bounded max-heap)."""

    def __init__(
        self, seed: int, lower: tuple[int, int] | None, cap: int | None, stats: ScanStats
    ) -> None:
        self.seed, self.lower, self.cap, self.stats = seed, lower, cap, stats
        self.counting = stats.recording
        self.entries: list[tuple[int, int, _Candidate]] = []
        self.beyond = False

    def absorb(self, chunk: list[tuple[int, Problem | Skipped]]) -> None:
        stats, heap, lower, cap = self.stats, self.entries, self.lower, self.cap
        for row, item in chunk:
            if self.counting:
                stats.rows += 1
            if not isinstance(item, Problem):
                stats.skip(item)
                continue
            if self.counting:
                stats.problems += 1
            key = sample_key(self.seed, item.id)
            if lower is not None and (key, row) <= lower:
                continue
            entry = (-key, -row, _Candidate(key, row, item))
            if cap is None or len(heap) < cap:
                heapq.heappush(heap, entry)
            elif entry[:2] > heap[0][:2]:
                heapq.heapreplace(heap, entry)
                self.beyond = True
            else:
                self.beyond = True


@attrs.frozen(slots=True)
class _Candidate:
    key: int
    row: int
    problem: Problem


class _Selection:
    """The in-order checks of sampling: decontamination, validation, then dedup."""

    def __init__(
        self,
        *,
        dedup: Deduplicator | None,
        decontaminate: Decontaminator | None,
        remove_contaminated: bool,
    ) -> None:
        self.dedup = dedup
        self.decontaminate = decontaminate
        self.remove_contaminated = remove_contaminated
        self.examined = 0
        self.counts: Counter[str] = Counter()
        self.dropped: list[Skipped] = []
        self.duplicates: list[DuplicatePair] = []
        self.overlaps: list[Overlap] = []
        self.contaminated_kept = 0

    def _drop(self, item: Skipped) -> None:
        self.counts[str(item.reason)] += 1
        self.dropped.append(item)

    async def run(
        self,
        batch: Sequence[_Candidate],
        validate: Validator,
        n: int | None,
        accepted: list[Problem],
    ) -> int:
        """Examine ``batch`` in key order, append survivors to ``accepted``; return how many."""
        index = self.decontaminate
        if index is None:
            found: list[list[Overlap]] = [[] for _ in batch]
        else:
            # n-gram matching is pure CPU: a 512-problem batch takes tens of milliseconds
            found = await anyio.to_thread.run_sync(
                lambda: [index.overlaps(c.problem.id, c.problem.prompt) for c in batch]
            )
        to_validate = [
            c.problem
            for c, hits in zip(batch, found, strict=True)
            if not (hits and self.remove_contaminated)
        ]
        verdicts = list(await validate(to_validate)) if to_validate else []
        if len(verdicts) != len(to_validate):
            raise ProblemSourceError(
                f"validator returned {len(verdicts)} results for {len(to_validate)} problems"
            )
        verdict_of = iter(verdicts)
        kept = 0
        for candidate, hits in zip(batch, found, strict=True):
            if n is not None and len(accepted) >= n:
                break
            problem = candidate.problem
            self.examined += 1
            if hits:
                self.overlaps.extend(hits)
                if self.remove_contaminated:
                    names = sorted({f"{o.benchmark}:{o.benchmark_id}" for o in hits})
                    self._drop(
                        Skipped(
                            reason=SkipReason.CONTAMINATED,
                            detail="overlaps " + ", ".join(names),
                            problem_id=problem.id,
                        )
                    )
                    continue
            verdict = next(verdict_of)
            if verdict is not None:
                self._drop(verdict)
                continue
            if self.dedup is not None:
                pair = self.dedup.check(problem.id, problem.prompt)
                if pair is not None:
                    self.duplicates.append(pair)
                    self._drop(
                        Skipped(
                            reason=SkipReason.DUPLICATE,
                            detail=f"{pair.kind} duplicate of {pair.kept_id}",
                            problem_id=problem.id,
                        )
                    )
                    continue
            if hits:
                self.contaminated_kept += 1
            accepted.append(problem)
            kept += 1
        return kept


def _take_absorb(
    iterator: Iterator[tuple[int, Problem | Skipped]],
    absorb: Callable[[list[tuple[int, Problem | Skipped]]], None],
) -> int:
    # Reading and absorbing in one hop halves the thread switches of a 200,000-row pass.
    chunk = take(iterator, CHUNK)
    absorb(chunk)
    return len(chunk)


def take(iterator: Iterator[Any], size: int) -> list[Any]:
    """Up to ``size`` items from ``iterator``."""
    out = []
    for item in iterator:
        out.append(item)
        if len(out) >= size:
            break
    return out


def _log_report(report: PoolReport) -> None:
    dropped_gold = report.skipped.get(str(SkipReason.INVALID_GOLD), 0)
    no_tests = report.skipped.get(str(SkipReason.NO_TESTS), 0)
    level = logging.WARNING if (report.short or dropped_gold or no_tests) else logging.INFO
    log.log(level, "%s", report.summary())
