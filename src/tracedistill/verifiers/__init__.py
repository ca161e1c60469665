"""Verifiers: judge traces and responses (math answers, sandboxed code tests).

:class:`MathVerifier` checks final answers with math-verify in worker processes;
:class:`CodeVerifier` runs extracted programs against tests in the sandbox (see
``docs/sandbox.md``). Both implement :class:`Verifier`.
"""

from typing import TYPE_CHECKING

from tracedistill import _lazy

if TYPE_CHECKING:
    from tracedistill.verifiers.base import CheckResult, Verifier
    from tracedistill.verifiers.code import EVALPLUS_METADATA_KEY, CodeVerifier, stdout_matches
    from tracedistill.verifiers.extract import (
        CodeExtraction,
        MathExtraction,
        extract_code,
        extract_math_answer,
        last_boxed,
    )
    from tracedistill.verifiers.math import MathVerifier
    from tracedistill.verifiers.pool import JobOutcome, WorkerPool
    from tracedistill.verifiers.sandbox import SandboxLimits

#: Public name -> the module defining it, imported on first use (see ``tracedistill._lazy``).
_EXPORTS = {
    "CheckResult": "tracedistill.verifiers.base",
    "CodeExtraction": "tracedistill.verifiers.extract",
    "CodeVerifier": "tracedistill.verifiers.code",
    "EVALPLUS_METADATA_KEY": "tracedistill.verifiers.code",
    "JobOutcome": "tracedistill.verifiers.pool",
    "MathExtraction": "tracedistill.verifiers.extract",
    "MathVerifier": "tracedistill.verifiers.math",
    "SandboxLimits": "tracedistill.verifiers.sandbox",
    "Verifier": "tracedistill.verifiers.base",
    "WorkerPool": "tracedistill.verifiers.pool",
    "extract_code": "tracedistill.verifiers.extract",
    "extract_math_answer": "tracedistill.verifiers.extract",
    "last_boxed": "tracedistill.verifiers.extract",
    "stdout_matches": "tracedistill.verifiers.code",
}

__all__ = [
    "EVALPLUS_METADATA_KEY",
    "CheckResult",
    "CodeExtraction",
    "CodeVerifier",
    "JobOutcome",
    "MathExtraction",
    "MathVerifier",
    "SandboxLimits",
    "Verifier",
    "WorkerPool",
    "extract_code",
    "extract_math_answer",
    "last_boxed",
    "stdout_matches",
]

if not TYPE_CHECKING:  # type checkers see the imports above instead
    __getattr__, __dir__ = _lazy.attach(__name__, _EXPORTS, globals())
