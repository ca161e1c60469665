"""Code problem sources: a statement and the tests a solution must pass.

Row layouts of the common datasets map onto :class:`~tracedistill.records.CodeTests`:

- TACO/APPS (:func:`taco`, :func:`apps`): an ``input_output`` JSON with ``inputs`` and
  ``outputs`` (stdin/stdout cases), or with ``fn_name`` (function-call tests).
- ``deepmind/code_contests`` (:func:`code_contests`): public, private and generated stdin/stdout
  tests.
- ``open-r1/codeforces`` (:func:`codeforces`): official stdin/stdout tests.
- MBPP (:func:`mbpp`): ``test_list`` asserts with optional setup code.

:class:`OpenCodeReasoningSource` joins the questions of ``nvidia/OpenCodeReasoning`` (R1 traces)
to the tests of the rows they came from, so replayed R1 code traces are verified like any
other. A problem without any test is reported (reason ``no-tests``) and never yielded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs

from tracedistill.errors import ConfigurationError
from tracedistill.problems.base import (
    ProblemSource,
    RowParser,
    RowSource,
    Skipped,
    SkipReason,
    str_tuple,
)
from tracedistill.problems.dedup import normalize_text
from tracedistill.problems.rows import RowReader, open_rows
from tracedistill.records import CodeTests, FunctionTests, Problem, StdioCase, TaskKind

__all__ = [
    "CODE_CONTESTS_DIFFICULTY",
    "CODE_CONTESTS_SOURCE",
    "CodeContestsRowParser",
    "CodeSource",
    "CodeforcesRowParser",
    "MbppRowParser",
    "OpenCodeReasoningSource",
    "TacoRowParser",
    "apps",
    "code_contests",
    "codeforces",
    "codeforces_statement",
    "mbpp",
    "ocr_problem_id",
    "open_code_reasoning",
    "parse_input_output",
    "taco",
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


def _statement(problem: Problem) -> str:
    starter = problem.metadata.get("starter_code")
    if isinstance(starter, str) and starter.strip():
        head, sep, _ = problem.prompt.rpartition(_STARTER_HEADER)
        if sep:
            return head
    return problem.prompt


def _str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(_str(v) for v in value)
    return "" if value is None else str(value)


def _problem_id(name: str, split: str, key: object) -> str:
    return f"{name}/{split}/{key}" if split else f"{name}/{key}"


def _skip(reason: SkipReason, detail: str, index: int, problem_id: str | None) -> Skipped:
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
    cases = [StdioCase(stdin=_str(i), stdout=_str(o)) for i, o in zip(inputs, outputs, strict=True)]
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
        question = _str(row.get(self.question_field)).strip()
        if not question:
            return _skip(SkipReason.INVALID_ROW, "empty question", index, problem_id)
        try:
            tests = parse_input_output(row.get(self.io_field))
        except ValueError as exc:
            return _skip(SkipReason.INVALID_ROW, f"bad {self.io_field}: {exc}", index, problem_id)
        if tests is None:
            return _skip(SkipReason.NO_TESTS, f"no test in {self.io_field}", index, problem_id)
        starter = _str(row.get(self.starter_field)) if self.starter_field else ""
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
        source = _str(row.get(self.source_field)).strip() if self.source_field else ""
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
        return [(_str(i), _str(o)) for i, o in zip(inputs, outputs, strict=True)]
    # the proto layout: [{"input": ..., "output": ...}, ...]
    return [(_str(t["input"]), _str(t["output"])) for t in value]


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
        key = _str(row.get("name")).strip() or str(index)
        problem_id = _problem_id(self.name, self.split, key)
        description = _str(row.get("description")).strip()
        if not description:
            return _skip(SkipReason.INVALID_ROW, "empty description", index, problem_id)
        if _str(row.get("input_file")).strip() or _str(row.get("output_file")).strip():
            return _skip(
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
            return _skip(
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
            else (_str(source) or self.name),
            split=self.split,
            metadata=metadata,
            id=problem_id,
        )


# --- open-r1/codeforces ----------------------------------------------------------------------


def codeforces_statement(row: Mapping[str, Any]) -> str:
    """Assemble an ``open-r1/codeforces`` statement the way OpenCodeReasoning's questions are."""
    text = _str(row.get("description"))
    for title, field in (("Input", "input_format"), ("Output", "output_format")):
        if row.get(field):
            text += f"\n\n{title}\n\n{_str(row[field])}"
    examples = row.get("examples") or []
    if examples:
        text += "\n\nExamples"
        for example in examples:
            if "input" in example:
                text += f"\n\nInput\n\n{_str(example['input'])}"
            if "output" in example:
                text += f"\n\nOutput\n\n{_str(example['output'])}"
    if row.get("note"):
        text += f"\n\nNote\n\n{_str(row['note'])}"
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
        problem_id = _problem_id(self.name, "", _str(row.get("id")) or index)
        statement = codeforces_statement(row).strip()
        if not statement:
            return _skip(SkipReason.INVALID_ROW, "empty description", index, problem_id)
        if _str(row.get("interaction_format")).strip():
            return _skip(SkipReason.NO_TESTS, "interactive problem", index, problem_id)
        tests = list(row.get("official_tests") or [])
        if self.include_examples and not tests:
            tests = list(row.get("examples") or [])
        pairs = [(_str(t.get("input")), _str(t.get("output"))) for t in tests]
        if not pairs:
            return _skip(SkipReason.NO_TESTS, "no official tests", index, problem_id)
        metadata: dict[str, Any] = {"dataset": self.name, "row": index, "io_format": "stdio"}
        if row.get("rating") is not None:
            metadata["difficulty"] = row["rating"]
        if row.get("tags"):
            metadata["tags"] = list(row["tags"])
        if row.get("time_limit"):
            metadata["time_limit_s"] = float(row["time_limit"])
        if _str(row.get("generated_checker")).strip():
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
        text = _str(row.get("text") or row.get("prompt")).strip()
        if not text:
            return _skip(SkipReason.INVALID_ROW, "no task text", index, problem_id)
        asserts = [str(t) for t in row.get("test_list") or [] if str(t).strip()]
        if self.include_challenge:
            asserts += [str(t) for t in row.get("challenge_test_list") or [] if str(t).strip()]
        if not asserts:
            return _skip(SkipReason.NO_TESTS, "empty test_list", index, problem_id)
        setup = _str(row.get("test_setup_code")).strip()
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


