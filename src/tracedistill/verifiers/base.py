"""The Verifier interface: judge a trace (or a bare response) against its problem."""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import anyio
import attrs

from tracedistill._progress import Progress
from tracedistill.errors import VerifierError
from tracedistill.records import Problem, Trace, Verdict, VerdictReason
from tracedistill.store.base import TraceStore

__all__ = ["CheckResult", "Verifier"]

log = logging.getLogger(__name__)

#: Longest text kept in a verdict's details (extracted answers, error output).
DETAIL_CHARS = 2_000


def clip(text: str, limit: int = DETAIL_CHARS) -> str:
    """Return ``text`` cut to ``limit`` characters, marking the cut."""
    if len(text) <= limit:
        return text
    return text[: limit // 2] + f"...[{len(text) - limit} chars cut]..." + text[-limit // 2 :]


@attrs.frozen(slots=True, kw_only=True)
class CheckResult:
    """The parts of a verdict that come from checking one response: what an evaluator needs.

    ``details`` explains the result (extracted answer, failing test, error output).
    """

    passed: bool
    reason: VerdictReason = attrs.field(converter=VerdictReason)
    details: dict[str, Any] = attrs.field(factory=dict)
    elapsed_s: float = 0.0

    def __attrs_post_init__(self) -> None:
        if self.passed != (self.reason is VerdictReason.PASSED):
            raise ValueError(f"passed={self.passed} contradicts reason {str(self.reason)!r}")

    @classmethod
    def ok(cls, details: Mapping[str, Any] | None = None, elapsed_s: float = 0.0) -> CheckResult:
        """A passing result."""
        return cls(
            passed=True,
            reason=VerdictReason.PASSED,
            details=dict(details or {}),
            elapsed_s=elapsed_s,
        )

    @classmethod
    def fail(
        cls,
        reason: VerdictReason,
        details: Mapping[str, Any] | None = None,
        elapsed_s: float = 0.0,
    ) -> CheckResult:
        """A failing result for ``reason`` (which must not be PASSED)."""
        return cls(passed=False, reason=reason, details=dict(details or {}), elapsed_s=elapsed_s)

    def to_verdict(self, trace: Trace, *, verifier: str, version: str) -> Verdict:
        """Turn this result into the Verdict record of ``trace``."""
        return Verdict(
            trace_key=trace.key,
            problem_id=trace.problem_id,
            verifier=verifier,
            verifier_version=version,
            passed=self.passed,
            reason=self.reason,
            details=self.details,
            elapsed_s=self.elapsed_s,
        )


class Verifier(abc.ABC):
    """Checks responses against their problems and judges traces, asynchronously and in batches.

    A verifier owns worker processes: use it as ``async with Verifier() as v`` or call
    :meth:`aclose` when done (it starts lazily on first use either way). ``name`` and
    ``version`` identify its verdicts in a store; the version changes whenever a setting or a
    dependency that can change a verdict changes, so stored verdicts are never reused wrongly.
    """

    name: str
    version: str
    #: Whether a response cut at ``max_tokens`` may still pass (default: it fails as TRUNCATED).
    accept_truncated: bool = False

    @abc.abstractmethod
    async def check(self, problem: Problem, response: str) -> CheckResult:
        """Check one response text (the answer part of a model's turn) against ``problem``."""

    async def check_many(
        self,
        items: Iterable[tuple[Problem, str]],
        *,
        progress: bool | None = None,
        concurrency: int | None = None,
    ) -> list[CheckResult]:
        """Check many ``(problem, response)`` pairs concurrently; results keep the input order."""
        pairs = list(items)
        results: list[CheckResult | None] = [None] * len(pairs)
        order = self._schedule([problem for problem, _ in pairs])

        async def one(slot: int) -> None:
            index = order[slot]
            problem, response = pairs[index]
            results[index] = await self.check(problem, response)

        await self._fan_out(
            len(pairs), one, desc=f"check {self.name}", progress=progress, concurrency=concurrency
        )
        return [r for r in results if r is not None]

    async def verify(self, problem: Problem, trace: Trace) -> Verdict:
        """Judge one trace against its problem and return the verdict (not stored)."""
        if trace.problem_id != problem.id:
            raise VerifierError(
                f"trace {trace.key} answers problem {trace.problem_id!r}, not {problem.id!r}"
            )
        if not trace.ok:
            result = CheckResult.fail(
                VerdictReason.NO_ANSWER, {"error": clip(trace.error or "request failed")}
            )
        elif trace.truncated and not self.accept_truncated:
            result = CheckResult.fail(
                VerdictReason.TRUNCATED, {"note": "response stopped at max_tokens"}
            )
        else:
            result = await self.check(problem, trace.answer)
        return result.to_verdict(trace, verifier=self.name, version=self.version)

    async def verify_many(
        self,
        pairs: Iterable[tuple[Problem, Trace]],
        *,
        store: TraceStore | None = None,
        progress: bool | None = None,
        concurrency: int | None = None,
    ) -> list[Verdict]:
        """Judge many traces; the verdicts keep the input order.

        With a ``store``, a trace this verifier (same name and version) already judged there is
        not checked again: its stored verdict is returned. New verdicts are written to the store
        as they finish, so an interrupted run loses none of them.
        """
        items = list(pairs)
        verdicts: list[Verdict | None] = [None] * len(items)
        todo: list[int] = []
        for index, (_problem, trace) in enumerate(items):
            stored = self._stored_verdict(store, trace) if store is not None else None
            if stored is not None:
                verdicts[index] = stored
            else:
                todo.append(index)
        skipped = len(items) - len(todo)
        if skipped:
            log.info(
                "%s: %d of %d traces already judged in the store", self.name, skipped, len(items)
            )
        todo = [todo[i] for i in self._schedule([items[index][0] for index in todo])]

        async def one(slot: int) -> None:
            index = todo[slot]
            problem, trace = items[index]
            verdict = await self.verify(problem, trace)
            if store is not None:
                await store.add_verdict(verdict)
            verdicts[index] = verdict

        await self._fan_out(
            len(todo), one, desc=f"verify {self.name}", progress=progress, concurrency=concurrency
        )
        return [v for v in verdicts if v is not None]

    def _schedule(self, problems: Sequence[Problem]) -> list[int]:
        """The order in which to work through items (indices); the default keeps input order.

        A verifier that can estimate costs starts the longest items first, so one slow item
        does not run alone at the end of a batch.
        """
        return list(range(len(problems)))

    def _stored_verdict(self, store: TraceStore, trace: Trace) -> Verdict | None:
        has_verdict = getattr(store, "has_verdict", None)
        if has_verdict is not None and not has_verdict(trace.key, self.name, self.version):
            return None
        for verdict in store.verdicts(trace_key=trace.key, verifier=self.name):
            if verdict.verifier_version == self.version:
                return verdict
        return None

    async def _fan_out(
        self,
        count: int,
        job: Any,
        *,
        desc: str,
        progress: bool | None,
        concurrency: int | None,
    ) -> None:
        """Run ``job(i)`` for i in range(count), ``concurrency`` at a time, with a progress bar."""
        if count == 0:
            return
        width = concurrency or self.default_concurrency
        next_index = 0
        passed_before = time.monotonic()
        with Progress(count, desc, unit="item", enabled=progress) as bar:

            async def lane() -> None:
                nonlocal next_index
                while next_index < count:
                    index = next_index
                    next_index += 1
                    await job(index)
                    bar.advance(1)

            async with anyio.create_task_group() as tg:
                for _ in range(min(width, count)):
                    tg.start_soon(lane)
        log.debug("%s: %d items in %.2fs", desc, count, time.monotonic() - passed_before)

    @property
    def default_concurrency(self) -> int:
        """How many items are in flight at once in the batched calls."""
        return 8

    # --- lifetime ------------------------------------------------------------------------------

    async def start(self) -> None:  # noqa: B027 - optional hook, a no-op for process-free verifiers
        """Start worker processes now instead of on first use."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Stop the worker processes (idempotent). The verifier restarts them if used again."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def verdict_counts(verdicts: Sequence[Verdict]) -> dict[str, int]:
    """Count verdicts by reason (a small summary for logs and reports)."""
    counts: dict[str, int] = {}
    for verdict in verdicts:
        counts[str(verdict.reason)] = counts.get(str(verdict.reason), 0) + 1
    return counts
