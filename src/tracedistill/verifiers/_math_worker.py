"""The math checks that run inside worker processes (math-verify and sympy live only here)."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

from tracedistill.verifiers.extract import MathExtraction, extract_math_answer, too_expensive

_GOLD_CACHE: OrderedDict[str, list[Any]] = OrderedDict()
_GOLD_CACHE_SIZE = 4096


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
    from math_verify import parse, verify

    root = logging.getLogger("math_verify")
    root.addHandler(_TIMEOUTS)
    root.propagate = False  # the worker's stderr is not read; the flag carries what matters
    verify(parse("$\\frac{1}{2}$"), parse("$0.5$"))


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


def _gold(answer: str, timeout: int) -> list[Any]:
    cached = _GOLD_CACHE.get(answer)
    if cached is not None:
        _GOLD_CACHE.move_to_end(answer)
        return cached
    parsed = _parse(wrap(answer), timeout)
    _GOLD_CACHE[answer] = parsed
    if len(_GOLD_CACHE) > _GOLD_CACHE_SIZE:
        _GOLD_CACHE.popitem(last=False)
    return parsed


def _shown(parsed: list[Any]) -> str:
    return str(parsed[-1]) if parsed else ""


def handle(job: dict[str, Any]) -> Any:
    """Run one job: ``check`` (gold vs response) or ``parse_golds``."""
    op = job["op"]
    timeout = int(job.get("timeout", 5))
    if op == "parse_golds":
        out: list[str | None] = []
        for answer in job["answers"]:
            parsed = _gold(answer, timeout) if answer and answer.strip() else []
            out.append(_shown(parsed) if parsed else None)
        return out
    if op == "check":
        return check(job["gold"], job["response"], job["config"], timeout)
    raise ValueError(f"unknown math job {op!r}")


def check(gold: str, response: str, config: MathExtraction, timeout: int) -> dict[str, Any]:
    """Check ``response`` against ``gold``; return passed, reason and details."""
    from math_verify import verify

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
    gold_parsed = _gold(gold, timeout)
    if not gold_parsed:
        details["gold"] = gold
        return {"passed": False, "reason": "invalid-gold", "details": details}
    pred_parsed = _parse(wrap(answer), timeout)
    details["parsed"] = _shown(pred_parsed)[:300]
    details["gold_parsed"] = _shown(gold_parsed)[:300]
    if not pred_parsed:
        reason = "timeout" if _TIMEOUTS.hit else "no-answer"
        return {"passed": False, "reason": reason, "details": details}
    ok = bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))  # gold first
    details["check_s"] = round(time.perf_counter() - start, 4)
    if not ok and _TIMEOUTS.hit:
        details["error"] = "math-verify timed out"
        return {"passed": False, "reason": "timeout", "details": details}
    return {"passed": ok, "reason": "passed" if ok else "wrong-answer", "details": details}
