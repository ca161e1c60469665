"""MathVerifier: the final answer of a response, checked against the gold answer by math-verify."""

from __future__ import annotations

import importlib.metadata
import os
import time
from collections.abc import Sequence
from typing import Any

from tracedistill.errors import VerifierError
from tracedistill.records import Problem, TaskKind, VerdictReason
from tracedistill.verifiers.base import CheckResult, Verifier
from tracedistill.verifiers.extract import MathExtraction
from tracedistill.verifiers.pool import WorkerPool

__all__ = ["MathVerifier"]

_HANDLER = "tracedistill.verifiers._math_worker:handle"
_LOGIC_VERSION = "1"


def _math_verify_version() -> str:
    try:
        return importlib.metadata.version("math-verify")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a broken install
        return "unknown"


class MathVerifier(Verifier):
    r"""Checks math answers: the last ``\boxed{}`` (then fallbacks) against the gold answer.

    Extraction and checking run in worker processes: math-verify (sympy) can hang on hostile
    input such as ``9^{9^{9}}`` with the GIL held, so a worker that overruns ``timeout_s`` is
    killed and replaced while the others go on. Answers that would obviously take too long
    (millions of digits, absurd nesting) fail at once with reason TIMEOUT.

    Args:
        extraction: how the final answer is found (see :class:`MathExtraction`).
        workers: worker processes (default: the CPU count, at most 8).
        timeout_s: hard limit per check; the worker is killed after it.
        memory_mb: address-space limit per worker.
        accept_truncated: let a response cut at ``max_tokens`` pass if its answer is right.
    """

    name = "math"

    def __init__(
        self,
        *,
        extraction: MathExtraction | None = None,
        workers: int | None = None,
        timeout_s: float = 10.0,
        memory_mb: int = 3072,
        accept_truncated: bool = False,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.extraction = extraction or MathExtraction()
        self.workers = workers or min(os.cpu_count() or 1, 8)
        self.timeout_s = timeout_s
        self.accept_truncated = accept_truncated
        # math-verify's own soft timeout fires first, the hard kill is the backstop.
        self._soft_timeout = max(1, int(timeout_s * 0.6))
        fallbacks = "-".join(self.extraction.fallbacks) or "boxed"
        self.version = (
            f"{_LOGIC_VERSION}+mv{_math_verify_version()}+{fallbacks}"
            f"+w{self.extraction.window}+t{self.accept_truncated:d}"
            f"+p{self.extraction.prescreen:d}"
        )
        self._pool = WorkerPool(
            _HANDLER, size=self.workers, timeout_s=timeout_s, memory_mb=memory_mb, name="math"
        )

    @property
    def default_concurrency(self) -> int:
        """Twice the workers, so a worker never waits for the next job to be sent."""
        return self.workers * 2

    @property
    def pool(self) -> WorkerPool:
        """The worker pool (for diagnostics)."""
        return self._pool

    async def start(self) -> None:
        """Start the worker processes now."""
        await self._pool.start()

    async def aclose(self) -> None:
        """Stop the worker processes (the verifier restarts them if used again)."""
        await self._pool.aclose()

    async def check(self, problem: Problem, response: str) -> CheckResult:
        """Check a response's final answer against ``problem.answer``."""
        if problem.kind is not TaskKind.MATH or problem.answer is None:
            raise VerifierError(f"MathVerifier got a {problem.kind} problem {problem.id!r}")
        return await self.check_answer(problem.answer, response)

    async def check_answer(self, gold: str, response: str) -> CheckResult:
        """Check a response against a gold answer string (no Problem needed)."""
        start = time.monotonic()
        job = {
            "op": "check",
            "gold": gold,
            "response": response,
            "config": self.extraction,
            "timeout": self._soft_timeout,
        }
        outcome = await self._pool.run(job)
        elapsed = time.monotonic() - start
        if outcome.ok:
            value: dict[str, Any] = outcome.value
            reason = VerdictReason(value["reason"])
            return CheckResult(
                passed=value["passed"], reason=reason, details=value["details"], elapsed_s=elapsed
            )
        if outcome.status == "timeout":
            return CheckResult.fail(
                VerdictReason.TIMEOUT,
                {"error": f"check killed after {self.timeout_s:g}s"},
                elapsed,
            )
        if outcome.status == "memory":
            return CheckResult.fail(VerdictReason.MEMORY_LIMIT, {"error": outcome.error}, elapsed)
        return CheckResult.fail(VerdictReason.VERIFIER_ERROR, {"error": outcome.error}, elapsed)

    async def parse_golds(self, answers: Sequence[str]) -> list[str | None]:
        r"""Parse gold answers; each gives its normalized form, or None if it is not checkable.

        A gold is rejected when it is blank, when its LaTeX is malformed (unbalanced braces,
        ``\left`` without ``\right``, ``\begin`` without ``\end``, a dangling backslash:
        the marks of a truncated answer such as ``\frac{``), or when math-verify parses no
        math object out of it, only its raw-string fallback (which a response would match
        only by the same unparsed text). Text answers math-verify reads as symbols (``\text{(C)}``,
        ``\text{Evelyn}``) are kept. Use it to find (and report, then skip) problems whose
        gold answer cannot be checked.
        """
        results: list[str | None] = []
        chunk = 64
        for begin in range(0, len(answers), chunk):
            part = list(answers[begin : begin + chunk])
            outcome = await self._pool.run(
                {"op": "parse_golds", "answers": part, "timeout": self._soft_timeout},
                timeout_s=self.timeout_s * len(part),
            )
            if outcome.ok:
                results.extend(outcome.value)
            else:  # one hostile gold answer: parse the chunk one by one to find it
                for answer in part:
                    single = await self._pool.run(
                        {"op": "parse_golds", "answers": [answer], "timeout": self._soft_timeout}
                    )
                    results.append(single.value[0] if single.ok else None)
        return results
