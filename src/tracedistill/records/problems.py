"""Problems and the tests that check a code answer."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Self, cast

import attrs

from tracedistill.records.base import (
    SCHEMA_VERSION,
    TaskKind,
    _build,
    _frozen_mapping,
    _non_empty_str,
    _non_negative,
    _to_tuple,
    content_hash,
)


@attrs.frozen(slots=True)
class StdioCase:
    """One stdin/stdout test: the program reads ``stdin`` and must print ``stdout``."""

    stdin: str = attrs.field(validator=attrs.validators.instance_of(str))
    stdout: str = attrs.field(validator=attrs.validators.instance_of(str))

    def to_dict(self) -> dict[str, str]:
        """Return a JSON-compatible dict."""
        return {"stdin": self.stdin, "stdout": self.stdout}


@attrs.frozen(slots=True, kw_only=True)
class FunctionTests:
    """Function-call tests in the evalplus style.

    The solution's ``entry_point`` is called with each argument list of ``base_inputs`` (and of
    ``plus_inputs``); its result is compared with ``expected_*`` when given, otherwise with the
    output of ``reference_solution`` on the same inputs. Floats compare within ``atol``.
    """

    entry_point: str = attrs.field(validator=attrs.validators.min_len(1))
    base_inputs: tuple[Any, ...] = attrs.field(converter=_to_tuple)
    plus_inputs: tuple[Any, ...] = attrs.field(default=(), converter=_to_tuple)
    expected_base: tuple[Any, ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(_to_tuple)
    )
    expected_plus: tuple[Any, ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(_to_tuple)
    )
    reference_solution: str | None = None
    atol: float = attrs.field(default=0.0, converter=float, validator=_non_negative)

    def __attrs_post_init__(self) -> None:
        if self.reference_solution is None and (
            self.expected_base is None or (self.plus_inputs and self.expected_plus is None)
        ):
            raise ValueError(
                f"FunctionTests for {self.entry_point!r} need expected outputs or a "
                "reference_solution to compute them"
            )
        for name, inputs, expected in (
            ("base", self.base_inputs, self.expected_base),
            ("plus", self.plus_inputs, self.expected_plus),
        ):
            if expected is not None and len(expected) != len(inputs):
                raise ValueError(
                    f"expected_{name} has {len(expected)} outputs for {len(inputs)} inputs"
                )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict."""
        return {
            "entry_point": self.entry_point,
            "base_inputs": list(self.base_inputs),
            "plus_inputs": list(self.plus_inputs),
            "expected_base": None if self.expected_base is None else list(self.expected_base),
            "expected_plus": None if self.expected_plus is None else list(self.expected_plus),
            "reference_solution": self.reference_solution,
            "atol": self.atol,
        }


def _stdio_cases(value: Iterable[StdioCase | Mapping[str, str]]) -> tuple[StdioCase, ...]:
    return tuple(c if isinstance(c, StdioCase) else StdioCase(**c) for c in _to_tuple(value))


def _function_tests(value: FunctionTests | Mapping[str, Any] | None) -> FunctionTests | None:
    if value is None or isinstance(value, FunctionTests):
        return value
    return FunctionTests(**value)


@attrs.frozen(slots=True, kw_only=True)
class CodeTests:
    """The tests a code problem's solution must pass: any mix of the three formats.

    ``setup`` is code run before the asserts (imports, helpers). A solution passes only if it
    passes every test of every format present.
    """

    asserts: tuple[str, ...] = attrs.field(default=(), converter=_to_tuple)
    stdio: tuple[StdioCase, ...] = attrs.field(default=(), converter=_stdio_cases)
    function: FunctionTests | None = attrs.field(default=None, converter=_function_tests)
    setup: str = ""

    def __attrs_post_init__(self) -> None:
        if not (self.asserts or self.stdio or self.function):
            raise ValueError("CodeTests holds no test: give asserts, stdio cases or function tests")

    @property
    def count(self) -> int:
        """Number of individual test cases."""
        fn = self.function
        n_fn = 0 if fn is None else len(fn.base_inputs) + len(fn.plus_inputs)
        return len(self.asserts) + len(self.stdio) + n_fn

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict."""
        return {
            "asserts": list(self.asserts),
            "stdio": [c.to_dict() for c in self.stdio],
            "function": None if self.function is None else self.function.to_dict(),
            "setup": self.setup,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build from :meth:`to_dict`'s output."""
        return cast(Self, _build(cls, data))


def _code_tests(value: CodeTests | Mapping[str, Any] | None) -> CodeTests | None:
    if value is None or isinstance(value, CodeTests):
        return value
    return CodeTests.from_dict(value)


def _problem_id(problem: Problem) -> str:
    return content_hash(
        {
            "kind": str(problem.kind),
            "prompt": problem.prompt,
            "answer": problem.answer,
            "tests": None if problem.tests is None else problem.tests.to_dict(),
        },
        prefix=f"{problem.kind}-",
    )


@attrs.frozen(slots=True, kw_only=True)
class Problem:
    """A verifiable prompt: a math question with a gold answer, or a coding task with tests.

    ``id`` defaults to a hash of the content, so the same problem gets the same id in every run;
    give it explicitly when the source has its own stable id.
    """

    kind: TaskKind = attrs.field(converter=TaskKind)
    prompt: str = attrs.field(validator=_non_empty_str)
    answer: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(str))
    )
    tests: CodeTests | None = attrs.field(default=None, converter=_code_tests)
    source: str = ""
    split: str = ""
    metadata: dict[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping)
    id: str = attrs.field(validator=attrs.validators.min_len(1))

    @id.default
    def _default_id(self) -> str:
        return _problem_id(self)

    def __attrs_post_init__(self) -> None:
        if self.kind is TaskKind.MATH and self.answer is None:
            raise ValueError(f"math problem {self.id!r} needs a gold answer")
        if self.kind is TaskKind.CODE and self.tests is None:
            raise ValueError(f"code problem {self.id!r} needs tests")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict."""
        return {
            # A fixed header first, so a store indexes problems without a full parse.
            "schema": SCHEMA_VERSION,
            "id": self.id,
            "kind": str(self.kind),
            "source": self.source,
            "prompt": self.prompt,
            "answer": self.answer,
            "tests": None if self.tests is None else self.tests.to_dict(),
            "split": self.split,
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build from :meth:`to_dict`'s output."""
        return cast(Self, _build(cls, data))
