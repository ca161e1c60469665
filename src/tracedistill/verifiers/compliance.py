r"""Format compliance: whether a response is in the trained format, whatever its correctness.

The one definition used by the evaluator (per response), the report (per score) and the
trace-quality table (per stored trace). A response complies when it closes its think block and
then answers in the form the strict graders read:

- math: a final ``\boxed{}`` answer that the boxed extraction finds (``extraction="boxed"``,
  the study's protocol), so a compliant response is one a boxed-only grader can grade;
- code: a fenced code block (the code extraction's ``fenced`` / ``joined`` rules).

With the default lenient math protocol a response can pass without complying (its answer was
found by "the answer is X" or the last ``$...$``); a grade's ``details["extraction"]`` says which
rule found it.
"""

from __future__ import annotations

from collections.abc import Mapping

from tracedistill.records import THINK_CLOSE, THINK_OPEN, TaskKind
from tracedistill.verifiers.extract import MathExtraction, extract_code, extract_math_answer

__all__ = [
    "COMPLIANCE_RULE",
    "COMPLIANT_EXTRACTIONS",
    "EXTRACTION_WORDS",
    "answer_flags",
    "complies",
    "format_flags",
    "trace_flags",
]

#: The definition in words, for reports.
COMPLIANCE_RULE = (
    "the think block is closed, then the answer is a final \\boxed{} (math: what the boxed "
    "extraction grades) or a fenced code block (code)"
)

#: The extractions (a grade's ``details["extraction"]``) of answers in the trained format.
COMPLIANT_EXTRACTIONS = frozenset({"boxed", "fenced", "joined"})

#: Each extraction in words, for reports.
EXTRACTION_WORDS = {
    "boxed": "final \\boxed{}",
    "answer_is": '"the answer is X"',
    "last_math": "last $...$",
    "last_number": "last number",
    "fenced": "fenced code block",
    "joined": "fenced code blocks joined",
    "unclosed-fence": "unclosed code fence",
    "raw": "whole response as code",
    "none": "no answer found",
}

_BOXED_ONLY = MathExtraction(fallbacks=())


def answer_flags(answer: str, kind: TaskKind | str) -> dict[str, bool]:
    r"""The answer part's format: ``boxed`` (math) or ``code_block`` (code)."""
    if TaskKind(kind) is TaskKind.MATH:
        return {"boxed": extract_math_answer(answer, _BOXED_ONLY)[1] == "boxed"}
    return {"code_block": extract_code(answer)[1] in ("fenced", "joined")}


def format_flags(text: str, kind: TaskKind | str) -> dict[str, bool]:
    r"""What a response's format looks like, independent of correctness.

    ``think_opened``: the turn starts with ``<think>``; ``think_closed``: it has ``</think>``;
    ``boxed`` (math): a final ``\boxed{}`` answer after the think block, as the boxed
    extraction finds it; ``code_block`` (code): a fenced code block after the think block.
    """
    opened = text.lstrip().startswith(THINK_OPEN)
    closed = THINK_CLOSE in text
    answer = text.split(THINK_CLOSE, 1)[1] if closed else ("" if opened else text)
    return {"think_opened": opened, "think_closed": closed, **answer_flags(answer, kind)}


def trace_flags(reasoning: str, answer: str, kind: TaskKind | str) -> dict[str, bool]:
    """The flags of a stored trace (its reasoning is the think block, when not empty)."""
    thought = bool(reasoning)
    return {"think_opened": thought, "think_closed": thought, **answer_flags(answer, kind)}


def complies(flags: Mapping[str, bool]) -> bool:
    """Whether flags from :func:`format_flags` or :func:`trace_flags` are the trained format."""
    return bool(flags.get("think_closed")) and bool(flags.get("boxed") or flags.get("code_block"))
