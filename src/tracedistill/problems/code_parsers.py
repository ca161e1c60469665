"""Row parsers of the common code datasets: each turns one row into a Problem with tests.

- TACO/APPS (:class:`TacoRowParser`): an ``input_output`` JSON with ``inputs`` and ``outputs``
  (stdin/stdout cases), or with ``fn_name`` (function-call tests).
- ``deepmind/code_contests`` (:class:`CodeContestsRowParser`): public, private and generated
  stdin/stdout tests.
- ``open-r1/codeforces`` (:class:`CodeforcesRowParser`): official stdin/stdout tests.
- MBPP (:class:`MbppRowParser`): ``test_list`` asserts with optional setup code.

A row without any test is a Skipped item (reason ``no-tests``), never a problem.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from tracedistill.errors import ConfigurationError
from tracedistill.problems.base import str_tuple
from tracedistill.problems.pool import Skipped, SkipReason
from tracedistill.records import CodeTests, FunctionTests, Problem, StdioCase, TaskKind

__all__ = [
    "CODE_CONTESTS_DIFFICULTY",
    "CODE_CONTESTS_SOURCE",
    "CodeContestsRowParser",
    "CodeforcesRowParser",
    "MbppRowParser",
    "TacoRowParser",
    "as_text",
    "codeforces_statement",
    "parse_input_output",
    "problem_statement",
    "skipped",
    "with_starter_code",
]

log = logging.getLogger(__name__)

#: ``deepmind/code_contests`` ``source`` values as stored on the Hub (dense, unlike the proto).
CODE_CONTESTS_SOURCE = {
    0: "unknown",
    1: "codechef",
    2: "codeforces",
    3: "hackerearth",
    4: "codejam",
    5: "atcoder",
    6: "aizu",
}
#: ``deepmind/code_contests`` ``difficulty`` values: raw proto numbers (18 is unused).
CODE_CONTESTS_DIFFICULTY = {
    0: "UNKNOWN_DIFFICULTY",
    1: "EASY",
    2: "MEDIUM",
    3: "HARD",
    4: "HARDER",
    5: "HARDEST",
    6: "EXTERNAL",
    **{7 + i: letter for i, letter in enumerate("ABCDEFGHIJK")},
    **{19 + i: letter for i, letter in enumerate("LMNOPQRSTUV")},
}

_STARTER_HEADER = "\n\nStarter code:\n```python\n"


def with_starter_code(statement: str, starter: str | None) -> str:
    """The prompt of a problem that comes with starter code (the statement alone otherwise)."""
    if not starter or not starter.strip():
        return statement
    return f"{statement}{_STARTER_HEADER}{starter.rstrip()}\n```"


def problem_statement(problem: Problem) -> str:
    """A code problem's statement without the starter code its prompt may end with."""
    starter = problem.metadata.get("starter_code")
    if isinstance(starter, str) and starter.strip():
        head, sep, _ = problem.prompt.rpartition(_STARTER_HEADER)
        if sep:
            return head
    return problem.prompt


