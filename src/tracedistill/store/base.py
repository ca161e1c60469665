"""The TraceStore interface: where problems, traces and verdicts live, and how they are queried."""

from __future__ import annotations

import abc
import enum
import statistics
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import attrs

from tracedistill import _json
from tracedistill._jsonl import atomic_path
from tracedistill.errors import RecordError
from tracedistill.records import (
    FinishReason,
    Message,
    Problem,
    ReasoningKind,
    TaskKind,
    Trace,
    Verdict,
    split_completion,
)

__all__ = ["Durability", "StoreStats", "TraceFilter", "TraceStore"]


class Durability(enum.StrEnum):
    """When a written record is forced to disk.

    - ``PROCESS`` (default): each record is handed to the operating system before the write
      returns. It survives the writing process being killed (SIGKILL, OOM, Ctrl-C) but not a
      power loss or kernel crash.
    - ``INTERVAL``: as ``PROCESS``, plus an ``fsync`` at most every ``fsync_interval`` seconds;
      a power loss can lose the records of the last interval.
    - ``ALWAYS``: ``fsync`` after every write before it returns (slow: one disk flush a record).
    """

    PROCESS = "process"
    INTERVAL = "interval"
    ALWAYS = "always"


@attrs.frozen(slots=True, kw_only=True)
class TraceFilter:
    """Which traces a query selects. Every criterion left at its default selects everything.

    ``correct`` selects by verdict: True for traces with a passing verdict, False for traces
    with a failing one, None for all. Verdicts are those of ``verifier`` (and
    ``verifier_version`` when given); when a trace has several, the most recent counts.
    """

    teacher: str | None = None
    model: str | None = None
    kind: TaskKind | None = attrs.field(default=None, converter=attrs.converters.optional(TaskKind))
    source: str | None = None
    correct: bool | None = None
    verifier: str | None = None
    verifier_version: str | None = None
    min_tokens: int | None = None
    max_tokens: int | None = None
    include_failed: bool = False
    include_truncated: bool = True


@attrs.frozen(slots=True, kw_only=True)
class StoreStats:
    """Summary statistics of the traces a filter selects."""

    count: int
    failed: int
    truncated: int
    verified: int
    passed: int
    mean_tokens: float | None
    median_tokens: float | None
    spend_usd: float

    @property
    def pass_rate(self) -> float | None:
        """Passed over verified traces (None when nothing is verified)."""
        return self.passed / self.verified if self.verified else None

    @property
    def truncation_rate(self) -> float | None:
        """Truncated over answered traces (None when there are none)."""
        return self.truncated / self.count if self.count else None


