"""The embedded default store: a directory of append-only JSONL files.

Layout of a store directory::

    problems.jsonl   one Problem per line
    traces.jsonl     one Trace per line (a response may follow a failure with the same key)
    verdicts.jsonl   one Verdict per line
    .lock            held (flock) by the one process that may write

Records are only ever appended. Opening a store reads every line once to build in-memory
indexes (request key -> byte offset), so ``has`` is a dict lookup and ``get`` one seek. Appending,
torn-line repair and scanning are :class:`tracedistill._jsonl.JsonlFile`'s, shared with the
evaluation log and the training directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from tracedistill import _json
from tracedistill._jsonl import JsonlFile, TornWriteWarning
from tracedistill.errors import (
    RecordError,
    SchemaVersionError,
    StoreCorruptError,
    StoreError,
    UnknownProblemError,
)
from tracedistill.records import (
    SCHEMA_VERSION,
    FinishReason,
    Problem,
    TaskKind,
    Trace,
    Verdict,
    trace_from_stored,
)
from tracedistill.store.base import Durability, TraceFilter, TraceStore, _make_filter

__all__ = ["JsonlTraceStore", "TornWriteWarning"]

logger = logging.getLogger(__name__)

_FILES = ("problems", "traces", "verdicts")


class JsonlTraceStore(TraceStore):
    """A trace store in a directory of append-only JSONL files (the embedded default).

    Args:
        path: the store directory (created if missing).
        durability: when writes are forced to disk (see :class:`Durability`).
        fsync_interval: seconds between fsyncs under ``Durability.INTERVAL``.
        readonly: open without taking the writer lock; writes raise StoreError.

    Only one process may open a store for writing at a time (an flock on ``.lock``). Opening a
    store whose writer was killed mid-write warns (:class:`TornWriteWarning`), moves the torn
    bytes to ``<file>.torn`` and carries on: every acknowledged record is kept.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: Durability | str = Durability.PROCESS,
        fsync_interval: float = 1.0,
        readonly: bool = False,
    ) -> None:
        self.path = Path(path)
        self.durability = Durability(durability)
        if fsync_interval <= 0:
            raise ValueError(f"fsync_interval must be > 0, got {fsync_interval!r}")
        self.fsync_interval = fsync_interval
        self.readonly = readonly
        self._closed = False
        self._lock_fd: int | None = None
        if not readonly:
            self.path.mkdir(parents=True, exist_ok=True)
            self._take_lock()
        elif not self.path.is_dir():
            raise StoreError(f"{self.path}: no trace store here (not a directory)")
        try:
            self._logs = {
                name: JsonlFile(self.path / f"{name}.jsonl", warn=True, readonly=readonly)
                for name in _FILES
            }
            # key -> offset of the trace line that counts; failures are stored as -(offset + 1)
            self._traces: dict[str, int] = {}
            self._problems: dict[str, int] = {}
            self._problem_kind: dict[str, tuple[str, str]] = {}
            self._verdict_ids: set[str] = set()
            self._spend = 0.0
            self._last_fsync = time.monotonic()
            self._fsync_lock = anyio.Lock()
            self._load()
        except BaseException:
            self._release()
            raise

    @classmethod
    async def aopen(cls, path: str | os.PathLike[str], **kwargs: Any) -> JsonlTraceStore:
        """Open a store off the event loop (indexing a large store takes a moment)."""
        return await anyio.to_thread.run_sync(lambda: cls(path, **kwargs))

    # --- opening -----------------------------------------------------------------------------

    def _take_lock(self) -> None:
        lock_path = self.path / ".lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(
                f"{self.path}: another process has this store open for writing; close it first "
                f"or open this one with readonly=True"
            ) from None
        self._lock_fd = fd

    def _release(self) -> None:
        for log in getattr(self, "_logs", {}).values():
            log.close()
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _load(self) -> None:
        log = self._logs["problems"]
        problems, kinds = self._problems, self._problem_kind
        for lineno, offset, rec in log.index(header=_PROBLEM_HEADER):
            if isinstance(rec, tuple):
                pid, kind, source = rec[0].decode(), rec[1].decode(), rec[2].decode()
            else:
                _check_schema(rec, log.path, lineno)
                pid = _field(rec, "id", log.path, lineno)
                kind = _field(rec, "kind", log.path, lineno)
                source = str(rec.get("source", ""))
            if pid not in problems:
                problems[pid] = offset
                kinds[pid] = (kind, source)
        log = self._logs["traces"]
        traces = self._traces
        spend = 0.0
        for lineno, offset, rec in log.index(header=_TRACE_HEADER):
            if isinstance(rec, tuple):
                key = rec[0].decode()
                failed = rec[1] == b"error"
                cost = None if rec[2] == b"null" else float(rec[2])
            else:
                _check_schema(rec, log.path, lineno)
                key = _field(rec, "key", log.path, lineno)
                failed = rec.get("finish_reason") == "error"
                cost = rec.get("cost_usd")
            if cost:
                spend += cost
            current = traces.get(key)
            if current is None or (current < 0 and not failed):
                traces[key] = -(offset + 1) if failed else offset
        self._spend = spend
        log = self._logs["verdicts"]
        for lineno, _offset, rec in log.index():
            assert isinstance(rec, dict)  # no header pattern: every line is parsed
            _check_schema(rec, log.path, lineno)
            self._verdict_ids.add(
                _verdict_id(
                    _field(rec, "trace_key", log.path, lineno),
                    _field(rec, "verifier", log.path, lineno),
                    _field(rec, "verifier_version", log.path, lineno),
                )
            )
        logger.debug(
            "opened %s: %d problems, %d trace keys, %d verdicts",
            self.path,
            len(self._problems),
            len(self._traces),
            len(self._verdict_ids),
        )

    # --- writes ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self.path}: the store is closed")

    def _fsync_due(self) -> bool:
        durability = self.durability
        if durability is Durability.PROCESS:
            return False
        if durability is Durability.ALWAYS:
            return True
        return time.monotonic() - self._last_fsync >= self.fsync_interval

    async def _after_write(self) -> None:
        if not self._fsync_due():
            return
        async with self._fsync_lock:
            self._last_fsync = time.monotonic()
            for log in self._logs.values():
                await anyio.to_thread.run_sync(log.sync)

    async def add_problems(self, problems: Iterable[Problem]) -> int:
        """Store problems not stored yet; return how many were new."""
        self._check_open()
        log = self._logs["problems"]
        new = 0
        batch: list[bytes] = []
        pending: list[Problem] = []
        pending_ids: set[str] = set()
        for problem in problems:
            if problem.id in self._problems or problem.id in pending_ids:
                continue
            batch.append(_json.dumps(problem.to_dict(), newline=True))
            pending.append(problem)
            pending_ids.add(problem.id)
            if len(batch) >= 1000:
                new += self._write_problems(log, batch, pending)
                batch, pending, pending_ids = [], [], set()
        if batch:
            new += self._write_problems(log, batch, pending)
        if new:
            await self._after_write()
        return new

    def _write_problems(self, log: JsonlFile, batch: list[bytes], pending: list[Problem]) -> int:
        # Several problems in one write; the index is updated only after the write succeeded.
        offset = log.append_bytes(b"".join(batch))
        for line, problem in zip(batch, pending, strict=True):
            self._problems[problem.id] = offset
            self._problem_kind[problem.id] = (str(problem.kind), problem.source)
            offset += len(line)
        return len(pending)

    async def add_trace(self, trace: Trace) -> bool:
        """Store a trace unless its key is stored; return whether it was written.

        A failed attempt is stored so its spend is remembered; a later response for the same key
        supersedes it. A failure never supersedes anything.
        """
        written = self._write_trace(trace)
        if written:
            await self._after_write()
        return written

    def add_trace_nowait(self, trace: Trace) -> bool:
        """Store a trace without waiting (see :meth:`TraceStore.add_trace_nowait`).

        Raises:
            anyio.WouldBlock: an fsync is due (``Durability.ALWAYS``, or ``INTERVAL`` once its
                interval passed), or a subclass overrides :meth:`add_trace` (its own steps are
                not skipped); nothing was written.
        """
        fsync = self.durability is not Durability.PROCESS and self._fsync_due()
        if fsync or type(self).add_trace is not _ADD_TRACE:
            raise anyio.WouldBlock
        return self._write_trace(trace)

    def _write_trace(self, trace: Trace) -> bool:
        # Synchronous from the check to the index update: nothing can interrupt it half-way.
        if self._closed:
            self._check_open()
        if trace.problem_id not in self._problems:
            raise UnknownProblemError(
                f"{self.path}: trace {trace.key} is for problem {trace.problem_id!r}, which this "
                f"store does not hold; add the problem first (store.add_problems)"
            )
        key = trace.key
        current = self._traces.get(key)
        ok = trace.finish_reason is not FinishReason.ERROR
        if current is not None and (current >= 0 or not ok):
            return False
        offset = self._logs["traces"].append_bytes(trace.to_jsonl())
        self._traces[key] = offset if ok else -(offset + 1)
        if trace.cost_usd:
            self._spend += trace.cost_usd
        return True

    async def add_traces(self, traces: Iterable[Trace]) -> int:
        """Store many traces in few writes; return how many were written."""
        self._check_open()
        log = self._logs["traces"]
        written = 0
        batch: list[bytes] = []
        # key -> (position in the batch's bytes, ok); one entry per line of the batch
        staged: dict[str, tuple[int, bool]] = {}
        costs = 0.0
        size = 0

        def flush() -> None:
            nonlocal batch, staged, costs, size
            if not batch:
                return
            base = log.append_bytes(b"".join(batch))
            for key, (rel, ok) in staged.items():
                self._traces[key] = base + rel if ok else -(base + rel + 1)
            self._spend += costs
            batch, staged, costs, size = [], {}, 0.0, 0

        for trace in traces:
            if trace.problem_id not in self._problems:
                flush()
                raise UnknownProblemError(
                    f"{self.path}: trace {trace.key} is for problem {trace.problem_id!r}, which "
                    f"this store does not hold; add the problem first (store.add_problems)"
                )
            if trace.key in staged:  # a response superseding a failure staged in this batch
                if staged[trace.key][1] or not trace.ok:
                    continue
                flush()
            current = self._traces.get(trace.key)
            if current is not None and (current >= 0 or not trace.ok):
                continue
            payload = trace.to_jsonl()
            staged[trace.key] = (size, trace.ok)
            batch.append(payload)
            size += len(payload)
            costs += trace.cost_usd or 0.0
            written += 1
            if len(batch) >= 1000:
                flush()
        flush()
        if written:
            await self._after_write()
        return written

    async def add_verdict(self, verdict: Verdict) -> bool:
        """Store a verdict unless one from the same verifier version is stored for the trace."""
        self._check_open()
        if verdict.problem_id not in self._problems:
            raise UnknownProblemError(
                f"{self.path}: verdict for problem {verdict.problem_id!r}, which this store does "
                f"not hold"
            )
        vid = _verdict_id(verdict.trace_key, verdict.verifier, verdict.verifier_version)
        if vid in self._verdict_ids:
            return False
        self._logs["verdicts"].append_bytes(_json.dumps(verdict.to_dict(), newline=True))
        self._verdict_ids.add(vid)
        await self._after_write()
        return True

    def has_verdict(self, trace_key: str, verifier: str, verifier_version: str) -> bool:
        """Whether this verifier version already judged this trace."""
        return _verdict_id(trace_key, verifier, verifier_version) in self._verdict_ids

    # --- reads -------------------------------------------------------------------------------

    def has(self, key: str) -> bool:
        """Whether a response (not a failure) is stored for this request key."""
        offset = self._traces.get(key)
        return offset is not None and offset >= 0

    def has_failure(self, key: str) -> bool:
        """Whether only a failed attempt is stored for this request key."""
        offset = self._traces.get(key)
        return offset is not None and offset < 0

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.has(key)

    def __len__(self) -> int:
        """Number of request keys stored (responses and failures)."""
        return len(self._traces)

    def get(self, key: str) -> Trace | None:
        """Return the stored trace for a request key, or None."""
        offset = self._traces.get(key)
        if offset is None:
            return None
        return Trace.from_dict(self._logs["traces"].read_at(offset if offset >= 0 else -offset - 1))

    def has_problem(self, problem_id: str) -> bool:
        """Whether a problem with this id is stored."""
        return problem_id in self._problems

    def problem(self, problem_id: str) -> Problem | None:
        """Return a stored problem by id, or None."""
        offset = self._problems.get(problem_id)
        if offset is None:
            return None
        return Problem.from_dict(self._logs["problems"].read_at(offset))

    def problems(self, kind: TaskKind | str | None = None) -> Iterator[Problem]:
        """Iterate over stored problems (first record per id), optionally of one kind."""
        wanted = None if kind is None else str(TaskKind(kind))
        for offset, rec in self._logs["problems"].iter_from():
            if self._problems.get(rec["id"]) != offset:
                continue
            if wanted is None or rec.get("kind") == wanted:
                yield _parse(Problem, rec, self._logs["problems"].path)

    def traces(self, where: TraceFilter | None = None, /, **criteria: Any) -> Iterator[Trace]:
        """Iterate over stored traces that match a filter, in the order they were written."""
        flt = _make_filter(where, criteria)
        latest = None
        if flt.correct is not None:
            latest = self._latest_verdicts(flt.verifier, flt.verifier_version)
        kinds = self._problem_kind
        wanted_kind = None if flt.kind is None else str(flt.kind)
        index = self._traces
        path = self._logs["traces"].path
        for offset, rec in self._logs["traces"].iter_from():
            current = index.get(rec["key"])
            failed = rec.get("finish_reason") == "error"
            if current != (-(offset + 1) if failed else offset):
                continue  # superseded failure
            if failed and not flt.include_failed:
                continue
            if not flt.include_truncated and rec.get("finish_reason") == "length":
                continue
            if flt.teacher is not None and rec.get("teacher") != flt.teacher:
                continue
            if flt.model is not None and rec.get("model") != flt.model:
                continue
            if wanted_kind is not None or flt.source is not None:
                kind, source = kinds.get(rec["problem_id"], ("", ""))
                if wanted_kind is not None and kind != wanted_kind:
                    continue
                if flt.source is not None and source != flt.source:
                    continue
            if flt.min_tokens is not None or flt.max_tokens is not None:
                tokens = rec.get("usage", {}).get("completion_tokens", 0)
                if flt.min_tokens is not None and tokens < flt.min_tokens:
                    continue
                if flt.max_tokens is not None and tokens > flt.max_tokens:
                    continue
            if latest is not None and latest.get(rec["key"]) is not flt.correct:
                continue
            try:
                yield trace_from_stored(rec)
            except (KeyError, TypeError, ValueError) as exc:
                raise StoreError(
                    f"{path}: the stored trace {rec.get('key')!r} is malformed ({exc!r}); "
                    f"fix or remove its line"
                ) from None

    def verdicts(
        self, *, trace_key: str | None = None, verifier: str | None = None
    ) -> Iterator[Verdict]:
        """Iterate over stored verdicts in the order they were written."""
        path = self._logs["verdicts"].path
        for _offset, rec in self._logs["verdicts"].iter_from():
            if trace_key is not None and rec.get("trace_key") != trace_key:
                continue
            if verifier is not None and rec.get("verifier") != verifier:
                continue
            yield _parse(Verdict, rec, path)

    def spend_usd(self) -> float:
        """Total spend recorded by every stored trace, failures and superseded ones included."""
        return self._spend

    # --- closing -----------------------------------------------------------------------------

    def flush(self) -> None:
        """Force every written record to disk now (fsync), whatever the durability policy."""
        for log in self._logs.values():
            log.sync()

    def close(self) -> None:
        """Flush (fsync) and close the store and release the writer lock. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if not self.readonly:
            self.flush()
        self._release()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("read-only" if self.readonly else "open")
        return (
            f"<JsonlTraceStore {str(self.path)!r} {state}: {len(self._problems)} problems, "
            f"{len(self._traces)} traces, {len(self._verdict_ids)} verdicts>"
        )


_ADD_TRACE = JsonlTraceStore.add_trace


def _readable_schema(schema: object) -> bool:
    return isinstance(schema, int) and not isinstance(schema, bool) and 0 < schema <= SCHEMA_VERSION


def _check_schema(rec: dict[str, Any], path: Path, lineno: int) -> None:
    schema = rec.get("schema")
    if schema != SCHEMA_VERSION and not _readable_schema(schema):
        raise SchemaVersionError(path, lineno, schema, SCHEMA_VERSION)


def _verdict_id(trace_key: str, verifier: str, version: str) -> str:
    return f"{trace_key}\x1f{verifier}\x1f{version}"


# What Problem.to_dict and Trace.to_dict write first, matched over whole lines: lets opening a
# store index records with one regex pass instead of parsing each line. A line that does not
# match (a string with escapes, a torn or corrupt line) is fully parsed instead.
_PROBLEM_HEADER = re.compile(
    rb'^\{"schema":1,"id":"([^"\\\n]+)","kind":"([a-z]+)","source":"([^"\\\n]*)",[^\n]*\}\n',
    re.MULTILINE,
)
_TRACE_HEADER = re.compile(
    rb'^\{"schema":1,"key":"([^"\\\n]+)","finish_reason":"([a-z_]+)",'
    rb'"cost_usd":(null|-?[0-9][0-9.eE+-]*),"problem_id":[^\n]*\}\n',
    re.MULTILINE,
)


def _field(rec: dict[str, Any], name: str, path: Path, lineno: int) -> str:
    value = rec.get(name)
    if not isinstance(value, str) or not value:
        raise StoreCorruptError(path, lineno, f"record has no {name!r}")
    return value


_R = TypeVar("_R", Problem, Trace, Verdict)


def _parse(cls: type[_R], rec: dict[str, Any], path: Path) -> _R:
    try:
        return cls.from_dict(rec)
    except RecordError as exc:
        raise StoreError(f"{path}: a stored record is invalid: {exc}") from exc