def as_text(value: Any) -> str:
    """A row value as text (a list of strings joined by newlines; None as "")."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(as_text(v) for v in value)
    return "" if value is None else str(value)


def _problem_id(name: str, split: str, key: object) -> str:
    return f"{name}/{split}/{key}" if split else f"{name}/{key}"


def skipped(reason: SkipReason, detail: str, index: int, problem_id: str | None) -> Skipped:
    """A Skipped item for row ``index``."""
    return Skipped(reason=reason, detail=detail, row=index, problem_id=problem_id)


# --- TACO / APPS -----------------------------------------------------------------------------


def _unwrap_call_output(value: Any) -> Any:
    # APPS/TACO wrap each call-based expected result in a one-element list; their checker
    # accepts either form, so the wrapped single value is the result.
    if isinstance(value, list) and len(value) == 1:
        return value[0]
    return value


def parse_input_output(data: Any) -> CodeTests | None:
    """Map a TACO/APPS ``input_output`` value (JSON text or dict) onto CodeTests.

    Returns None when it holds no test case. Raises ValueError when it is malformed.
    """
    if isinstance(data, str):
        if not data.strip():
            return None
        data = json.loads(data)  # the standard parser keeps integers beyond 64 bits exact
    if not isinstance(data, Mapping):
        raise ValueError(f"input_output is a {type(data).__name__}, expected an object")
    inputs = data.get("inputs") or []
    outputs = data.get("outputs") or []
    if len(inputs) != len(outputs):
        raise ValueError(f"input_output has {len(inputs)} inputs but {len(outputs)} outputs")
    if not inputs:
        return None
    fn_name = data.get("fn_name")
    if fn_name:
        args = [list(a) if isinstance(a, list | tuple) else [a] for a in inputs]
        expected = [_unwrap_call_output(o) for o in outputs]
        calls = FunctionTests(entry_point=str(fn_name), base_inputs=args, expected_base=expected)
        return CodeTests(function=calls)
    cases = [
        StdioCase(stdin=as_text(i), stdout=as_text(o)) for i, o in zip(inputs, outputs, strict=True)
    ]
    return CodeTests(stdio=cases)


@attrs.frozen(slots=True, kw_only=True)
class TacoRowParser:
    """TACO/APPS rows: ``question``, ``input_output`` JSON, ``starter_code``.

    Ids are ``"{name}/{split}/{id}"`` from ``id_field``, or from the row's position when
    ``id_field`` is None (TACO has no id column; OpenCodeReasoning refers to its rows by
    position, so read the whole split in its published order).
    """

    name: str
    split: str = ""
    question_field: str = "question"
    io_field: str = "input_output"
    starter_field: str | None = "starter_code"
    id_field: str | None = None
    source_field: str | None = "source"
    difficulty_field: str | None = "difficulty"
    metadata_fields: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns this parser reads."""
        fields = (
            self.question_field,
            self.io_field,
            self.starter_field,
            self.id_field,
            self.source_field,
            self.difficulty_field,
            *self.metadata_fields,
        )
        return tuple(dict.fromkeys(f for f in fields if f))

    def __call__(self, row: Mapping[str, Any], index: int) -> Problem | Skipped:
        """Parse one row."""
        key = row.get(self.id_field) if self.id_field else index
        problem_id = _problem_id(self.name, self.split, key if key is not None else index)
        question = as_text(row.get(self.question_field)).strip()
        if not question:
            return skipped(SkipReason.INVALID_ROW, "empty question", index, problem_id)
        try:
            tests = parse_input_output(row.get(self.io_field))
        except ValueError as exc:
            return skipped(SkipReason.INVALID_ROW, f"bad {self.io_field}: {exc}", index, problem_id)
        if tests is None:
            return skipped(SkipReason.NO_TESTS, f"no test in {self.io_field}", index, problem_id)
        starter = as_text(row.get(self.starter_field)) if self.starter_field else ""
        metadata: dict[str, Any] = {
            "dataset": self.name,
            "row": index,
            "io_format": "function" if tests.function is not None else "stdio",
        }
        if starter.strip():
            metadata["starter_code"] = starter
        if self.difficulty_field and row.get(self.difficulty_field) is not None:
            metadata["difficulty"] = row[self.difficulty_field]
        for field in self.metadata_fields:
            if field in row:
                metadata[field] = row[field]
        source = as_text(row.get(self.source_field)).strip() if self.source_field else ""
        return Problem(
            kind=TaskKind.CODE,
            prompt=with_starter_code(question, starter),
            tests=tests,
            source=source or self.name,
            split=self.split,
            metadata=metadata,
            id=problem_id,
        )


# --- CodeContests ----------------------------------------------------------------------------


def _test_pairs(value: Any) -> list[tuple[str, str]]:
    if not value:
        return []
    if isinstance(value, Mapping):  # the Hub layout: {"input": [...], "output": [...]}
        inputs, outputs = list(value.get("input") or []), list(value.get("output") or [])
        if len(inputs) != len(outputs):
            raise ValueError(f"{len(inputs)} test inputs but {len(outputs)} outputs")
        return [(as_text(i), as_text(o)) for i, o in zip(inputs, outputs, strict=True)]
    # the proto layout: [{"input": ..., "output": ...}, ...]
    return [(as_text(t["input"]), as_text(t["output"])) for t in value]


def _time_limit(value: Any) -> float | None:
    if isinstance(value, Mapping):
        return float(value.get("seconds") or 0) + float(value.get("nanos") or 0) / 1e9 or None
    if isinstance(value, int | float) and value > 0:
        return float(value)
    return None