# --- sources ---------------------------------------------------------------------------------


class CodeSource(RowSource):
    """Code problems with tests, read lazily from rows through a layout parser."""

    def __init__(self, rows: Iterable[Mapping[str, Any]], parser: RowParser, *, name: str) -> None:
        super().__init__(rows, parser, name=name, kind=TaskKind.CODE)
        self.split = str(getattr(parser, "split", ""))

    @classmethod
    def from_hub(
        cls,
        dataset: str,
        parser: Any,
        *,
        config: str | None = None,
        split: str = "train",
        revision: str | None = None,
        streaming: bool = False,
        path: str | os.PathLike[str] | None = None,
    ) -> CodeSource:
        """A source over a Hub dataset (or a local copy at ``path``) read by ``parser``.

        ``parser`` is one of the row parsers of this module (or any callable ``(row, index) ->
        Problem | Skipped``; a ``columns`` attribute, when present, limits what is read).
        """
        rows = open_rows(
            dataset=dataset,
            path=path,
            config=config,
            split=split,
            revision=revision,
            streaming=streaming,
            columns=getattr(parser, "columns", None),
        )
        return cls(rows, parser, name=str(getattr(parser, "name", dataset)))

    @classmethod
    def from_files(
        cls, path: str | os.PathLike[str], parser: Any, *, split: str | None = None
    ) -> CodeSource:
        """A source over local JSON/JSONL/Parquet files read by ``parser``."""
        rows = open_rows(
            dataset=None, path=path, split=split or "", columns=getattr(parser, "columns", None)
        )
        return cls(rows, parser, name=str(getattr(parser, "name", "code")))


def taco(
    path: str | os.PathLike[str] | None = None, *, split: str = "train", **kwargs: Any
) -> CodeSource:
    """``BAAI/TACO``: ids ``taco/{split}/{row}``; stdin/stdout or ``fn_name`` call tests.

    TACO is published with a loading script, which recent ``datasets`` releases do not run:
    download the repository and pass its folder (or one split's files) as ``path``.
    """
    parser = TacoRowParser(
        name="taco",
        split=split,
        metadata_fields=("name", "tags", "skill_types", "time_limit", "memory_limit", "url"),
        **kwargs,
    )
    return CodeSource.from_hub("BAAI/TACO", parser, split=split, path=path)


def apps(
    path: str | os.PathLike[str] | None = None, *, split: str = "train", **kwargs: Any
) -> CodeSource:
    """``codeparrot/apps``: ids ``apps/{split}/{problem_id}``; same tests layout as TACO.

    Like TACO, APPS is published with a loading script: pass its ``train.jsonl`` /
    ``test.jsonl`` (or their folder) as ``path``.
    """
    fields: dict[str, Any] = {
        "name": "apps",
        "split": split,
        "id_field": "problem_id",
        "source_field": None,
        "metadata_fields": ("url",),
    }
    fields.update(kwargs)
    return CodeSource.from_hub("codeparrot/apps", TacoRowParser(**fields), split=split, path=path)


