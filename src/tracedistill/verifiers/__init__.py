"""Verifiers: judge traces and responses (math answers, sandboxed code tests).

:class:`MathVerifier` checks final answers with math-verify in worker processes;
:class:`CodeVerifier` runs extracted programs against tests in the sandbox (see
``docs/sandbox.md``). Both implement :class:`Verifier`.
"""

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