@attrs.frozen(slots=True, kw_only=True)
class CodeContestsRowParser:
    """``deepmind/code_contests`` rows: ``description`` and public/private/generated tests.

    Args:
        test_sets: which test lists to use, in order (generated tests are numerous and made by
            mutating inputs; AlphaCode reports they cut false positives, at a cost in time).
        max_tests: keep at most this many tests per problem (earlier sets first).
    """

    name: str = "code_contests"
    split: str = ""
    test_sets: tuple[str, ...] = attrs.field(default=("public", "private"), converter=str_tuple)
    max_tests: int | None = None

    def __attrs_post_init__(self) -> None:
        unknown = set(self.test_sets) - {"public", "private", "generated"}
        if unknown or not self.test_sets:
            raise ConfigurationError(
                f"test_sets must be among 'public', 'private', 'generated'; got {self.test_sets}"
            )

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns this parser reads (not the reference solutions)."""
        return (
            "name",
            "description",
            *(f"{s}_tests" for s in self.test_sets),
            "source",
            "difficulty",
            "cf_rating",
            "cf_tags",
            "time_limit",
            "memory_limit_bytes",
            "input_file",
            "output_file",
        )

    def __call__(self, row: Mapping[str, Any], index: int) -> Problem | Skipped:
        """Parse one row."""
        key = as_text(row.get("name")).strip() or str(index)
        problem_id = _problem_id(self.name, self.split, key)
        description = as_text(row.get("description")).strip()
        if not description:
            return skipped(SkipReason.INVALID_ROW, "empty description", index, problem_id)
        if as_text(row.get("input_file")).strip() or as_text(row.get("output_file")).strip():
            return skipped(
                SkipReason.NO_TESTS,
                f"reads {row.get('input_file')!r} / writes {row.get('output_file')!r}, "
                "not stdin/stdout",
                index,
                problem_id,
            )
        pairs: list[tuple[str, str]] = []
        for test_set in self.test_sets:
            pairs.extend(_test_pairs(row.get(f"{test_set}_tests")))
        if self.max_tests is not None:
            pairs = pairs[: self.max_tests]
        if not pairs:
            return skipped(
                SkipReason.NO_TESTS, f"no {'/'.join(self.test_sets)} tests", index, problem_id
            )
        source = row.get("source")
        difficulty = row.get("difficulty")
        metadata: dict[str, Any] = {"dataset": self.name, "row": index, "io_format": "stdio"}
        if isinstance(difficulty, int):
            metadata["difficulty"] = CODE_CONTESTS_DIFFICULTY.get(difficulty, str(difficulty))
            metadata["difficulty_level"] = difficulty
        elif difficulty is not None:
            metadata["difficulty"] = difficulty
        for field in ("cf_rating", "cf_tags", "memory_limit_bytes"):
            if row.get(field):
                metadata[field] = row[field]
        limit = _time_limit(row.get("time_limit"))
        if limit:
            metadata["time_limit_s"] = limit
        return Problem(
            kind=TaskKind.CODE,
            prompt=description,
            tests=CodeTests(stdio=[StdioCase(stdin=i, stdout=o) for i, o in pairs]),
            source=CODE_CONTESTS_SOURCE.get(source, str(source))
            if isinstance(source, int)
            else (as_text(source) or self.name),
            split=self.split,
            metadata=metadata,
            id=problem_id,
        )


# --- open-r1/codeforces ----------------------------------------------------------------------


def codeforces_statement(row: Mapping[str, Any]) -> str:
    """Assemble an ``open-r1/codeforces`` statement the way OpenCodeReasoning's questions are."""
    text = as_text(row.get("description"))
    for title, field in (("Input", "input_format"), ("Output", "output_format")):
        if row.get(field):
            text += f"\n\n{title}\n\n{as_text(row[field])}"
    examples = row.get("examples") or []
    if examples:
        text += "\n\nExamples"
        for example in examples:
            if "input" in example:
                text += f"\n\nInput\n\n{as_text(example['input'])}"
            if "output" in example:
                text += f"\n\nOutput\n\n{as_text(example['output'])}"
    if row.get("note"):
        text += f"\n\nNote\n\n{as_text(row['note'])}"
    return text