def code_contests(
    path: str | os.PathLike[str] | None = None,
    *,
    split: str = "train",
    test_sets: Sequence[str] = ("public", "private"),
    max_tests: int | None = None,
    streaming: bool = False,
    revision: str | None = None,
) -> CodeSource:
    """``deepmind/code_contests``: ids ``code_contests/{split}/{name}``; stdin/stdout tests.

    The Hub copy is 7.6 GB (mostly reference solutions, which are not read);
    ``streaming=True`` reads it without a download, at the cost of re-reading it per pass.
    """
    parser = CodeContestsRowParser(split=split, test_sets=tuple(test_sets), max_tests=max_tests)
    return CodeSource.from_hub(
        "deepmind/code_contests",
        parser,
        split=split,
        path=path,
        streaming=streaming,
        revision=revision,
    )


def codeforces(
    path: str | os.PathLike[str] | None = None,
    *,
    split: str = "train",
    config: str | None = None,
    streaming: bool = False,
    revision: str | None = None,
) -> CodeSource:
    """``open-r1/codeforces``: ids ``codeforces/{id}``; official stdin/stdout tests."""
    parser = CodeforcesRowParser(split=split)
    return CodeSource.from_hub(
        "open-r1/codeforces",
        parser,
        config=config,
        split=split,
        path=path,
        streaming=streaming,
        revision=revision,
    )


def mbpp(
    path: str | os.PathLike[str] | None = None,
    *,
    config: str = "full",
    split: str = "train",
    show_tests: int = 1,
) -> CodeSource:
    """``google-research-datasets/mbpp`` (``full`` or ``sanitized``): ids ``mbpp/{task_id}``.

    Mind the overlap: MBPP+ is built from MBPP's test split, so decontaminate against MBPP+
    before training on MBPP.
    """
    parser = MbppRowParser(split=split, show_tests=show_tests)
    return CodeSource.from_hub(
        "google-research-datasets/mbpp", parser, config=config, split=split, path=path
    )


# --- OpenCodeReasoning join ------------------------------------------------------------------


def ocr_problem_id(row: Mapping[str, Any]) -> str:
    """The problem id of an ``nvidia/OpenCodeReasoning`` row (one per question, not per trace)."""
    return f"ocr/{row['id']}"


def _text_key(text: str) -> bytes:
    return hashlib.blake2b(normalize_text(text).encode(), digest_size=16).digest()


@attrs.define(slots=True)
class _Question:
    qid: str
    text: str | None
    datasets: tuple[str, ...]
    split: str
    index: int | None
    metadata: dict[str, Any]
    row: int


_OCR_COLUMNS = ("id", "input", "dataset", "split", "index", "source", "difficulty", "license")


