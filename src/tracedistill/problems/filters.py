"""Problem filters: named predicates over problems, combined with ``&``, ``|`` and ``~``."""

from __future__ import annotations

from collections.abc import Callable

import attrs

from tracedistill.errors import ConfigurationError
from tracedistill.records import Problem

__all__ = ["ProblemFilter", "by_difficulty", "by_length", "by_source", "where"]


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
