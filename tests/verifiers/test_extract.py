from __future__ import annotations

import time

import pytest

from tracedistill.verifiers.extract import (
    CodeExtraction,
    MathExtraction,
    extract_code,
    extract_math_answer,
    last_boxed,
    too_expensive,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so \boxed{42}.", "42"),
        (r"\boxed{1} then \boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
        (r"\boxed 5 done", "5"),
        (r"\fbox{x+1}", "x+1"),
        (r"\boxed{unclosed", None),
        ("no answer here", None),
        (r"\boxed{a} and a broken \boxed{b", "a"),
    ],
)
def test_last_boxed(text: str, expected: str | None) -> None:
    assert last_boxed(text) == expected


def test_deep_nesting_is_no_answer_and_fast() -> None:
    text = r"\boxed{" + "{" * 100_000 + "}" * 100_000 + "}"
    start = time.perf_counter()
    assert last_boxed(text, max_depth=40) is None
    assert time.perf_counter() - start < 1.0


def test_fallbacks_in_order_and_configurable() -> None:
    text = "Thus the final answer is 7.\nAlso $x = 3$"
    assert extract_math_answer(text) == ("7", "answer_is")
    only_math = MathExtraction(fallbacks=("last_math",))
    assert extract_math_answer(text, only_math) == ("x = 3", "last_math")
    assert extract_math_answer(text, MathExtraction(fallbacks=())) == (None, "none")
    assert extract_math_answer(
        "it is 1,234 apples", MathExtraction(fallbacks=("last_number",))
    ) == ("1234", "last_number")
    with pytest.raises(ValueError, match="unknown math fallbacks"):
        MathExtraction(fallbacks=("guess",))


def test_megabyte_of_text_is_linear() -> None:
    text = "word " * 200_000 + r"\boxed{12}"
    start = time.perf_counter()
    assert extract_math_answer(text) == ("12", "boxed")
    assert extract_math_answer("x" * 1_000_000)[0] is None
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    "answer",
    ["9^{9^{9}}", "10^{10^{10}}", "2^{10000000}", "100000!", "{" * 50 + "}" * 50, "1" * 5000],
)
def test_too_expensive_flags_hostile_answers(answer: str) -> None:
    assert too_expensive(answer) is not None


@pytest.mark.parametrize("answer", ["2^{10}", r"\frac{1}{2}", "10!", "3^{4^{2}}", r"\sqrt{2}"])
def test_too_expensive_leaves_normal_answers(answer: str) -> None:
    assert too_expensive(answer) is None


RESPONSE = """Here is a helper:
```python
def helper():
    return 1
```
And the solution:
```python
def solve(x):
    return x + 1
```
Example usage:
```python
print(solve(1))
```
"""


def test_code_extraction_rules() -> None:
    code, how = extract_code(RESPONSE, entry_point="solve")
    assert how == "fenced" and "def solve" in code and "print" not in code
    assert "print" in extract_code(RESPONSE, CodeExtraction(select="last"))[0]
    assert "helper" in extract_code(RESPONSE, CodeExtraction(select="first"))[0]
    joined, how = extract_code(RESPONSE, CodeExtraction(join=True))
    assert how == "joined" and "helper" in joined and "print" in joined


def test_code_extraction_fallbacks() -> None:
    assert extract_code("def f():\n    return 1\n") == ("def f():\n    return 1\n", "raw")
    assert extract_code("x", CodeExtraction(raw_fallback=False)) == ("", "none")
    truncated = "Sure:\n```python\ndef f():\n    return 2\n"
    assert extract_code(truncated) == ("def f():\n    return 2\n", "unclosed-fence")
    other = "```javascript\nconsole.log(1)\n```"
    assert extract_code(other, CodeExtraction(raw_fallback=False)) == ("", "none")
