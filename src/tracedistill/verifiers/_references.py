"""Reference outputs of function-test problems: computed once in the sandbox, cached on disk.

:class:`ReferenceCache` keeps the decoded outputs of recent problems in memory (bounded by
their size on disk, so that a whole benchmark's stay decoded), reads and writes the JSON files
of the disk cache atomically, computes each problem's key once, and makes concurrent samples of
one problem wait for a single reference run. A reference that failed is remembered, so that a
broken reference solution is not run again for every sample.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import attrs

from tracedistill._jsonl import write_atomic
from tracedistill.records import FunctionTests, Problem
from tracedistill.verifiers import _codec
from tracedistill.verifiers.base import CheckResult

__all__ = ["Reference", "ReferenceCache", "default_cache_dir"]

#: Memory for decoded reference outputs (MBPP+'s 378 take about 7 MB on disk).
_CACHE_BYTES = 256 * 1024 * 1024
#: Problems whose reference keys stay cached.
_KEYS_CACHED = 1024


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/tracedistill/reference-outputs`` (default ``~/.cache``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tracedistill" / "reference-outputs"


@attrs.frozen(slots=True)
class Reference:
    """A problem's expected outputs per group and the reference solution's time per test."""

    base: list[Any]
    plus: list[Any]
    base_time: list[float]
    plus_time: list[float]

    @property
    def cost_s(self) -> float:
        """Seconds the reference solution computed for, all tests together."""
        return sum(self.base_time) + sum(self.plus_time)


Compute = Callable[[], Awaitable["dict[str, Any] | CheckResult"]]


class ReferenceCache:
    """Reference outputs by key: in memory, on disk under ``directory``, else computed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # Decoded references, most recently used last, with their sizes on disk.
        self._memory: OrderedDict[str, tuple[Reference, int]] = OrderedDict()
        self._bytes = 0
        # Per problem object (held, so that its id is not reused): its cache key.
        self._keys: OrderedDict[int, tuple[Problem, str]] = OrderedDict()
        self._locks: dict[str, anyio.Lock] = {}
        self._failures: dict[str, CheckResult] = {}

    def key(self, problem: Problem, fn: FunctionTests, identity: list[Any]) -> str:
        """The cache key of a problem's reference outputs (computed once per problem).

        ``identity`` holds whatever else decides the outputs (logic version, output mode ...).
        """
        known = self._keys.get(id(problem))
        if known is not None:
            self._keys.move_to_end(id(problem))
            return known[1]
        # The codec, not orjson: MBPP+ inputs hold integers beyond 64 bits.
        encoded = _codec.encode(
            [
                *identity,
                fn.reference_solution,
                fn.entry_point,
                list(fn.base_inputs),
                list(fn.plus_inputs),
            ]
        )
        key = hashlib.sha256(json.dumps(encoded).encode()).hexdigest()[:32]
        self._keys[id(problem)] = (problem, key)
        if len(self._keys) > _KEYS_CACHED:
            self._keys.popitem(last=False)
        return key

    async def get(self, key: str, compute: Compute) -> Reference | CheckResult:
        """The reference for ``key``: from memory, from disk, or ``compute()``d and stored.

        ``compute`` returns the raw (encoded) reference, or the CheckResult of its failure,
        which is then returned for this key from now on.
        """
        cached = self._memory.get(key)
        if cached is not None:
            self._memory.move_to_end(key)
            return cached[0]
        failed = self._failures.get(key)
        if failed is not None:
            return failed
        lock = self._locks.setdefault(key, anyio.Lock())
        async with lock:
            cached = self._memory.get(key)
            if cached is not None:
                return cached[0]
            if key in self._failures:
                return self._failures[key]
            path = self.directory / f"{key}.json"
            raw, size = await anyio.to_thread.run_sync(_read, path)
            if raw is None:
                computed = await compute()
                if isinstance(computed, CheckResult):
                    self._failures[key] = computed
                    return computed
                raw = computed
                size = await anyio.to_thread.run_sync(_write, path, raw)
            reference = await anyio.to_thread.run_sync(_decode, raw)
            self._memory[key] = (reference, size)
            self._bytes += size
            while self._bytes > _CACHE_BYTES and len(self._memory) > 1:
                self._bytes -= self._memory.popitem(last=False)[1][1]
            return reference


def _read(path: Path) -> tuple[dict[str, Any] | None, int]:
    """A cached reference and its size in bytes ((None, 0) when absent or unreadable)."""
    try:
        data = path.read_bytes()
        raw: dict[str, Any] = json.loads(data)
        return raw, len(data)
    except (OSError, ValueError):
        return None, 0


def _write(path: Path, raw: dict[str, Any]) -> int:
    """Write a reference atomically and durably; return its size in bytes."""
    # The standard library's json: references hold integers beyond 64 bits.
    return write_atomic(path, json.dumps(raw, separators=(",", ":")).encode())


def _decode(raw: dict[str, Any]) -> Reference:
    return Reference(
        base=[_codec.decode(v) for v in raw["base"]],
        plus=[_codec.decode(v) for v in raw["plus"]],
        base_time=list(raw["base_time"]),
        plus_time=list(raw["plus_time"]),
    )
