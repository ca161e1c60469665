"""The ProblemSource interface: lazy problem pools, filters, reproducible samples and reports.

A source turns rows (of a Hugging Face dataset or local files) into :class:`Problem` records,
lazily. Rows that cannot become a verifiable problem are never silently kept: each is a
:class:`Skipped` item with a reason, counted and reported.

``await source.sample(n, seed)`` draws a reproducible pool: every problem gets a key hashed
from ``seed`` and its id, and the pool is the ``n`` problems with the smallest keys among
those that survive deduplication, decontamination and validation (the gold-answer check of math
sources). The same seed on the same rows gives the same pool, and the sample never holds more
than about ``n`` problems in memory whatever the size of the source.
"""

from __future__ import annotations

import abc
import contextlib
import enum
import hashlib
import heapq
import logging
from collections import Counter
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import Any, TypeAlias, overload

import anyio
import anyio.to_thread
import attrs

from tracedistill._progress import Progress
from tracedistill.errors import ConfigurationError, ProblemSourceError
from tracedistill.problems.dedup import Decontaminator, Deduplicator, DuplicatePair, Overlap
from tracedistill.records import Problem, TaskKind

__all__ = [
    "ConcatSource",
    "FilteredSource",
    "PoolReport",
    "ProblemFilter",
    "ProblemPool",
    "ProblemSource",
    "RowParser",
    "RowSource",
    "SkipReason",
    "Skipped",
    "Validator",
    "by_difficulty",
    "by_length",
    "by_source",
    "concat",
    "sample_key",
    "where",
]

log = logging.getLogger(__name__)

_CHUNK = 2048  # rows handed to a worker thread at a time: large enough to amortize the hop
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


def str_tuple(values: Iterable[str]) -> tuple[str, ...]:
    """Convert an iterable of names to a tuple (refusing a bare string, a common slip)."""
    if isinstance(values, str):
        raise ConfigurationError(f"expected a sequence of names, got the string {values!r}")
    return tuple(values)


