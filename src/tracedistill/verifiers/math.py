"""MathVerifier: the final answer of a response, checked against the gold answer by math-verify."""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Sequence
from typing import Any, Literal

import anyio

from tracedistill.errors import VerifierError
from tracedistill.records import Problem, TaskKind, Verdict, VerdictReason, content_hash
from tracedistill.verifiers.base import CheckResult, Verifier
from tracedistill.verifiers.extract import MathExtraction
from tracedistill.verifiers.pool import WorkerPool

__all__ = ["EXTRACTIONS", "MathVerifier"]

_HANDLER = "tracedistill.verifiers._math_worker:handle"
#: Version of the equivalence rules: "1" is math-verify alone (``rules="math-verify"``), "2"
#: adds the exact rules of ``_math_rules`` (exact fractions and powers, decimals relative to
#: their magnitude, sets and inequalities in both roles).
_LOGIC_VERSIONS = {"math-verify": "1", "exact": "2"}

#: The named answer extractions: ``boxed`` (the study's protocol: only the final ``\boxed{}``
#: counts) and ``lenient`` (the default: the final ``\boxed{}``, else "the answer is X", else
#: the last ``$...$`` / ``\(...\)`` in the last 4,000 characters).
EXTRACTIONS: dict[str, MathExtraction] = {
    "boxed": MathExtraction(fallbacks=()),
    "lenient": MathExtraction(),
}

_DEFAULT = MathExtraction()

_FALLBACK_WORDS = {
    "answer_is": '"the answer is X" / "final answer: X"',
    "last_math": "the last $...$ or \\(...\\)",
    "last_number": "the last number",
}


def _math_verify_version() -> str:
    try:
        return importlib.metadata.version("math-verify")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a broken install
        return "unknown"


