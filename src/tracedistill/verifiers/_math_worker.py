"""The math checks that run inside worker processes (math-verify and sympy live only here)."""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from typing import Any

from tracedistill.verifiers.extract import MathExtraction, extract_math_answer, too_expensive

#: Equivalence rules a check can use: ``exact`` (math-verify with the fixes of
#: :mod:`tracedistill.verifiers._math_rules`) or ``math-verify`` (math-verify alone).
RULES = ("exact", "math-verify")

# Parsed answers by (rules, text): gold answers and predictions apart, so a stream of
# distinct predictions never evicts the golds.
_GOLD_CACHE: OrderedDict[tuple[str, str], list[Any]] = OrderedDict()
_PRED_CACHE: OrderedDict[tuple[str, str], list[Any]] = OrderedDict()
_CACHE_SIZE = 4096


class _TimeoutFlag(logging.Handler):
    """Notices math-verify's own (soft) timeouts, which it reports only as a log warning."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.hit = False

    def emit(self, record: logging.LogRecord) -> None:
        if "timeout" in record.getMessage().lower():
            self.hit = True


_TIMEOUTS = _TimeoutFlag()


def warm_up() -> None:
    """Import math-verify and run one check so the first real job is not slow."""
    root = logging.getLogger("math_verify")
    root.addHandler(_TIMEOUTS)
    root.propagate = False  # the worker's stderr is not read; the flag carries what matters
    for rules in RULES:
        equivalent(_read("\\frac{1}{2}", rules, 5), _read("0.5", rules, 5), rules, 5)


def _extraction_config() -> list[Any]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    return [LatexExtractionConfig(), ExprExtractionConfig()]


def wrap(answer: str) -> str:
    r"""Put an answer in ``\boxed{}`` (unless it already is) so math-verify reads it as LaTeX."""
    stripped = answer.strip()
    if "\\boxed" in stripped:
        return stripped
    return "\\boxed{" + stripped + "}"


def _parse(text: str, timeout: int) -> list[Any]:
    from math_verify import parse

    return list(parse(text, extraction_config=_extraction_config(), parsing_timeout=timeout))


def _read(answer: str, rules: str, timeout: int) -> list[Any]:
    """Parse one answer as the ``rules`` read it (``exact`` first rewrites misread notations)."""
    if rules == "exact":
        from tracedistill.verifiers._math_rules import normalize

        answer = normalize(answer)
    return _parse(wrap(answer), timeout)


def _cached(
    answer: str, timeout: int, rules: str, cache: OrderedDict[tuple[str, str], list[Any]]
) -> list[Any]:
    """Parse ``answer`` through the LRU caches (gold answers first); store it in ``cache``."""
    key = (rules, answer)
    for known in (_GOLD_CACHE, _PRED_CACHE):
        cached = known.get(key)
        if cached is not None:
            known.move_to_end(key)
            return cached
    parsed = _read(answer, rules, timeout)
    if not _TIMEOUTS.hit:  # a parse cut by the soft timeout depends on load: not kept
        cache[key] = parsed
        if len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)
    return parsed


def _gold(answer: str, timeout: int, rules: str = "exact") -> list[Any]:
    return _cached(answer, timeout, rules, _GOLD_CACHE)


def _prediction(answer: str, timeout: int, rules: str) -> list[Any]:
    if rules == "math-verify":
        return _read(answer, rules, timeout)  # as earlier releases did: parsed every time
    # Samples of one problem often give the same answer, often the gold's own text.
    return _cached(answer, timeout, rules, _PRED_CACHE)


def equivalent(gold: list[Any], pred: list[Any], rules: str, timeout: int) -> bool:
    """Whether a parsed prediction matches a parsed gold answer under ``rules`` (gold first)."""
    from math_verify import verify

    if rules == "math-verify":
        return bool(verify(gold, pred, timeout_seconds=timeout))
    from tracedistill.verifiers._math_rules import as_sets, engine_rules

    gold, pred = as_sets(gold, pred)
    with engine_rules():
        # Inequalities and sets compare in both roles (math-verify's default: only when the
        # prediction is the set).
        return bool(verify(gold, pred, timeout_seconds=timeout, allow_set_relation_comp=True))


def _shown(parsed: list[Any]) -> str:
    return str(parsed[-1]) if parsed else ""


# A control sequence: a backslash and a run of letters (a control word) or any one other
# character (a control symbol such as \{ or \\); a lone backslash at the end is neither.
_CONTROL = re.compile(r"\\([A-Za-z]+|.)?", re.DOTALL)
_ENV_NAME = re.compile(r"\s*\{([^{}]*)\}")


def malformed_latex(answer: str) -> str | None:
    r"""Why ``answer`` is not well-formed LaTeX (truncated or garbled), or None if it is.

    Checks the structure TeX itself insists on: unescaped braces balance and never close
    before they open, every ``\left`` has its ``\right`` (and after it), every ``\begin{env}``
    its ``\end{env}``, and no backslash dangles at the end. Escaped braces (``\{``, ``\}``)
    and brackets are not counted: ``\left\{ ... \right.`` and ``[0, 1)`` are valid.
    """
    braces = 0
    delimiters = 0
    environments: list[str] = []
    pos = 0
    while pos < len(answer):
        char = answer[pos]
        if char == "\\":
            match = _CONTROL.match(answer, pos)
            assert match is not None  # the pattern matches any backslash
            name = match.group(1)
            if name is None:
                return "a dangling backslash at the end"
            pos = match.end()
            if name == "left":
                delimiters += 1
            elif name == "right":
                delimiters -= 1
                if delimiters < 0:
                    return "a \\right without a \\left before it"
            elif name in ("begin", "end"):
                env = _ENV_NAME.match(answer, pos)
                if env is None:
                    return f"a \\{name} without an environment name"
                pos = env.end()
                if name == "begin":
                    environments.append(env.group(1).strip())
                elif not environments or environments.pop() != env.group(1).strip():
                    return f"an unmatched \\end{{{env.group(1).strip()}}}"
            continue
        if char == "{":
            braces += 1
        elif char == "}":
            braces -= 1
            if braces < 0:
                return "a closing brace without an opening one"
        pos += 1
    if braces:
        return f"{braces} unclosed brace(s)"
    if delimiters:
        return "a \\left without a \\right"
    if environments:
        return f"an unclosed \\begin{{{environments[-1]}}}"
    return None


def _is_math(value: Any) -> bool:
    # sympy ships no type information (the lead may add "sympy.*" to mypy's overrides).
    from sympy import Basic  # type: ignore[import-untyped]
    from sympy.matrices import MatrixBase  # type: ignore[import-untyped]

    return isinstance(value, (Basic, MatrixBase))


def parse_gold(answer: str, timeout: int, rules: str = "exact") -> str | None:
    r"""The normalized form of a gold answer, or None if it is not a checkable answer.

    math-verify's ``parse`` falls back to the raw string when nothing parses (``\frac{``
    gives ``['{\frac{}']``); ``verify`` then only ever matches an identical unparsed string,
    so such a gold is rejected: at least one parsed element must be a math object (a sympy
    expression, number, set, interval, relation or matrix). Text answers such as
    ``\text{Evelyn}`` or ``\text{(C)}`` parse to symbols and are kept. Malformed LaTeX is
    rejected before parsing, since math-verify may still read a number out of it (``1}``).
    """
    if not answer or not answer.strip() or malformed_latex(answer) is not None:
        return None
    parsed = _gold(answer, timeout, rules)
    if not any(_is_math(value) for value in parsed):
        return None
    return _shown(parsed)


def handle(job: dict[str, Any]) -> Any:
    """Run one job: ``check`` (gold vs response) or ``parse_golds``."""
    op = job["op"]
    timeout = int(job.get("timeout", 5))
    _TIMEOUTS.hit = False
    rules = str(job.get("rules", "exact"))
    if rules not in RULES:
        raise ValueError(f"unknown math rules {rules!r}; known: {RULES}")
    if op == "parse_golds":
        return [parse_gold(answer, timeout, rules) for answer in job["answers"]]
    if op == "check":
        return check(job["gold"], job["response"], job["config"], timeout, rules)
    raise ValueError(f"unknown math job {op!r}")


def check(
    gold: str, response: str, config: MathExtraction, timeout: int, rules: str = "exact"
) -> dict[str, Any]:
    """Check ``response`` against ``gold``; return passed, reason and details."""
    start = time.perf_counter()
    _TIMEOUTS.hit = False
    details: dict[str, Any] = {}
    answer, how = extract_math_answer(response, config)
    details["extracted"] = answer
    details["extraction"] = how
    if answer is None:
        return {"passed": False, "reason": "no-answer", "details": details}
    if len(answer) > 300:
        details["extracted"] = answer[:150] + "..." + answer[-150:]
    costly = too_expensive(answer, config) if config.prescreen else None
    if costly is not None:
        details["rejected"] = costly
        return {"passed": False, "reason": "timeout", "details": details}
    gold_parsed = _gold(gold, timeout, rules)
    if not gold_parsed:
        details["gold"] = gold
        return {"passed": False, "reason": "invalid-gold", "details": details}
    pred_parsed = _prediction(answer, timeout, rules)
    details["parsed"] = _shown(pred_parsed)[:300]
    details["gold_parsed"] = _shown(gold_parsed)[:300]
    if not pred_parsed:
        reason = "timeout" if _TIMEOUTS.hit else "no-answer"
        return {"passed": False, "reason": reason, "details": details}
    ok = equivalent(gold_parsed, pred_parsed, rules, timeout)
    details["check_s"] = round(time.perf_counter() - start, 4)
    if not ok and _TIMEOUTS.hit:
        details["error"] = "math-verify timed out"
        return {"passed": False, "reason": "timeout", "details": details}
    return {"passed": ok, "reason": "passed" if ok else "wrong-answer", "details": details}