@attrs.frozen(slots=True, kw_only=True)
class CodeforcesRowParser:
    """``open-r1/codeforces`` rows: statement parts and ``official_tests``.

    Interactive problems are skipped (no stdin/stdout test can judge them); problems whose
    answers need a checker (several valid outputs) are kept and marked
    ``metadata["needs_checker"]``.
    """

    name: str = "codeforces"
    split: str = ""
    include_examples: bool = True

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns this parser reads."""
        return (
            "id",
            "description",
            "input_format",
            "output_format",
            "interaction_format",
            "note",
            "examples",
            "official_tests",
            "rating",
            "tags",
            "time_limit",
            "memory_limit",
            "generated_checker",
        )

    def __call__(self, row: Mapping[str, Any], index: int) -> Problem | Skipped:
        """Parse one row."""
        problem_id = _problem_id(self.name, "", as_text(row.get("id")) or index)
        statement = codeforces_statement(row).strip()
        if not statement:
            return skipped(SkipReason.INVALID_ROW, "empty description", index, problem_id)
        if as_text(row.get("interaction_format")).strip():
            return skipped(SkipReason.NO_TESTS, "interactive problem", index, problem_id)
        tests = list(row.get("official_tests") or [])
        if self.include_examples and not tests:
            tests = list(row.get("examples") or [])
        pairs = [(as_text(t.get("input")), as_text(t.get("output"))) for t in tests]
        if not pairs:
            return skipped(SkipReason.NO_TESTS, "no official tests", index, problem_id)
        metadata: dict[str, Any] = {"dataset": self.name, "row": index, "io_format": "stdio"}
        if row.get("rating") is not None:
            metadata["difficulty"] = row["rating"]
        if row.get("tags"):
            metadata["tags"] = list(row["tags"])
        if row.get("time_limit"):
            metadata["time_limit_s"] = float(row["time_limit"])
        if as_text(row.get("generated_checker")).strip():
            metadata["needs_checker"] = True
        return Problem(
            kind=TaskKind.CODE,
            prompt=statement,
            tests=CodeTests(stdio=[StdioCase(stdin=i, stdout=o) for i, o in pairs]),
            source="codeforces",
            split=self.split,
            metadata=metadata,
            id=problem_id,
        )


# --- MBPP ------------------------------------------------------------------------------------

_CALL = re.compile(r"\b([A-Za-z_]\w*)\s*\(")
_NOT_ENTRY = frozenset(
    {"assert", "set", "sorted", "list", "tuple", "abs", "round", "math", "isclose", "str", "int"}
)


def _entry_point(asserts: Sequence[str]) -> str | None:
    for test in asserts:
        for match in _CALL.finditer(test):
            if match.group(1) not in _NOT_ENTRY:
                return match.group(1)
    return None


@attrs.frozen(slots=True, kw_only=True)
class MbppRowParser:
    """MBPP rows (``full`` or ``sanitized``): the task text and its ``test_list`` asserts.

    The prompt shows the first ``show_tests`` asserts, as MBPP's own prompt does, so the model
    knows the function's name and signature.
    """

    name: str = "mbpp"
    split: str = ""
    show_tests: int = 1
    include_challenge: bool = False

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns this parser reads."""
        return (
            "task_id",
            "text",
            "prompt",
            "test_list",
            "test_setup_code",
            "test_imports",
            "challenge_test_list",
        )

    def __call__(self, row: Mapping[str, Any], index: int) -> Problem | Skipped:
        """Parse one row."""
        key = row.get("task_id", index)
        problem_id = _problem_id(self.name, "", key)
        text = as_text(row.get("text") or row.get("prompt")).strip()
        if not text:
            return skipped(SkipReason.INVALID_ROW, "no task text", index, problem_id)
        asserts = [str(t) for t in row.get("test_list") or [] if str(t).strip()]
        if self.include_challenge:
            asserts += [str(t) for t in row.get("challenge_test_list") or [] if str(t).strip()]
        if not asserts:
            return skipped(SkipReason.NO_TESTS, "empty test_list", index, problem_id)
        setup = as_text(row.get("test_setup_code")).strip()
        imports = row.get("test_imports") or []
        if imports:
            setup = "\n".join([*map(str, imports), setup]).strip()
        prompt = text
        if self.show_tests > 0:
            shown = "\n".join(asserts[: self.show_tests])
            plural = "these tests" if min(self.show_tests, len(asserts)) > 1 else "this test"
            prompt = f"{text}\nYour code should pass {plural}:\n\n{shown}"
        metadata: dict[str, Any] = {"dataset": self.name, "row": index, "io_format": "asserts"}
        entry = _entry_point(asserts)
        if entry:
            metadata["entry_point"] = entry
        return Problem(
            kind=TaskKind.CODE,
            prompt=prompt,
            tests=CodeTests(asserts=asserts, setup=setup),
            source=self.name,
            split=self.split,
            metadata=metadata,
            id=problem_id,
        )
