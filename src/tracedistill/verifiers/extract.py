"""Pull the final answer (math) or the program (code) out of a model's response text.

Pure functions of the text, linear in its length, safe on hostile input: they run in the
verifiers' worker processes and in the evaluator alike.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import attrs

__all__ = [
    "MATH_FALLBACKS",
    "CodeExtraction",
    "MathExtraction",
    "extract_code",
    "extract_math_answer",
    "last_boxed",
    "too_expensive",
]

#: Fallbacks :func:`extract_math_answer` knows, tried in the configured order after \boxed{}.
MATH_FALLBACKS = ("answer_is", "last_math", "last_number")

_BOXED = re.compile(r"\\(?:boxed|fbox)\b")
_ANSWER_IS = re.compile(
    r"(?:final\s+answer|the\s+answer)\s*(?:is|:|=)?\s*[:\s]*(.+?)(?:\n|$)", re.IGNORECASE
)
_INLINE_MATH = re.compile(r"\$\$(.+?)\$\$|\$([^$]+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?")


@attrs.frozen(slots=True, kw_only=True)
class MathExtraction:
    r"""How the final answer of a math response is found.

    Args:
        fallbacks: what to try, in order, when there is no ``\boxed{}``: ``answer_is``
            ("the answer is X"), ``last_math`` (the last ``$...$`` or ``\(...\)``),
            ``last_number``. Empty: boxed answers only.
        window: how many characters at the end of the response the fallbacks look at.
        max_answer_chars: a longer extracted answer is not sent to the checker.
        max_depth: deeper brace nesting is not sent to the checker.
        prescreen: fail at once (reason TIMEOUT) answers that :func:`too_expensive` flags,
            instead of waiting for the worker's hard timeout.
    """

    fallbacks: tuple[str, ...] = attrs.field(default=("answer_is", "last_math"), converter=tuple)
    window: int = 4_000
    max_answer_chars: int = 1_000
    max_depth: int = 40
    prescreen: bool = True

    @fallbacks.validator
    def _check(self, _attribute: object, value: tuple[str, ...]) -> None:
        unknown = set(value) - set(MATH_FALLBACKS)
        if unknown:
            raise ValueError(f"unknown math fallbacks {sorted(unknown)}; known: {MATH_FALLBACKS}")


def _matching_brace(text: str, open_at: int, max_depth: int) -> int:
    """Index of the brace closing the one at ``open_at``; -1 if unclosed, -2 if too deep."""
    depth = 0
    index = open_at
    n = len(text)
    while index < n:
        char = text[index]
        if char == "\\":
            index += 2  # an escaped brace \{ does not count
            continue
        if char == "{":
            depth += 1
            if depth > max_depth:
                return -2
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index
        index += 1
    return -1


def last_boxed(text: str, *, max_depth: int = 40) -> str | None:
    r"""Return the content of the last complete ``\boxed{...}`` (or ``\fbox{}``), if any.

    ``\boxed 5`` (no braces) gives ``5``. Nesting deeper than ``max_depth`` counts as no answer.
    """
    starts = [m.end() for m in _BOXED.finditer(text)]
    for start in reversed(starts):
        rest = start
        while rest < len(text) and text[rest] == " ":
            rest += 1
        if rest < len(text) and text[rest] == "{":
            end = _matching_brace(text, rest, max_depth)
            if end == -2:
                return None
            if end > 0:
                return text[rest + 1 : end].strip()
            continue
        match = re.match(r"[^\s$]+", text[rest:])
        if match and rest > start:
            return match.group(0)
    return None


def extract_math_answer(text: str, config: MathExtraction | None = None) -> tuple[str | None, str]:
    r"""Return ``(answer, how)``: the final answer of a response and which rule found it.

    ``how`` is ``boxed``, a fallback name, or ``none`` when nothing was found.
    """
    config = config or MathExtraction()
    boxed = last_boxed(text, max_depth=config.max_depth)
    if boxed:
        return boxed, "boxed"
    tail = text[-config.window :]
    for rule in config.fallbacks:
        found: str | None = None
        if rule == "answer_is":
            matches = _ANSWER_IS.findall(tail)
            if matches:
                found = matches[-1].strip().rstrip(".").strip("$ ")
        elif rule == "last_math":
            matches = _INLINE_MATH.findall(tail)
            if matches:
                found = next((g for g in matches[-1] if g), "").strip()
        elif rule == "last_number":
            matches = _NUMBER.findall(tail)
            if matches:
                found = matches[-1].replace(",", "")
        if found:
            return found, rule
    return None, "none"


_INT_POWER = re.compile(r"(\d+(?:\.\d+)?)\s*\^\s*(\{?)\s*(\d+)")
_FACTORIAL = re.compile(r"(\d+)\s*!")


def _brace_depth(text: str) -> int:
    depth = deepest = 0
    for char in text:
        if char == "{":
            depth += 1
            deepest = max(deepest, depth)
        elif char == "}":
            depth = max(depth - 1, 0)
    return deepest


def _digits_of_power(text: str, start: int) -> float:
    """Estimate log10 of the integer power tower starting at ``text[start:]``."""
    match = _INT_POWER.match(text, start)
    if match is None:
        number = re.match(r"\d+", text[start:])
        return math.log10(max(int(number.group(0)), 1)) if number else 0.0
    base = float(match.group(1))
    inner = _digits_of_power(text, match.start(3))  # right-associative: a^{b^{c}}
    exponent = math.inf if inner > 300 else 10**inner
    if base <= 1:
        return 0.0
    return exponent * math.log10(base)


def too_expensive(answer: str, config: MathExtraction | None = None) -> str | None:
    """Say why an extracted answer would be too costly to check, or None if it is fine.

    Catches what makes a symbolic checker hang or eat memory: very long answers, very deep
    nesting, integer powers or factorials with millions of digits. The check is conservative
    (it only flags values no gold answer of a benchmark has); the worker's hard timeout stays
    the backstop for anything it misses.
    """
    config = config or MathExtraction()
    if len(answer) > config.max_answer_chars:
        return f"answer has {len(answer)} characters (limit {config.max_answer_chars})"
    depth = _brace_depth(answer)
    if depth > config.max_depth:
        return f"answer nests braces {depth} deep (limit {config.max_depth})"
    for match in _INT_POWER.finditer(answer):
        digits = _digits_of_power(answer, match.start())
        if digits > 100_000:
            return f"integer power with about 10^{min(digits, 1e300):.3g} digits"
    for match in _FACTORIAL.finditer(answer):
        if int(match.group(1)) > 5_000:
            return f"factorial of {match.group(1)}"
    return None


# --- code ------------------------------------------------------------------------------------

_FENCE = re.compile(
    r"^[ \t]*(`{3,}|~{3,})[ \t]*([\w+#.-]*)[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.DOTALL | re.MULTILINE
)
_UNCLOSED_FENCE = re.compile(
    r"^[ \t]*(`{3,})[ \t]*([\w+#.-]*)[^\n]*\n(.*)\Z", re.DOTALL | re.MULTILINE
)


@attrs.frozen(slots=True, kw_only=True)
class CodeExtraction:
    """How the program is taken from a code response.

    Args:
        languages: fence tags taken as Python (``""`` is an untagged fence).
        select: which fenced block wins: ``last``, ``first``, ``longest``, or ``entry_point``
            (the last block that defines the problem's entry point, else the last block).
        join: concatenate every Python block in order instead of choosing one.
        raw_fallback: use the whole response when it has no fenced block.
        unclosed: accept a final fence that was never closed (a truncated response).
    """

    languages: tuple[str, ...] = attrs.field(
        default=("python", "py", "python3", "py3", ""), converter=tuple
    )
    select: str = attrs.field(
        default="entry_point",
        validator=attrs.validators.in_(("last", "first", "longest", "entry_point")),
    )
    join: bool = False
    raw_fallback: bool = True
    unclosed: bool = True

    @property
    def protocol(self) -> str:
        """Which program is graded, in words (for reports)."""
        words = ["every fenced Python block, joined" if self.join else _SELECT_WORDS[self.select]]
        if self.unclosed:
            words.append("an unclosed last fence")
        if self.raw_fallback:
            words.append("the whole response")
        return ", else ".join(words)


_SELECT_WORDS = {
    "last": "the last fenced Python block",
    "first": "the first fenced Python block",
    "longest": "the longest fenced Python block",
    "entry_point": "the last fenced Python block defining the entry point (or the last one)",
}


def extract_code(
    text: str, config: CodeExtraction | None = None, *, entry_point: str | None = None
) -> tuple[str, str]:
    """Return ``(code, how)``: the program in a response and the rule that found it.

    ``how`` is ``fenced``, ``joined``, ``unclosed-fence``, ``raw`` or ``none``.
    """
    config = config or CodeExtraction()
    languages = {lang.lower() for lang in config.languages}
    blocks = [body for _fence, lang, body in _FENCE.findall(text) if lang.lower() in languages]
    if blocks:
        if config.join:
            return "\n\n".join(blocks), "joined"
        return _choose(blocks, config.select, entry_point), "fenced"
    if config.unclosed:
        match = _UNCLOSED_FENCE.search(text)
        if match and match.group(2).lower() in languages:
            return match.group(3), "unclosed-fence"
    if config.raw_fallback and text.strip():
        return text, "raw"
    return "", "none"


def _choose(blocks: Sequence[str], select: str, entry_point: str | None) -> str:
    if select == "first":
        return blocks[0]
    if select == "longest":
        return max(blocks, key=len)
    if select == "entry_point" and entry_point:
        pattern = re.compile(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", re.M)
        for block in reversed(blocks):
            if pattern.search(block):
                return block
    return blocks[-1]
