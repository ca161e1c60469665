"""The numeric leaf rule of the exact math rules, on sympy values directly (no parsing)."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

sympy = pytest.importorskip("sympy")
rules = pytest.importorskip("tracedistill.verifiers._math_rules")

fractions = st.fractions(min_value=Fraction(-(10**30)), max_value=Fraction(10**30)).filter(
    lambda f: f != 0
)


def _unevaluated(f: Fraction, power: int) -> object:
    # As math-verify leaves \frac{p}{q \cdot 2^{k}}: an unevaluated product of powers.
    denominator = sympy.Pow(sympy.Pow(2, power, evaluate=False), -1, evaluate=False)
    return sympy.Mul(sympy.Rational(f.numerator, f.denominator), denominator, evaluate=False)


@settings(max_examples=200, deadline=None)
@given(fractions, fractions, st.integers(0, 300), st.integers(0, 300))
def test_exact_values_are_equal_exactly_when_they_are(
    a: Fraction, b: Fraction, j: int, k: int
) -> None:
    same = a / 2**j == b / 2**k
    assert rules.numbers_equal(_unevaluated(a, j), _unevaluated(b, k)) is same


@settings(max_examples=200, deadline=None)
@given(st.floats(1e-300, 1e300), st.integers(6, 15))
@example(6.103515625e-05, 9)  # an exact tie, rounded half to even when written
def test_a_decimal_equals_the_value_it_rounds(x: float, digits: int) -> None:
    exact = sympy.Rational(Fraction(x))
    written = sympy.Float(f"{x:.{digits}g}", 30)
    assert rules.numbers_equal(written, exact)
    # Two units more in the 6th significant digit is another value, at any magnitude.
    six = f"{x:.5e}"
    step = sympy.Rational(10) ** (int(six.split("e")[1]) - 5)
    assert not rules.numbers_equal(sympy.Float(six, 30) + sympy.Float(2 * step, 30), exact)


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (sympy.sqrt(2) / 2**60, sympy.sqrt(2) / 2**61, False),
        (sympy.sqrt(8), 2 * sympy.sqrt(2), True),
        (sympy.pi * 10**40 + 1, sympy.pi * 10**40, False),
        (sympy.Float("0.5"), sympy.Rational(1, 2), True),
        (sympy.Float("1e-300"), sympy.Float("2e-300"), False),
        (sympy.Matrix([[1, 2]]), sympy.Matrix([[1, sympy.Float("2.0")]]), True),
        (sympy.Matrix([[1, 2]]), sympy.Matrix([[1, 2, 3]]), False),
        (sympy.Symbol("x") / 2**99, sympy.Symbol("x") / 2**98, False),
    ],
)
def test_numbers_equal_cases(a: object, b: object, equal: bool) -> None:
    assert rules.numbers_equal(a, b) is equal