def sample_key(seed: int, problem_id: str) -> int:
    """Return the 64-bit sampling key of a problem: the pool takes the smallest keys."""
    digest = hashlib.blake2b(f"{seed}\x00{problem_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


# --- filters ---------------------------------------------------------------------------------


@attrs.frozen(slots=True)
class ProblemFilter:
    """A named predicate over problems. Combine with ``&``, ``|`` and ``~``."""

    name: str
    predicate: Callable[[Problem], bool] = attrs.field(repr=False)

    def __call__(self, problem: Problem) -> bool:
        """Whether ``problem`` passes."""
        return bool(self.predicate(problem))

    def __and__(self, other: ProblemFilter) -> ProblemFilter:
        return ProblemFilter(f"({self.name} & {other.name})", lambda p: self(p) and other(p))

    def __or__(self, other: ProblemFilter) -> ProblemFilter:
        return ProblemFilter(f"({self.name} | {other.name})", lambda p: self(p) or other(p))

    def __invert__(self) -> ProblemFilter:
        return ProblemFilter(f"~{self.name}", lambda p: not self(p))


def where(predicate: Callable[[Problem], bool], name: str | None = None) -> ProblemFilter:
    """Make a filter from any predicate (the name appears in reports)."""
    return ProblemFilter(name or str(getattr(predicate, "__name__", "where")), predicate)


def _norm_label(value: object) -> str:
    return str(value).strip().lower()


def by_difficulty(
    *levels: str | int,
    min_level: float | None = None,
    max_level: float | None = None,
    field: str = "difficulty",
) -> ProblemFilter:
    """Keep problems whose ``metadata[field]`` is one of ``levels`` (case-insensitive), or,
    with ``min_level``/``max_level``, a number in that closed range. Problems without the
    field are dropped.
    """
    if not levels and min_level is None and max_level is None:
        raise ConfigurationError("by_difficulty needs levels or a min_level/max_level range")
    wanted = {_norm_label(level) for level in levels}

    def keep(problem: Problem) -> bool:
        value = problem.metadata.get(field)
        if value is None:
            return False
        if wanted and _norm_label(value) in wanted:
            return True
        if min_level is None and max_level is None:
            return False
        try:
            number = float(value)
        except (TypeError, ValueError):
            return False
        return (min_level is None or number >= min_level) and (
            max_level is None or number <= max_level
        )

    parts = [*(str(level) for level in levels)]
    if min_level is not None or max_level is not None:
        parts.append(f"{min_level}..{max_level}")
    return ProblemFilter(f"difficulty in {{{', '.join(parts)}}}", keep)


def by_source(*sources: str) -> ProblemFilter:
    """Keep problems whose ``source`` is one of ``sources`` (case-insensitive)."""
    if not sources:
        raise ConfigurationError("by_source needs at least one source name")
    wanted = {_norm_label(s) for s in sources}
    return ProblemFilter(
        f"source in {{{', '.join(sources)}}}", lambda p: _norm_label(p.source) in wanted
    )


def by_length(
    min_length: int | None = None,
    max_length: int | None = None,
    *,
    count: Callable[[str], int] | None = None,
    unit: str = "chars",
) -> ProblemFilter:
    """Keep problems whose prompt length is within the closed range.

    Length is in characters by default; pass ``count`` (for example a tokenizer's
    ``lambda s: len(tok.encode(s))``) and a ``unit`` name to measure otherwise.
    """
    if min_length is None and max_length is None:
        raise ConfigurationError("by_length needs min_length or max_length")
    measure = count or len

    def keep(problem: Problem) -> bool:
        size = measure(problem.prompt)
        return (min_length is None or size >= min_length) and (
            max_length is None or size <= max_length
        )

    return ProblemFilter(f"length {min_length}..{max_length} {unit}", keep)


# --- reports and pools -----------------------------------------------------------------------


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


class _ScanStats:
    """Counters of one scan; examples are kept only on the first pass."""

    def __init__(self) -> None:
        self.rows = 0
        self.problems = 0
        self.skipped: Counter[str] = Counter()
        self.examples: dict[str, list[Skipped]] = {}
        self.recording = True

    def skip(self, item: Skipped) -> None:
        if not self.recording:
            return
        self.skipped[str(item.reason)] += 1
        examples = self.examples.setdefault(str(item.reason), [])
        if len(examples) < _EXAMPLES:
            examples.append(item)


async def _accept_all(problems: Sequence[Problem]) -> list[Skipped | None]:
    return [None] * len(problems)


# --- the interface ---------------------------------------------------------------------------


class ProblemSource(abc.ABC):
    """A lazily read pool of verifiable problems.

    Subclasses implement :meth:`scan`; they may override :meth:`validation` to check problems
    in batches (the math sources check gold answers there).
    """

    #: Short dataset name; prefixes the ids of problems that carry their own id.
    name: str
    #: The kind of problems this source yields.
    kind: TaskKind

    @abc.abstractmethod
    def scan(self) -> Iterator[Problem | Skipped]:
        """Yield every row in source order: a Problem, or a Skipped item saying why not."""

    def validation(self) -> contextlib.AbstractAsyncContextManager[Validator]:
        """An async context that provides the batch validator used while sampling.

        The default keeps every problem. Override to check what is too costly to check for
        every row (the math sources parse gold answers here, in worker processes).
        """
        return contextlib.nullcontext(_accept_all)

    # --- iteration ---

    def __iter__(self) -> Iterator[Problem]:
        """Yield the problems of every readable row (no validation, dedup or sampling)."""
        stats = _ScanStats()
        for item in self.scan():
            if isinstance(item, Problem):
                yield item
            else:
                stats.skip(item)
        if stats.skipped:
            log.info("%s: skipped %s", self.name, dict(stats.skipped))

    async def __aiter__(self) -> AsyncIterator[Problem]:
        """As :meth:`__iter__`, reading rows in a worker thread so the event loop never blocks."""
        async for chunk in self._chunks():
            for item in chunk:
                if isinstance(item, Problem):
                    yield item

    async def _chunks(self) -> AsyncIterator[list[Problem | Skipped]]:
        iterator = self.scan()
        try:
            while True:
                chunk = await anyio.to_thread.run_sync(_take, iterator, _CHUNK)
                if not chunk:
                    return
                yield chunk
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def filter(self, *filters: ProblemFilter | Callable[[Problem], bool]) -> ProblemSource:
        """Return this source restricted to problems that pass every filter."""
        wrapped = tuple(f if isinstance(f, ProblemFilter) else where(f) for f in filters)
        return FilteredSource(self, wrapped)

    # --- sampling ---

    async def sample(
        self,
        n: int | None,
        seed: int = 0,
        *,
        dedup: bool = True,
        decontaminate: Decontaminator | None = None,
        remove_contaminated: bool = True,
        batch_size: int = 512,
        progress: bool | None = None,
    ) -> ProblemPool:
        """Draw a reproducible pool of ``n`` problems (``None``: every usable problem, shuffled).

        Args:
            n: pool size; a source with fewer usable problems gives them all and a report whose
                ``short`` is true.
            seed: the same seed on the same rows gives the same pool, in the same order.
            dedup: drop problems whose id, prompt, or lowercased whitespace-collapsed prompt
                equals one already in the pool.
            decontaminate: an index of benchmark texts; problems sharing a word n-gram with one
                are reported, and dropped when ``remove_contaminated``.
            remove_contaminated: drop (True) or only report (False) contaminated problems.
            batch_size: problems validated at a time.
            progress: show progress bars (default: on unless ``TRACEDISTILL_PROGRESS=0``).
        """
        if n is not None and n < 0:
            raise ConfigurationError(f"sample size must be >= 0 or None, got {n}")
        if batch_size < 1:
            raise ConfigurationError(f"batch_size must be >= 1, got {batch_size}")
        selection = _Selection(
            dedup=Deduplicator() if dedup else None,
            decontaminate=decontaminate,
            remove_contaminated=remove_contaminated,
        )
        stats = _ScanStats()
        accepted: list[Problem] = []
        lower: tuple[int, int] | None = None
        passes = 0
        margin = 64 if n is None else max(64, n // 10)
        async with self.validation() as validate:
            while n is None or len(accepted) < n:
                passes += 1
                cap = None if n is None else n - len(accepted) + margin
                candidates, more = await self._collect(seed, lower, cap, stats, progress)
                stats.recording = False
                with Progress(
                    n if n is not None else len(candidates),
                    f"{self.name}: selecting",
                    unit="problem",
                    enabled=progress,
                ) as bar:
                    bar.advance(len(accepted))
                    for start in range(0, len(candidates), batch_size):
                        batch = candidates[start : start + batch_size]
                        kept = await selection.run(batch, validate, n, accepted)
                        bar.advance(kept, dropped=len(selection.dropped))
                        if n is not None and len(accepted) >= n:
                            break
                if not more or not candidates:
                    break
                last = candidates[-1]
                lower = (last.key, last.row)
                margin *= 4
        report = PoolReport(
            source=self.name,
            seed=seed,
            requested=n,
            selected=len(accepted),
            rows=stats.rows,
            problems=stats.problems,
            examined=selection.examined,
            passes=passes,
            skipped=dict(stats.skipped + selection.counts),
            examples={k: tuple(v) for k, v in stats.examples.items()},
            dropped=tuple(selection.dropped),
            duplicates=tuple(selection.duplicates),
            overlaps=tuple(selection.overlaps),
            contaminated_kept=selection.contaminated_kept,
            benchmarks=() if decontaminate is None else decontaminate.benchmarks,
        )
        _log_report(report)
        return ProblemPool(accepted, report)

    async def _collect(
        self,
        seed: int,
        lower: tuple[int, int] | None,
        cap: int | None,
        stats: _ScanStats,
        progress: bool | None,
    ) -> tuple[list[_Candidate], bool]:
        """Read every row once; return the ``cap`` smallest-key problems above ``lower``
        (sorted) and whether more problems lie beyond them.
        """
        heap: list[tuple[int, int, _Candidate]] = []
        beyond = False
        counting = stats.recording

        def absorb(chunk: list[tuple[int, Problem | Skipped]]) -> None:
            nonlocal beyond
            for row, item in chunk:
                if counting:
                    stats.rows += 1
                if not isinstance(item, Problem):
                    stats.skip(item)
                    continue
                if counting:
                    stats.problems += 1
                key = sample_key(seed, item.id)
                if lower is not None and (key, row) <= lower:
                    continue
                entry = (-key, -row, _Candidate(key, row, item))
                if cap is None or len(heap) < cap:
                    heapq.heappush(heap, entry)
                elif entry[:2] > heap[0][:2]:
                    heapq.heapreplace(heap, entry)
                    beyond = True
                else:
                    beyond = True

        items = self.scan()
        iterator = enumerate(items)
        with Progress(None, f"{self.name}: reading", unit="row", enabled=progress) as bar:
            try:
                while True:
                    chunk = await anyio.to_thread.run_sync(_take_absorb, iterator, absorb)
                    if not chunk:
                        break
                    bar.advance(chunk)
            finally:
                close = getattr(items, "close", None)
                if close is not None:
                    close()
        candidates = sorted((entry[2] for entry in heap), key=lambda c: (c.key, c.row))
        return candidates, beyond


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
    chunk = _take(iterator, _CHUNK)
    absorb(chunk)
    return len(chunk)


def _take(iterator: Iterator[Any], size: int) -> list[Any]:
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


# --- composition -----------------------------------------------------------------------------


class FilteredSource(ProblemSource):
    """A source restricted by filters; filtered problems are reported as ``filtered``."""

    def __init__(self, inner: ProblemSource, filters: Iterable[ProblemFilter]) -> None:
        combined = tuple(filters)
        if isinstance(inner, FilteredSource):
            combined = (*inner.filters, *combined)
            inner = inner.inner
        self.inner: ProblemSource = inner
        self.filters: tuple[ProblemFilter, ...] = combined
        self.name = inner.name
        self.kind = inner.kind

    def scan(self) -> Iterator[Problem | Skipped]:
        """Yield the inner source's items, filtered problems turned into Skipped items."""
        for item in self.inner.scan():
            if isinstance(item, Problem):
                for check in self.filters:
                    if not check(item):
                        row = item.metadata.get("row")
                        item = Skipped(
                            reason=SkipReason.FILTERED,
                            detail=check.name,
                            row=row if isinstance(row, int) else None,
                            problem_id=item.id,
                        )
                        break
            yield item

    def validation(self) -> contextlib.AbstractAsyncContextManager[Validator]:
        """The inner source's validation."""
        return self.inner.validation()


class ConcatSource(ProblemSource):
    """Several sources read one after the other, as one pool (for example TACO + CodeContests).

    Problems keep their sources' ids, so a problem is the same whichever mix it is drawn from;
    each problem is validated by the source it came from.
    """

    def __init__(self, sources: Sequence[ProblemSource], *, name: str | None = None) -> None:
        if not sources:
            raise ConfigurationError("concat needs at least one source")
        kinds = {s.kind for s in sources}
        if len(kinds) > 1:
            raise ConfigurationError(
                f"cannot mix {sorted(map(str, kinds))} problems in one source; sample each "
                "kind on its own"
            )
        self.sources = tuple(sources)
        self.name = name or "+".join(s.name for s in sources)
        self.kind = sources[0].kind
        self._owner: dict[str, int] = {}

    def scan(self) -> Iterator[Problem | Skipped]:
        """Yield every item of each source in turn."""
        for position, source in enumerate(self.sources):
            for item in source.scan():
                if isinstance(item, Problem):
                    self._owner.setdefault(item.id, position)
                yield item

    def validation(self) -> contextlib.AbstractAsyncContextManager[Validator]:
        """Each source's validation, applied to the problems that came from it."""
        return self._validation()

    @contextlib.asynccontextmanager
    async def _validation(self) -> AsyncIterator[Validator]:
        async with contextlib.AsyncExitStack() as stack:
            validators = [await stack.enter_async_context(s.validation()) for s in self.sources]

            async def validate(problems: Sequence[Problem]) -> list[Skipped | None]:
                groups: dict[int, list[int]] = {}
                for slot, problem in enumerate(problems):
                    groups.setdefault(self._owner.get(problem.id, 0), []).append(slot)
                out: list[Skipped | None] = [None] * len(problems)
                for position, slots in groups.items():
                    verdicts = await validators[position]([problems[i] for i in slots])
                    for slot, verdict in zip(slots, verdicts, strict=True):
                        out[slot] = verdict
                return out

            yield validate


def concat(*sources: ProblemSource, name: str | None = None) -> ProblemSource:
    """Read several sources of the same kind as one (see :class:`ConcatSource`)."""
    return ConcatSource(sources, name=name)


class RowSource(ProblemSource):
    """A source that parses the rows of a reader one by one.

    Args:
        rows: anything iterable again and again over dict rows (see ``FileRows``/``HubRows``).
        parser: turns a row and its position into a Problem or a Skipped item.
        name: short dataset name.
        kind: the kind of problems.
    """

    def __init__(
        self, rows: Iterable[Mapping[str, Any]], parser: RowParser, *, name: str, kind: TaskKind
    ) -> None:
        if not name:
            raise ConfigurationError("a problem source needs a non-empty name")
        self.rows = rows
        self.parser = parser
        self.name = name
        self.kind = TaskKind(kind)

    def scan(self) -> Iterator[Problem | Skipped]:
        """Yield each row parsed, in row order."""
        parser = self.parser
        for index, row in enumerate(self.rows):
            try:
                yield parser(row, index)
            except (ValueError, TypeError, KeyError) as exc:
                yield Skipped(
                    reason=SkipReason.INVALID_ROW, detail=f"{type(exc).__name__}: {exc}", row=index
                )

    def __repr__(self) -> str:
        where_ = getattr(self.rows, "description", type(self.rows).__name__)
        return f"{type(self).__name__}({self.name!r}, {where_})"
