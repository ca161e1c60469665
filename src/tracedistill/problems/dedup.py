"""Duplicate removal and benchmark decontamination by word n-grams.

Two texts are *exact* duplicates when they are equal, and *normalized* duplicates when they are
equal after lowercasing and collapsing whitespace. A training text *overlaps* a benchmark text
when they share a word n-gram (8 words by default) after the same normalization: the protocol
open-r1 uses to decontaminate training prompts against MATH-500 and other benchmarks. A text
shorter than ``n`` words overlaps only a text whose normalized form is identical.

This module depends on nothing but the standard library and attrs, so the evaluation package can
use it to compare training problems with benchmark prompts.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from tracedistill.problems.rows import iter_jsonl

__all__ = [
    "DEFAULT_NGRAM",
    "Decontaminator",
    "Deduplicator",
    "DuplicateKind",
    "DuplicatePair",
    "Overlap",
    "dedup",
    "ngram_overlap",
    "normalize_text",
    "read_benchmark_texts",
    "word_ngrams",
]

#: The n-gram size of the open-r1 decontamination protocol.
DEFAULT_NGRAM = 8


def normalize_text(text: str) -> str:
    """Lowercase ``text`` and collapse every run of whitespace to one space (ends stripped)."""
    return " ".join(text.lower().split())


def word_ngrams(text: str, n: int = DEFAULT_NGRAM) -> set[str]:
    """Return the set of word ``n``-grams of the normalized ``text``.

    A text of fewer than ``n`` words (but at least one) yields its whole normalized form as its
    only n-gram, so that a short benchmark problem copied verbatim is still caught.
    """
    if n < 1:
        raise ValueError(f"n-gram size must be >= 1, got {n}")
    words = normalize_text(text).split()
    if not words:
        return set()
    if len(words) < n:
        return {" ".join(words)}
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def _digest(text: str) -> bytes:
    # 128-bit digests: a 200,000-row pool keeps two small keys per row instead of two texts.
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


# --- duplicates ------------------------------------------------------------------------------


class DuplicateKind(enum.StrEnum):
    """Why a text was judged a duplicate of an earlier one."""

    ID = "id"  # same problem id: the store would conflate the two
    EXACT = "exact"  # identical text
    NORMALIZED = "normalized"  # identical after lowercasing and collapsing whitespace


@attrs.frozen(slots=True)
class DuplicatePair:
    """A dropped item and the earlier item it duplicates."""

    kept_id: str
    dropped_id: str
    kind: DuplicateKind

    def to_dict(self) -> dict[str, str]:
        """Return a JSON-compatible dict."""
        return {"kept_id": self.kept_id, "dropped_id": self.dropped_id, "kind": str(self.kind)}


class Deduplicator:
    """Remembers the texts seen so far and says whether a new one duplicates an earlier one.

    The first occurrence is kept. Memory is two 16-byte digests and one id per kept item.
    """

    __slots__ = ("_exact", "_ids", "_normalized")

    def __init__(self) -> None:
        self._ids: set[str] = set()
        self._exact: dict[bytes, str] = {}
        self._normalized: dict[bytes, str] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def check(self, item_id: str, text: str) -> DuplicatePair | None:
        """Return the duplicate pair if ``text`` (or ``item_id``) was seen, else remember it."""
        if item_id in self._ids:
            return DuplicatePair(item_id, item_id, DuplicateKind.ID)
        exact = _digest(text)
        kept = self._exact.get(exact)
        if kept is not None:
            return DuplicatePair(kept, item_id, DuplicateKind.EXACT)
        normalized = _digest(normalize_text(text))
        kept = self._normalized.get(normalized)
        if kept is not None:
            return DuplicatePair(kept, item_id, DuplicateKind.NORMALIZED)
        self._ids.add(item_id)
        self._exact[exact] = item_id
        self._normalized[normalized] = item_id
        return None


def dedup(
    items: Iterable[tuple[str, str]], duplicates: list[DuplicatePair] | None = None
) -> Iterator[tuple[str, str]]:
    """Yield the ``(id, text)`` pairs of ``items`` that duplicate no earlier pair, lazily.

    Every dropped pair is appended to ``duplicates`` when a list is given.
    """
    seen = Deduplicator()
    for item_id, text in items:
        pair = seen.check(item_id, text)
        if pair is None:
            yield item_id, text
        elif duplicates is not None:
            duplicates.append(pair)


# --- decontamination -------------------------------------------------------------------------


@attrs.frozen(slots=True, kw_only=True)
class Overlap:
    """A training item that shares word n-grams with a benchmark item."""

    problem_id: str
    benchmark: str
    benchmark_id: str
    shared: int  # how many distinct n-grams the two share
    ngram: str  # one shared n-gram, as evidence

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict."""
        return {
            "problem_id": self.problem_id,
            "benchmark": self.benchmark,
            "benchmark_id": self.benchmark_id,
            "shared": self.shared,
            "ngram": self.ngram,
        }


