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
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import anyio
import anyio.to_thread

from tracedistill.errors import ConfigurationError
from tracedistill.problems.dedup import Decontaminator
from tracedistill.problems.filters import (
    ProblemFilter,
    by_difficulty,
    by_length,
    by_source,
    where,
)
from tracedistill.problems.pool import (
    PoolReport,
    ProblemPool,
    RowParser,
    ScanItem,
    ScanStats,
    Skipped,
    SkipReason,
    Validator,
)
from tracedistill.problems.sampling import CHUNK, Sampling, draw_pool, sample_key, take
from tracedistill.records import Problem, TaskKind

# Filters, pools, reports and sampling keys live in their own modules (filters, pool,
# sampling); they are re-exported here, where they were first defined.
__all__ = [
    "ConcatSource",
    "FilteredSource",
    "PoolReport",
    "ProblemFilter",
    "ProblemPool",
    "ProblemSource",
    "RowParser",
    "RowSource",
    "ScanItem",
    "SkipReason",
    "Skipped",
    "Validator",
    "by_difficulty",
    "by_length",
    "by_source",
    "concat",
    "sample_key",
    "str_tuple",
    "where",
]

log = logging.getLogger(__name__)


def str_tuple(values: Iterable[str]) -> tuple[str, ...]:
    """Convert an iterable of names to a tuple (refusing a bare string, a common slip)."""
    if isinstance(values, str):
        raise ConfigurationError(f"expected a sequence of names, got the string {values!r}")
    return tuple(values)


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
        stats = ScanStats()
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
                chunk = await anyio.to_thread.run_sync(take, iterator, CHUNK)
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
        settings = Sampling(
            n=n,
            seed=seed,
            dedup=dedup,
            decontaminate=decontaminate,
            remove_contaminated=remove_contaminated,
            batch_size=batch_size,
            progress=progress,
        )
        return await draw_pool(self, settings)


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