class MathVerifier(Verifier):
    r"""Checks math answers: the final ``\boxed{}`` (then, by default, fallbacks) against the gold.

    Extraction and checking run in worker processes: math-verify (sympy) can hang on hostile
    input such as ``9^{9^{9}}`` with the GIL held, so a worker that overruns ``timeout_s`` is
    killed and replaced while the others go on. Answers that would obviously take too long
    (millions of digits, absurd nesting) fail at once with reason TIMEOUT.

    The simple path for one answer is :meth:`check_answer` (or :meth:`check_answer_sync` in a
    script); :meth:`verify_many` judges stored traces in bulk. Every verdict records in its
    ``details`` the extracted answer (``extracted``) and the rule that found it
    (``extraction``: ``boxed``, ``answer_is``, ``last_math``, ``last_number`` or ``none``).

    Args:
        extraction: which answers count: ``"lenient"`` (default: the final ``\boxed{}``, else
            "the answer is X", else the last ``$...$``), ``"boxed"`` (the final ``\boxed{}``
            only, the study's protocol), or a :class:`MathExtraction`.
        rules: ``"exact"`` (default: math-verify with exact fractions and powers, decimals
            compared relative to their magnitude, sets and inequalities in both roles; see
            ``docs/evaluation.md``) or ``"math-verify"`` (math-verify alone, the verdicts of
            logic version 1).
        workers: worker processes (default: the CPU count, at most 8).
        timeout_s: hard limit per check; the worker is killed after it.
        memory_mb: address-space limit per worker.
        accept_truncated: let a response cut at ``max_tokens`` pass if its answer is right.
    """

    name = "math"

    def __init__(
        self,
        *,
        extraction: MathExtraction | Literal["boxed", "lenient"] | None = None,
        rules: Literal["exact", "math-verify"] = "exact",
        workers: int | None = None,
        timeout_s: float = 10.0,
        memory_mb: int = 3072,
        accept_truncated: bool = False,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if rules not in _LOGIC_VERSIONS:
            raise ValueError(f"rules must be one of {sorted(_LOGIC_VERSIONS)}, got {rules!r}")
        if isinstance(extraction, str):
            if extraction not in EXTRACTIONS:
                raise ValueError(
                    f"extraction must be one of {sorted(EXTRACTIONS)} or a MathExtraction, "
                    f"got {extraction!r}"
                )
            extraction = EXTRACTIONS[extraction]
        self._extraction = extraction or EXTRACTIONS["lenient"]
        self._rules = rules
        self._workers = workers or min(os.cpu_count() or 1, 8)
        self._timeout_s = timeout_s
        self.accept_truncated = accept_truncated
        # math-verify's own soft timeout fires first, the hard kill is the backstop.
        self._soft_timeout = max(1, int(timeout_s * 0.6))
        fallbacks = "-".join(self._extraction.fallbacks) or "boxed"
        self.version = (
            f"{_LOGIC_VERSIONS[rules]}+mv{_math_verify_version()}+{fallbacks}"
            f"+w{self._extraction.window}+t{self.accept_truncated:d}"
            f"+p{self._extraction.prescreen:d}"
        )
        # The size limits change verdicts too; named only when changed, so the versions of
        # the default settings stay those of earlier releases.
        if self._extraction.max_answer_chars != _DEFAULT.max_answer_chars:
            self.version += f"+c{self._extraction.max_answer_chars}"
        if self._extraction.max_depth != _DEFAULT.max_depth:
            self.version += f"+d{self._extraction.max_depth}"
        self._pool = WorkerPool(
            _HANDLER, size=self._workers, timeout_s=timeout_s, memory_mb=memory_mb, name="math"
        )

    # --- read-only settings ----------------------------------------------------------------------

    @property
    def extraction(self) -> MathExtraction:
        """How the final answer of a response is found."""
        return self._extraction

    @property
    def protocol(self) -> str:
        r"""Which answers count, in words (for reports): e.g. "the final \boxed{} only"."""
        words = ["the final \\boxed{}"]
        words += [_FALLBACK_WORDS[rule] for rule in self._extraction.fallbacks]
        if len(words) == 1:
            return "the final \\boxed{} only"
        return ", else ".join(words)

    @property
    def rules(self) -> str:
        """The equivalence rules: ``exact`` or ``math-verify``."""
        return self._rules

    @property
    def workers(self) -> int:
        """How many worker processes check answers."""
        return self._workers

    @property
    def timeout_s(self) -> float:
        """The hard time limit of one check (its worker is killed after it)."""
        return self._timeout_s

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
        return await self._check_gold(problem.answer, response)

    async def check_answer(self, gold: str, response: str) -> Verdict:
        r"""Judge a bare response against a gold answer: the simple path (no Problem, no Trace).

        ``response`` is the model's answer text (``"... so \boxed{1/2}"``), ``gold`` the gold
        answer (``"\frac{1}{2}"``). The verdict's ``problem_id`` and ``trace_key`` are content
        hashes of the gold and of the (gold, response) pair; ``details`` holds the extracted
        answer and the extraction rule used. The verdict is a pure function of (gold,
        response, :attr:`version`).
        """
        result = await self._check_gold(gold, response)
        return Verdict(
            trace_key=content_hash([gold, response], prefix="answer-"),
            problem_id=content_hash(gold, prefix="gold-"),
            verifier=self.name,
            verifier_version=self.version,
            passed=result.passed,
            reason=result.reason,
            details=result.details,
            elapsed_s=result.elapsed_s,
        )

    def check_answer_sync(self, gold: str, response: str) -> Verdict:
        """:meth:`check_answer` for scripts: starts the workers, checks, stops them.

        Not inside a running event loop (use ``await check_answer(...)`` there); for many
        answers use ``async with MathVerifier() as v`` and :meth:`check_answer` /
        :meth:`check_many`, which keep the workers up.
        """

        async def once() -> Verdict:
            async with self:
                return await self.check_answer(gold, response)

        try:
            return anyio.run(once)
        except RuntimeError as exc:
            if "already running" not in str(exc).lower():
                raise
            raise VerifierError(
                "check_answer_sync() cannot run inside an event loop; "
                "use `await verifier.check_answer(gold, response)`"
            ) from exc

    async def _check_gold(self, gold: str, response: str) -> CheckResult:
        job = {
            "op": "check",
            "gold": gold,
            "response": response,
            "config": self._extraction,
            "rules": self._rules,
            "timeout": self._soft_timeout,
        }
        outcome = await self._pool.run(job)
        elapsed = outcome.elapsed_s  # time on a worker, not time waiting for a free one
        if outcome.ok:
            value: dict[str, Any] = outcome.value
            reason = VerdictReason(value["reason"])
            return CheckResult(
                passed=value["passed"], reason=reason, details=value["details"], elapsed_s=elapsed
            )
        if outcome.status == "timeout":
            return CheckResult.fail(
                VerdictReason.TIMEOUT,
                {"error": f"check killed after {self._timeout_s:g}s"},
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
                {
                    "op": "parse_golds",
                    "answers": part,
                    "rules": self._rules,
                    "timeout": self._soft_timeout,
                },
                timeout_s=self._timeout_s * len(part),
            )
            if outcome.ok:
                results.extend(outcome.value)
            else:  # one hostile gold answer: parse the chunk one by one to find it
                for answer in part:
                    single = await self._pool.run(
                        {
                            "op": "parse_golds",
                            "answers": [answer],
                            "rules": self._rules,
                            "timeout": self._soft_timeout,
                        }
                    )
                    results.append(single.value[0] if single.ok else None)
        return results