class OpenCodeReasoningSource(ProblemSource):
    """One problem per ``nvidia/OpenCodeReasoning`` question, with the tests of its origin.

    OpenCodeReasoning rows name the dataset (``taco``, ``apps``, ``code_contests``,
    ``open-r1/codeforces``), the split and, in ``split_1``, the row ``index`` their question
    came from; ``split_1`` rows carry ``"-"`` instead of the question text. A question is
    joined to its origin row by ``(dataset, split, index)`` when it has an index, else by its
    normalized text. Questions whose origin is not among ``tests``, or whose origin row has no
    test, are reported as ``no-tests`` and not yielded.

    Args:
        rows: the OpenCodeReasoning rows (traces too; only the question columns are used).
        tests: the code sources holding the origin rows, as dataset name -> one source or
            several (one per split; each source's ``split`` is matched against the row's).
        name: the name of this source.

    Problem ids are :func:`ocr_problem_id` (``"ocr/{id}"``), the same for every trace of a
    question, so replayed traces find their problem.
    """

    def __init__(
        self,
        rows: Iterable[Mapping[str, Any]],
        tests: Mapping[str, CodeSource | Sequence[CodeSource]],
        *,
        name: str = "opencodereasoning",
    ) -> None:
        self.rows = rows
        self.name = name
        self.kind = TaskKind.CODE
        self.tests: dict[str, tuple[CodeSource, ...]] = {
            key.strip().lower(): (value,) if isinstance(value, CodeSource) else tuple(value)
            for key, value in tests.items()
        }

    def _questions(self) -> tuple[dict[str, _Question], list[Skipped]]:
        questions: dict[str, _Question] = {}
        bad: list[Skipped] = []
        for number, row in enumerate(self.rows):
            raw_id = _str(row.get("id")).strip()
            if not raw_id:
                bad.append(_skip(SkipReason.INVALID_ROW, "no id", number, None))
                continue
            qid = f"ocr/{raw_id}"
            if qid in questions:
                continue
            text = _str(row.get("input")).strip()
            raw_index = row.get("index")
            try:
                index = None if raw_index in (None, "", "-") else int(raw_index)
            except (TypeError, ValueError):
                bad.append(_skip(SkipReason.INVALID_ROW, f"index {raw_index!r}", number, qid))
                continue
            datasets = tuple(
                d.strip().lower() for d in _str(row.get("dataset")).split(",") if d.strip()
            )
            metadata = {
                k: row[k] for k in ("source", "difficulty", "license") if row.get(k) is not None
            }
            questions[qid] = _Question(
                qid=qid,
                text=None if text in ("", "-") else text,
                datasets=datasets,
                split=_str(row.get("split")).strip(),
                index=index,
                metadata=metadata,
                row=number,
            )
        return questions, bad

    def scan(self) -> Iterator[Problem | Skipped]:
        """Join every question to its origin's tests; yield problems, then what is unjoined."""
        questions, bad = self._questions()
        yield from bad
        by_index: dict[tuple[str, str, int], list[str]] = {}
        by_text: dict[tuple[str, bytes], list[str]] = {}
        for q in questions.values():
            for dataset in q.datasets:
                if q.index is not None:
                    by_index.setdefault((dataset, q.split, q.index), []).append(q.qid)
                elif q.text is not None:
                    by_text.setdefault((dataset, _text_key(q.text)), []).append(q.qid)
        done: dict[str, Skipped | None] = {}
        for dataset, sources in self.tests.items():
            for source in sources:
                for row, item in enumerate(source.scan()):
                    matches = list(by_index.get((dataset, source.split, row), ()))
                    if by_text and isinstance(item, Problem):
                        key = (dataset, _text_key(_statement(item)))
                        matches += by_text.get(key, ())
                    for qid in matches:
                        if done.get(qid, False) is None:
                            continue  # already joined through another dataset
                        joined = self._join(questions[qid], dataset, item)
                        if isinstance(joined, Problem):
                            done[qid] = None
                            yield joined
                        else:
                            done[qid] = joined
        for qid, q in questions.items():
            if qid in done:
                outcome = done[qid]
                if outcome is not None:
                    yield outcome
                continue
            known = [d for d in q.datasets if d in self.tests]
            where = f"{'/'.join(q.datasets) or '?'} {q.split} " + (
                f"row {q.index}" if q.index is not None else "(matched by text)"
            )
            detail = (
                f"origin {where} not found in the test sources"
                if known
                else f"no test source given for dataset {'/'.join(q.datasets) or '?'}"
            )
            yield _skip(SkipReason.NO_TESTS, detail, q.row, qid)

    def _join(self, q: _Question, dataset: str, origin: Problem | Skipped) -> Problem | Skipped:
        if isinstance(origin, Skipped):
            return _skip(
                SkipReason.NO_TESTS,
                f"origin {dataset} row {origin.row}: {origin.detail}",
                q.row,
                q.qid,
            )
        metadata: dict[str, Any] = {
            "dataset": self.name,
            "row": q.row,
            "origin_dataset": dataset,
            "origin_split": q.split,
            "origin_id": origin.id,
            **q.metadata,
        }
        if q.index is not None:
            metadata["origin_index"] = q.index
        for key in ("io_format", "starter_code", "time_limit_s", "needs_checker"):
            if key in origin.metadata:
                metadata[key] = origin.metadata[key]
        if "difficulty" not in metadata and "difficulty" in origin.metadata:
            metadata["difficulty"] = origin.metadata["difficulty"]
        return Problem(
            kind=TaskKind.CODE,
            prompt=q.text if q.text is not None else origin.prompt,
            tests=origin.tests,
            source=_str(q.metadata.get("source")) or origin.source,
            split=q.split,
            metadata=metadata,
            id=q.qid,
        )


def open_code_reasoning(
    tests: Mapping[str, CodeSource | Sequence[CodeSource]],
    path: str | os.PathLike[str] | None = None,
    *,
    config: str = "split_1",
    split: str | None = None,
) -> OpenCodeReasoningSource:
    """``nvidia/OpenCodeReasoning`` questions joined to ``tests`` (see the class).

    ``split_0`` holds questions with their text (joined by text), ``split_1`` the TACO/APPS
    questions by row index. The Hub split name equals the config name.
    """
    rows: RowReader = open_rows(
        dataset="nvidia/OpenCodeReasoning",
        path=path,
        config=config,
        split=split or config,
        columns=_OCR_COLUMNS,
    )
    return OpenCodeReasoningSource(rows, tests)
