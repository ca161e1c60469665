"""Which gold answers MathVerifier.parse_golds accepts: real math objects from well-formed LaTeX."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.verifiers.helpers import MATH_PATH, needs_math, read_jsonl
from tracedistill.verifiers import MathVerifier
from tracedistill.verifiers._math_worker import malformed_latex

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
async def verifier() -> AsyncIterator[MathVerifier]:
    async with MathVerifier(workers=2, timeout_s=5) as v:
        yield v


# Truncated LaTeX and garbage. Most give math-verify only its string fallback; `1}` and
# `\frac{1}{2}\` still give a number, so only the structure check stops those.
REJECTED = [
    r"\frac{",
    r"\sqrt{",
    r"\frac{1}{",
    r"\frac{1}{2",
    r"\dfrac{3}{",
    r"\sqrt[3]{",
    "x^{",
    r"\left(",
    r"\left(1,2",
    "}}{{",
    "}{",
    "}",
    "{1",
    "1}",
    r"\frac{1}{2}}",
    r"\frac{1}{2}" + "\\",
    r"\text{Evel",
    r"\begin{pmatrix} 1 \\ 2",
    # Well-formed, but math-verify parses nothing out of them (string fallback only).
    "1 +",
    "x =",
    r"\frac",
    "(",
    r"\rightarrow",
    # Empty or blank.
    "",
    "   ",
    r"\text{}",
]

# (gold, normalized form that parse_golds returns)
ACCEPTED = [
    ("42", "42"),
    (r"\frac{1}{2}", r"\frac{1}{2}"),
    (r"\frac12", r"\frac{1}{2}"),
    (r"\{1,2\}", r"\{1,2\}"),
    ("[0, 1)", "[0, 1)"),
    ("x = 3", "x = 3"),
    (r"\text{(B)}", r"\text{(B)}"),
    (r"\text{Evelyn}", r"\text{Evelyn}"),
    (r"\$18.90", "18.90"),
    ("p - q", "p - q"),
    (r"\left( 3, \frac{\pi}{2} \right)", r"( 3, \frac{\pi}{2} )"),
    (r"\begin{pmatrix} -1 & 0 \\ 0 & -1 \end{pmatrix}", None),
    (r"\left\{ 1 \right.", None),  # an escaped brace and a null delimiter are balanced
]


async def test_truncated_and_garbage_golds_are_rejected(verifier: MathVerifier) -> None:
    parsed = await verifier.parse_golds(REJECTED)
    accepted = {gold: out for gold, out in zip(REJECTED, parsed, strict=True) if out is not None}
    assert not accepted


async def test_ordinary_golds_are_accepted(verifier: MathVerifier) -> None:
    parsed = await verifier.parse_golds([gold for gold, _ in ACCEPTED])
    for (gold, shown), out in zip(ACCEPTED, parsed, strict=True):
        assert out is not None, f"{gold!r} was rejected"
        if shown is not None:
            assert out == shown, gold


async def test_a_bad_gold_does_not_affect_its_batch(verifier: MathVerifier) -> None:
    parsed = await verifier.parse_golds(["3", r"\frac{", "x^2", "}}{{", r"\sqrt{2}"])
    assert [p is not None for p in parsed] == [True, False, True, False, True]


@needs_math
async def test_every_math500_gold_is_accepted(verifier: MathVerifier) -> None:
    rows = read_jsonl(MATH_PATH)
    assert len(rows) == 500
    parsed = await verifier.parse_golds([row["answer"] for row in rows])
    rejected = [
        (row["unique_id"], row["answer"]) for row, out in zip(rows, parsed, strict=True) if not out
    ]
    assert not rejected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (r"\frac{1}{2}", None),
        (r"\{1,2\}", None),
        (r"\left\{ x \right.", None),
        ("[0, 1)", None),
        (r"a \\ {b}", None),  # a line break, then a group: the brace is not escaped
        (r"x \leftarrow y \rightarrow z", None),  # control words, not delimiters
        (r"\begin {cases} 1 \end{cases}", None),
        (r"\frac{", "unclosed brace"),
        ("}{", "closing brace"),
        (r"a \\\{", None),  # a line break, then an escaped brace
        (r"\right) \left(", r"\right without"),
        (r"\left( x", r"\left without"),
        (r"\begin{pmatrix} 1 \end{bmatrix}", "unmatched"),
        (r"\end{pmatrix}", "unmatched"),
        (r"\begin{cases} 1", "unclosed"),
        (r"\begin", "environment name"),
        ("1 \\", "dangling backslash"),
    ],
)
def test_malformed_latex(text: str, problem: str | None) -> None:
    found = malformed_latex(text)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found
