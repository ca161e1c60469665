r"""Equivalence rules layered on math-verify, where its own rules give wrong verdicts.

math-verify stays the engine: it parses both answers and walks their structure (sets, tuples,
intervals, relations, matrices, equations, text). These rules change only what it gets wrong:

- **Numbers** (its leaf comparison, ``grader.sympy_numeric_eq``): math-verify rounds decimals to
  6 decimal places (so ``0.0000001`` equals ``0.0000002``) and compares other closed forms by
  ``(a - b).evalf(chop=True) == 0``, which chops any difference below about ``1e-15`` (so
  ``\frac{1}{2^{99}}`` equals ``\frac{1}{2^{98}}``). :func:`numbers_equal` replaces that one leaf:
  exact values (integers, fractions, powers, roots, pi) compare exactly, decimals compare
  relative to their magnitude and to the digits written (see :func:`numbers_equal`).
- **Sets written as inequalities**: math-verify turns an inequality into a set only when the
  prediction is the set, so ``(1, 2)`` vs ``1 < x < 2`` depended on which one was the gold; and
  ``x < 1 \text{ or } x > 2`` parses as a set of two inequalities that never equals the union
  ``(-\infty, 1) \cup (2, \infty)``. :func:`as_sets` and ``allow_set_relation_comp`` make both
  orders agree.
- **Text before parsing** (:func:`normalize`): a thin space as thousands separator
  (``1\,000`` parsed as ``1 \cdot 0 = 0``) and e-notation (``1e-7`` parsed as ``e - 7``).

This module runs only inside the math worker processes (it imports sympy and math-verify).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

# sympy ships no type information.
import sympy  # type: ignore[import-untyped]
from math_verify import grader

__all__ = ["as_sets", "engine_rules", "normalize", "numbers_equal"]

#: Significant digits a decimal must match when it is compared with an exact value or with a
#: less precise decimal: math-verify's 6 decimal places, made relative to the magnitude.
DECIMAL_DIGITS = 6
#: Digits at which two exact irrational values must agree (they are evaluated to 25 more).
EXACT_DIGITS = 50
#: A binary float written in an answer carries at most this many meaningful digits.
_FLOAT_DIGITS = 15

_THIN_SPACE_THOUSANDS = re.compile(r"(?<![\d.])(\d{1,3})((?:\\[,;: ]\d{3})+)(?![\d.])")
_E_NOTATION = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)[eE]([+-]?\d{1,4})(?![\w.])")


def normalize(answer: str) -> str:
    r"""Rewrite the notations math-verify misreads, before it parses ``answer``.

    ``1\,000`` (a thin-space thousands separator) becomes ``1000``; ``1.5e-7`` becomes
    ``1.5\times 10^{-7}``. Anything else is left as written.
    """
    if "\\" in answer:
        answer = _THIN_SPACE_THOUSANDS.sub(
            lambda m: m.group(1) + re.sub(r"\\[,;: ]", "", m.group(2)), answer
        )
    if "e" in answer or "E" in answer:
        answer = _E_NOTATION.sub(lambda m: f"{m.group(1)}\\times 10^{{{m.group(2)}}}", answer)
    return answer


# --- numbers --------------------------------------------------------------------------------


def _percent_readings(value: Any) -> list[Any]:
    # latex2sympy2 reads "X\%" as X * UnevaluatedExpr(1/100): the answer may mean X/100 or X
    # (graders of MATH drop the percent sign), so both readings are tried.
    number = grader.get_pct_val(value)
    if number is None:
        return [value]
    return [number / 100, number]


def _written_digits(value: Any) -> int | None:
    """Significant digits of the least precise decimal written in ``value``; None if exact."""
    digits: int | None = None
    for atom in value.atoms(sympy.Float):
        text = repr(float(atom)).lower().lstrip("-")
        mantissa = text.split("e")[0].replace(".", "").lstrip("0").rstrip("0")
        count = min(max(len(mantissa), 1), _FLOAT_DIGITS)
        digits = count if digits is None else min(digits, count)
    return digits


_TIE_SLACK = 1 + sympy.Rational(1, 10**12)


def _agree(a: Any, b: Any, digits: int) -> bool:
    """Whether ``a`` and ``b`` differ by at most half a unit in their ``digits``-th digit."""
    work = digits + 25
    try:
        va, vb = sympy.N(a, work), sympy.N(b, work)
        if not (va.is_number and vb.is_number) or va.has(sympy.nan, sympy.zoo):
            return False
        if not (va.is_finite and vb.is_finite):
            return bool(va == vb)
        # The smaller magnitude sets the digit positions: 0.999999 is not 1 to 6 digits.
        scale = min(abs(va), abs(vb))
        if scale == 0:
            return bool(va == vb)
        exponent = sympy.floor(sympy.log(scale, 10).evalf(work))
        limit = sympy.Rational(1, 2) * sympy.Integer(10) ** (exponent - digits + 1)
        # A decimal written from an exact tie (1/16384 = 6.103515625e-05 to 9 digits is
        # 6.10351562e-05, rounded half to even) lies exactly half a unit away; its binary
        # Float lands a hair either side, so the bound gets a slack far below any digit.
        return bool(abs(va - vb) <= limit * _TIE_SLACK)
    except (TypeError, ValueError, ArithmeticError, AttributeError):
        return False


def _values_equal(a: Any, b: Any) -> bool:
    a, b = grader.safe_sympy_doit(a), grader.safe_sympy_doit(b)
    if not (getattr(a, "is_number", False) and getattr(b, "is_number", False)):
        # With free symbols, only exact (symbolic) equality counts; math-verify's simplify
        # step after this one decides it.
        return False
    digits_a, digits_b = _written_digits(a), _written_digits(b)
    if digits_a is None and digits_b is None:
        if a.is_Rational and b.is_Rational:
            return bool(a == b)
        return _agree(a, b, EXACT_DIGITS)
    # A decimal must be right to every digit it gives, and to at least DECIMAL_DIGITS.
    written = min(d for d in (digits_a, digits_b) if d is not None)
    return _agree(a, b, max(DECIMAL_DIGITS, written))


def numbers_equal(a: Any, b: Any, float_rounding: int = 6, numeric_precision: int = 15) -> bool:
    r"""Whether two parsed values are the same number (math-verify's leaf comparison, fixed).

    - Exact values: fractions and integers compare exactly (``\frac{1}{2^{99}}`` is not
      ``\frac{1}{2^{98}}``, ``2^{100}+1`` is not ``2^{100}``); other closed forms (roots, pi,
      logs) must agree to 50 significant digits.
    - A decimal is compared relative to the magnitude: it must agree with the other side within
      half a unit of its own last written digit, and of the 6th significant digit at least
      (``0.333333`` equals ``\frac{1}{3}``; ``0.333`` does not; ``0.0000001`` is not
      ``0.0000002``; ``12345.67`` is not ``12345.68``).
    - ``X\%`` matches ``X/100`` and ``X``.
    - Matrices compare element by element; values with free symbols are left to math-verify's
      symbolic step (exact ``simplify``).

    ``float_rounding`` and ``numeric_precision`` are math-verify's arguments, unused here.
    """
    del float_rounding, numeric_precision
    matrix_types = (sympy.MatrixBase, sympy.MatrixExpr)
    if isinstance(a, matrix_types) or isinstance(b, matrix_types):
        a, b = grader.safe_sympy_doit(a), grader.safe_sympy_doit(b)
        if not (isinstance(a, sympy.MatrixBase) and isinstance(b, sympy.MatrixBase)):
            return False
        return a.shape == b.shape and all(
            numbers_equal(x, y) for x, y in zip(a.flat(), b.flat(), strict=True)
        )
    return any(_values_equal(x, y) for x in _percent_readings(a) for y in _percent_readings(b))


def _symbolic_equal(a: Any, b: Any) -> bool:
    """math-verify's ``simplify(a - b) == 0`` step, skipped where :func:`numbers_equal` decided.

    For two closed-form numbers the numeric rule is already exact (rationals) or evaluated to
    50 digits, so ``simplify`` (the slowest step of a failing comparison) cannot change the
    verdict; expressions with free symbols still get it.
    """
    if getattr(a, "is_number", False) and getattr(b, "is_number", False):
        return False
    return bool(_SYMBOLIC_EQ(a, b))


_SYMBOLIC_EQ = grader.sympy_symbolic_eq


@contextlib.contextmanager
def engine_rules() -> Iterator[None]:
    """Within the block, math-verify compares numbers with :func:`numbers_equal`.

    math-verify calls its leaf comparisons by module-level name from ``sympy_expr_eq``, so
    swapping the two names changes exactly those leaves and nothing else of its walk. The
    swap lives only for one ``verify`` call in a worker process (the parent's math-verify is
    untouched); a math-verify release that renames them fails at import here, and one that
    stops calling them fails the equivalence suite (tests/verifiers/math_equivalence.jsonl).
    """
    saved = grader.sympy_numeric_eq, grader.sympy_symbolic_eq
    grader.sympy_numeric_eq, grader.sympy_symbolic_eq = numbers_equal, _symbolic_equal
    try:
        yield
    finally:
        grader.sympy_numeric_eq, grader.sympy_symbolic_eq = saved


# --- sets written as inequalities ----------------------------------------------------------------


_OPEN_SIDES = {
    # relation type -> (set of x with "x REL c", as a function of c)
    "StrictLessThan": lambda c: sympy.Interval.open(-sympy.oo, c),
    "LessThan": lambda c: sympy.Interval(-sympy.oo, c),
    "StrictGreaterThan": lambda c: sympy.Interval.open(c, sympy.oo),
    "GreaterThan": lambda c: sympy.Interval(c, sympy.oo),
    "Unequality": lambda c: sympy.Union(
        sympy.Interval.open(-sympy.oo, c), sympy.Interval.open(c, sympy.oo)
    ),
}
_FLIPPED = {
    "StrictLessThan": "StrictGreaterThan",
    "LessThan": "GreaterThan",
    "StrictGreaterThan": "StrictLessThan",
    "GreaterThan": "LessThan",
    "Unequality": "Unequality",
}


def _simple_set(relation: Any) -> Any:
    r"""``x < c`` (or ``c < x``, ``x \ne c``, a chain ``a < x < b``) as a set; None if not one."""
    if isinstance(relation, sympy.And):
        parts = [_simple_set(arg) for arg in relation.args]
        if any(part is None for part in parts):
            return None
        return sympy.Intersection(*parts)
    kind = type(relation).__name__
    if kind not in _OPEN_SIDES:
        return None
    lhs, rhs = relation.lhs, relation.rhs
    if isinstance(lhs, sympy.Symbol) and rhs.is_number and rhs.is_real:
        return _OPEN_SIDES[kind](rhs)
    if isinstance(rhs, sympy.Symbol) and lhs.is_number and lhs.is_real:
        return _OPEN_SIDES[_FLIPPED[kind]](lhs)
    return None


def _relations_as_set(value: Any) -> Any:
    """Inequalities in one variable (``1 < x < 2``, ``x<1 or x>2``) as the set of reals.

    Simple forms are converted directly (math-verify's ``as_set`` runs a sympy solver, about
    0.1 s each); others go through ``as_set``. Anything else is returned unchanged.
    """
    if isinstance(value, sympy.FiniteSet) and len(value.args) >= 2:
        relations = list(value.args)  # "x<1 or x>2": the words became a set's commas
    elif grader.is_relation(value) and not grader.is_equation(value):
        relations = [value]
    else:
        return value
    if not all(grader.is_relation(r) and not grader.is_equation(r) for r in relations):
        return value
    if len(set().union(*(r.free_symbols for r in relations))) != 1:
        return value
    simple = [_simple_set(r) for r in relations]
    if all(part is not None for part in simple):
        return sympy.Union(*simple)
    try:
        return sympy.Or(*relations).as_set()
    except Exception:  # sympy raises many types; the value stays as parsed
        return value


def _is_real_set(value: Any) -> bool:
    return isinstance(value, sympy.Set) and not isinstance(value, sympy.FiniteSet)


def as_sets(gold: list[Any], pred: list[Any]) -> tuple[list[Any], list[Any]]:
    r"""Read inequalities in one variable as sets of reals where the other answer is a set.

    math-verify turns an inequality into a set only when the prediction is the set, so
    ``(1, 2)`` vs ``1 < x < 2`` depended on which one was the gold; and it parses the words
    "or" / "and" between inequalities into a set of relations, which never equals
    ``(-\infty, 1) \cup (2, \infty)``. Rewritten when the other answer is an interval or a
    union of them, in either role.
    """
    if any(_is_real_set(v) for v in gold):
        pred = [_relations_as_set(v) for v in pred]
    if any(_is_real_set(v) for v in pred):
        gold = [_relations_as_set(v) for v in gold]
    return gold, pred