BenchmarkTexts = Iterable[str] | Iterable[tuple[str, str]] | Mapping[str, str]


def _pairs(texts: BenchmarkTexts) -> Iterator[tuple[str, str]]:
    if isinstance(texts, Mapping):
        yield from ((str(k), v) for k, v in texts.items())
        return
    for index, item in enumerate(texts):
        if isinstance(item, str):
            yield str(index), item
        else:
            key, text = item
            yield str(key), text


class Decontaminator:
    """An index of benchmark n-grams that finds the benchmark items a text overlaps.

    Args:
        benchmarks: benchmark name -> its texts: an iterable of texts (ids are positions), of
            ``(id, text)`` pairs, or a mapping id -> text.
        n: the n-gram size in words.
    """

    def __init__(self, benchmarks: Mapping[str, BenchmarkTexts], *, n: int = DEFAULT_NGRAM) -> None:
        if n < 1:
            raise ValueError(f"n-gram size must be >= 1, got {n}")
        self.n = n
        self._index: dict[str, list[tuple[str, str]]] = {}
        self.sizes: dict[str, int] = {}
        for name, texts in benchmarks.items():
            count = 0
            for bench_id, text in _pairs(texts):
                count += 1
                for gram in word_ngrams(text, n):
                    self._index.setdefault(gram, []).append((name, bench_id))
            self.sizes[name] = count

    @classmethod
    def from_texts(
        cls, name: str, texts: BenchmarkTexts, *, n: int = DEFAULT_NGRAM
    ) -> Decontaminator:
        """Build an index of one benchmark."""
        return cls({name: texts}, n=n)

    @property
    def benchmarks(self) -> tuple[str, ...]:
        """The names of the indexed benchmarks."""
        return tuple(self.sizes)

    def overlaps(self, problem_id: str, text: str) -> list[Overlap]:
        """Return every benchmark item ``text`` shares an n-gram with (empty when clean)."""
        hits: dict[tuple[str, str], list[str]] = {}
        index = self._index
        for gram in word_ngrams(text, self.n):
            owners = index.get(gram)
            if owners is None:
                continue
            for owner in owners:
                hits.setdefault(owner, []).append(gram)
        return [
            Overlap(
                problem_id=problem_id,
                benchmark=name,
                benchmark_id=bench_id,
                shared=len(grams),
                ngram=min(grams),
            )
            for (name, bench_id), grams in sorted(hits.items())
        ]

    def is_contaminated(self, text: str) -> bool:
        """Whether ``text`` shares any n-gram with any benchmark item."""
        index = self._index
        return any(gram in index for gram in word_ngrams(text, self.n))


def ngram_overlap(
    train: Iterable[tuple[str, str]],
    benchmark: BenchmarkTexts,
    *,
    n: int = DEFAULT_NGRAM,
    benchmark_name: str = "benchmark",
) -> list[Overlap]:
    """Return every (training item, benchmark item) pair that shares a word ``n``-gram.

    ``train`` yields ``(id, text)`` pairs and is read lazily, once.
    """
    index = Decontaminator({benchmark_name: benchmark}, n=n)
    found: list[Overlap] = []
    for item_id, text in train:
        found.extend(index.overlaps(item_id, text))
    return found


def read_benchmark_texts(
    path: str | Path, *, text_field: str = "problem", id_field: str | None = None
) -> dict[str, str]:
    """Read benchmark texts from a JSONL file (for example MATH-500: ``problem``, ``unique_id``).

    Returns id -> text; ids are ``id_field`` values when given, else line numbers from 0.
    Integers beyond 64 bits are kept exact.
    """
    out: dict[str, str] = {}
    for number, row in enumerate(iter_jsonl(path), 1):
        try:
            text = row[text_field]
        except KeyError:
            raise ValueError(f"{path}: row {number} has no field {text_field!r}") from None
        key = str(row[id_field]) if id_field else str(len(out))
        out[key] = str(text)
    return out