class TraceStore(abc.ABC):
    """Durable home of problems, traces and verdicts.

    Writes are idempotent: a trace whose request key is stored is not stored again (except that
    a response supersedes a stored failure), and a verdict is stored once per trace, verifier and
    verifier version, so re-verifying never rewrites traces and two verifier versions can be
    kept side by side. Writes are async and serialized; reads are synchronous and cheap.
    """

    # --- writes ----------------------------------------------------------------------------

    @abc.abstractmethod
    async def add_problems(self, problems: Iterable[Problem]) -> int:
        """Store problems not stored yet; return how many were new."""

    @abc.abstractmethod
    async def add_trace(self, trace: Trace) -> bool:
        """Store a trace unless its key is stored; return whether it was written.

        Raises:
            UnknownProblemError: the trace's problem is not in the store.
        """

    def add_trace_nowait(self, trace: Trace) -> bool:
        """Store a trace as :meth:`add_trace` does, without waiting, when this store can now.

        A write that never waits cannot be interrupted half-way by a cancellation, so a caller
        that must not lose a paid response (the generation engine) tries this first and shields
        :meth:`add_trace` only when the store has to wait. The default always has to.

        Raises:
            anyio.WouldBlock: storing it now needs a wait (an fsync, a remote write); nothing
                was written: call :meth:`add_trace`.
            UnknownProblemError: the trace's problem is not in the store.
        """
        raise anyio.WouldBlock

    @abc.abstractmethod
    async def add_verdict(self, verdict: Verdict) -> bool:
        """Store a verdict unless one from the same verifier version is stored for the trace."""

    async def add_traces(self, traces: Iterable[Trace]) -> int:
        """Store many traces; return how many were written."""
        written = 0
        for trace in traces:
            written += await self.add_trace(trace)
        return written

    async def add_verdicts(self, verdicts: Iterable[Verdict]) -> int:
        """Store many verdicts; return how many were written."""
        written = 0
        for verdict in verdicts:
            written += await self.add_verdict(verdict)
        return written

    # --- point reads -----------------------------------------------------------------------

    @abc.abstractmethod
    def has(self, key: str) -> bool:
        """Whether a response (not a failure) is stored for this request key."""

    @abc.abstractmethod
    def has_failure(self, key: str) -> bool:
        """Whether only a failed attempt is stored for this request key."""

    @abc.abstractmethod
    def get(self, key: str) -> Trace | None:
        """Return the stored trace for a request key, or None."""

    @abc.abstractmethod
    def problem(self, problem_id: str) -> Problem | None:
        """Return a stored problem by id, or None."""

    @abc.abstractmethod
    def has_problem(self, problem_id: str) -> bool:
        """Whether a problem with this id is stored."""

    # --- scans -----------------------------------------------------------------------------

    @abc.abstractmethod
    def problems(self, kind: TaskKind | str | None = None) -> Iterator[Problem]:
        """Iterate over stored problems, optionally of one kind."""

    @abc.abstractmethod
    def traces(self, where: TraceFilter | None = None, /, **criteria: Any) -> Iterator[Trace]:
        """Iterate over stored traces that match a filter (or the keyword criteria of one)."""

    @abc.abstractmethod
    def verdicts(
        self, *, trace_key: str | None = None, verifier: str | None = None
    ) -> Iterator[Verdict]:
        """Iterate over stored verdicts, optionally for one trace or one verifier."""

    @abc.abstractmethod
    def spend_usd(self) -> float:
        """Total spend recorded by every stored trace, failures and superseded ones included."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush and close the store. Further writes raise StoreError."""

    # --- derived queries -------------------------------------------------------------------

    def stats(self, where: TraceFilter | None = None, /, **criteria: Any) -> StoreStats:
        """Summary statistics of the traces that match a filter."""
        flt = _make_filter(where, criteria)
        flt = attrs.evolve(flt, include_failed=True)
        latest = self._latest_verdicts(flt.verifier, flt.verifier_version)
        count = failed = truncated = verified = passed = 0
        tokens: list[int] = []
        spend = 0.0
        for trace in self.traces(flt):
            spend += trace.cost_usd or 0.0
            if not trace.ok:
                failed += 1
                continue
            count += 1
            truncated += trace.truncated
            tokens.append(trace.usage.completion_tokens)
            verdict = latest.get(trace.key)
            if verdict is not None:
                verified += 1
                passed += verdict
        return StoreStats(
            count=count,
            failed=failed,
            truncated=truncated,
            verified=verified,
            passed=passed,
            mean_tokens=statistics.fmean(tokens) if tokens else None,
            median_tokens=statistics.median(tokens) if tokens else None,
            spend_usd=spend,
        )

    def _latest_verdicts(self, verifier: str | None, version: str | None) -> dict[str, bool]:
        """Map trace key -> passed, by the most recent matching verdict."""
        latest: dict[str, bool] = {}
        for verdict in self.verdicts(verifier=verifier):
            if version is None or verdict.verifier_version == version:
                latest[verdict.trace_key] = verdict.passed
        return latest

    def chat_rows(
        self, where: TraceFilter | None = None, /, **criteria: Any
    ) -> Iterator[dict[str, Any]]:
        """Yield one chat-format row per matching trace.

        Each row is ``{"messages": [...], "problem": {...}, "trace": {...}}``: the training view
        plus what is needed to import it again losslessly.
        """
        for trace in self.traces(where, **criteria):
            problem = self.problem(trace.problem_id)
            yield {
                "messages": [m.to_dict() for m in trace.messages()],
                "problem": None if problem is None else problem.to_dict(),
                "trace": trace.to_dict(),
            }

    def export_chat_jsonl(
        self, path: str | Path, where: TraceFilter | None = None, /, **criteria: Any
    ) -> int:
        """Write matching traces as chat-format JSONL (one ``{"messages": ...}`` per line).

        The file is written to a temporary name and renamed, so a crash never leaves half a file.
        Returns the number of lines written.
        """
        n = 0
        with atomic_path(path) as tmp, tmp.open("wb") as fh:
            for row in self.chat_rows(where, **criteria):
                fh.write(_json.dumps(row, newline=True))
                n += 1
        return n

    def to_dataset(self, where: TraceFilter | None = None, /, **criteria: Any) -> Any:
        """Return matching traces as a ``datasets.Dataset`` with a ``messages`` column.

        Other columns: problem_id, kind, teacher, model, key, reasoning, answer, finish_reason,
        completion_tokens, cost_usd.
        """
        import datasets

        rows: list[dict[str, Any]] = []
        for trace in self.traces(where, **criteria):
            problem = self.problem(trace.problem_id)
            rows.append(
                {
                    "messages": [m.to_dict() for m in trace.messages()],
                    "problem_id": trace.problem_id,
                    "kind": None if problem is None else str(problem.kind),
                    "teacher": trace.teacher,
                    "model": trace.model,
                    "key": trace.key,
                    "reasoning": trace.reasoning,
                    "answer": trace.answer,
                    "finish_reason": str(trace.finish_reason),
                    "completion_tokens": trace.usage.completion_tokens,
                    "cost_usd": trace.cost_usd,
                }
            )
        return datasets.Dataset.from_list(rows)

    async def import_chat_rows(
        self,
        rows: Iterable[Mapping[str, Any]],
        *,
        teacher: str = "import",
        model: str = "unknown",
        origin: str = "<rows>",
    ) -> int:
        """Store chat-format rows as problems and traces; return the number of traces written.

        A row written by :meth:`export_chat_jsonl` carries its problem and trace and comes back
        identical. A bare ``{"messages": [...]}`` row also needs a ``problem`` (a Problem dict)
        because verification needs the gold answer or tests; its last assistant message is
        split into reasoning and answer at the ``<think>`` block.
        """
        written = 0
        for index, row in enumerate(rows, start=1):
            where = f"{origin}:{index}"
            try:
                problem_data = row.get("problem")
                if not isinstance(problem_data, Mapping):
                    raise RecordError(
                        "row has no 'problem' (a Problem dict with the gold answer or tests); "
                        "add one so the trace can be verified"
                    )
                problem = Problem.from_dict(problem_data)
                trace_data = row.get("trace")
                if isinstance(trace_data, Mapping):
                    trace = Trace.from_dict(trace_data)
                else:
                    trace = _trace_from_messages(row, problem, teacher=teacher, model=model)
            except (RecordError, TypeError, ValueError, KeyError) as exc:
                raise RecordError(f"{where}: {exc}") from exc
            if trace.problem_id != problem.id:
                raise RecordError(
                    f"{where}: trace is for problem {trace.problem_id!r} but the row's problem "
                    f"is {problem.id!r}"
                )
            await self.add_problems([problem])
            written += await self.add_trace(trace)
        return written

    async def import_chat_jsonl(
        self, path: str | Path, *, teacher: str = "import", model: str = "unknown"
    ) -> int:
        """Import a chat-format JSONL file (see :meth:`import_chat_rows`)."""
        path = Path(path)

        def rows() -> Iterator[dict[str, Any]]:
            with path.open("rb") as fh:
                for lineno, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    try:
                        yield _json.loads_external(line)
                    except ValueError as exc:  # orjson's and json's decode errors
                        raise RecordError(f"{path}:{lineno}: not valid JSON ({exc})") from exc

        return await self.import_chat_rows(rows(), teacher=teacher, model=model, origin=str(path))

    async def import_dataset(
        self,
        dataset: Iterable[Mapping[str, Any]],
        *,
        teacher: str = "import",
        model: str = "unknown",
    ) -> int:
        """Import rows of a ``datasets.Dataset`` (or any iterable of dicts) in the chat layout."""
        return await self.import_chat_rows(
            dataset, teacher=teacher, model=model, origin="<dataset>"
        )

    # --- context management ----------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _make_filter(where: TraceFilter | None, criteria: Mapping[str, Any]) -> TraceFilter:
    if where is not None and criteria:
        return attrs.evolve(where, **criteria)
    if where is not None:
        return where
    try:
        return TraceFilter(**criteria)
    except TypeError as exc:
        names = ", ".join(f.name for f in attrs.fields(TraceFilter))
        raise TypeError(f"{exc}; trace filters take: {names}") from exc


def _trace_from_messages(
    row: Mapping[str, Any], problem: Problem, *, teacher: str, model: str
) -> Trace:
    raw = row.get("messages")
    if not isinstance(raw, list) or not raw:
        raise RecordError("row has no 'messages' list")
    messages = [Message.from_dict(m) for m in raw]
    if messages[-1].role != "assistant":
        raise RecordError("the last message must be the assistant's")
    reasoning, answer = split_completion(messages[-1].content)
    return Trace(
        problem_id=problem.id,
        teacher=str(row.get("teacher", teacher)),
        model=str(row.get("model", model)),
        prompt=messages[:-1],
        reasoning=reasoning,
        answer=answer,
        reasoning_kind=ReasoningKind.RAW if reasoning else ReasoningKind.NONE,
        finish_reason=FinishReason.STOP,
    )
