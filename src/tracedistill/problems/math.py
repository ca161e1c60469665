r"""Math problem sources: a problem and a gold answer per row.

Any Hugging Face dataset or local JSON/JSONL/Parquet file with a problem column and an answer
column works (column names are parameters); when a row has no answer, the last ``\boxed{}`` of
its solution column (if configured) is taken instead. Presets cover
``open-r1/OpenR1-Math-220k`` (:func:`openr1_math`) and ``AI-MO/NuminaMath-1.5``
(:func:`numina_math`).

Gold answers are checked while sampling: a row whose answer the math verifier's parser cannot
parse is reported (reason ``invalid-gold``) and skipped, never kept, because every trace for it
would be judged against nothing. The check is a pluggable async callable; by default it is
``tracedistill.verifiers.math.MathVerifier.parse_golds``, which runs math-verify in killable
worker processes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeAlias

import attrs

from tracedistill.errors import ConfigurationError
from tracedistill.problems.base import (
    RowSource,
    Skipped,
    SkipReason,
    Validator,
    str_tuple,
)
from tracedistill.problems.rows import open_rows
from tracedistill.records import Problem, TaskKind
from tracedistill.verifiers.math import MathVerifier

__all__ = [
    "GoldChecker",
    "MathRowParser",
    "MathSource",
    "extract_boxed",
    "numina_math",
    "openr1_math",
]

#: Parses gold answers: per answer, its parsed form, or None when it cannot be parsed.
GoldChecker: TypeAlias = Callable[[Sequence[str]], Awaitable[Sequence[str | None]]]
#: Looks at a raw row first; returns why to skip it, or None to go on.
RowCheck: TypeAlias = Callable[[Mapping[str, Any]], tuple[SkipReason, str] | None]

#: Answer strings that say a row has no checkable answer (NuminaMath marks proofs this way).
UNVERIFIABLE_ANSWERS = frozenset({"proof", "notfound", "not found", "none found"})

_BOX_COMMANDS = ("\\boxed", "\\fbox")


def extract_boxed(text: str) -> str | None:
    r"""Return the content of the last ``\boxed{...}`` (or ``\fbox{...}``) in ``text``.

    Braces are matched, so ``\boxed{\frac{1}{2}}`` gives ``\frac{1}{2}``; the brace-less form
    ``\boxed 5`` gives ``5``. Returns None when there is no complete box.
    """
    start = max(text.rfind(cmd) for cmd in _BOX_COMMANDS)
    if start < 0:
        return None
    command = next(cmd for cmd in _BOX_COMMANDS if text.startswith(cmd, start))
    i = start + len(command)
    if i < len(text) and text[i] == " ":
        rest = text[i + 1 :]
        token = rest.split("$", 1)[0].split()
        return token[0] if token else None
    if i >= len(text) or text[i] != "{":
        return None
    depth = 0
    for j in range(i, len(text)):
        char = text[j]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                content = text[i + 1 : j].strip()
                return content or None
    return None


def _text(row: Mapping[str, Any], field: str | None) -> str | None:
    if field is None:
        return None
    value = row.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        value = str(value)
    value = value.strip()
    return value or None


def _lowered(values: Iterable[str]) -> frozenset[str]:
    return frozenset(v.lower() for v in values)


@attrs.frozen(slots=True, kw_only=True)
class MathRowParser:
    r"""Turns one math row into a Problem: which columns hold what.

    Args:
        name: dataset name; prefixes ids taken from ``id_field``.
        problem_field: the column holding the problem statement.
        answer_field: the column holding the gold answer (None: use the solution's box).
        solution_field: a column holding a worked solution, whose last ``\boxed{}`` is the
            answer when ``answer_field`` is missing or empty.
        id_field: a column holding a stable id (ids are then ``"{name}/{value}"``); without it
            the id is a hash of the content.
        source_field: the column naming where the problem comes from (``Problem.source``;
            the dataset name when the column is missing or empty).
        difficulty_field: a column copied to ``metadata["difficulty"]``.
        metadata_fields: other columns copied into the problem's metadata.
        split: recorded in ``Problem.split``.
        row_check: a look at the raw row first, to skip rows the dataset marks unusable.
        unverifiable_answers: answers (case-insensitive) that mean there is nothing to check.
    """

    name: str
    problem_field: str = "problem"
    answer_field: str | None = "answer"
    solution_field: str | None = None
    id_field: str | None = None
    source_field: str | None = "source"
    difficulty_field: str | None = None
    metadata_fields: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)
    split: str = ""
    row_check: RowCheck | None = None
    unverifiable_answers: frozenset[str] = attrs.field(
        default=UNVERIFIABLE_ANSWERS, converter=_lowered
    )

    def __attrs_post_init__(self) -> None:
        if self.answer_field is None and self.solution_field is None:
            raise ConfigurationError(
                f"{self.name}: give answer_field or solution_field (to extract \\boxed{{}})"
            )

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns this parser reads (others need not be loaded)."""
        fields = (
            self.problem_field,
            self.answer_field,
            self.solution_field,
            self.id_field,
            self.source_field,
            self.difficulty_field,
            *self.metadata_fields,
        )
        return tuple(dict.fromkeys(f for f in fields if f))

    def __call__(self, row: Mapping[str, Any], index: int) -> Problem | Skipped:
        """Parse one row."""
        raw_id = _text(row, self.id_field)
        problem_id = f"{self.name}/{raw_id}" if raw_id else None
        if self.row_check is not None:
            verdict = self.row_check(row)
            if verdict is not None:
                reason, detail = verdict
                return Skipped(reason=reason, detail=detail, row=index, problem_id=problem_id)
        prompt = _text(row, self.problem_field)
        if prompt is None:
            return Skipped(
                reason=SkipReason.INVALID_ROW,
                detail=f"no problem text in column {self.problem_field!r}",
                row=index,
                problem_id=problem_id,
            )
        answer = _text(row, self.answer_field)
        answer_from = self.answer_field
        if answer is None and self.solution_field is not None:
            solution = _text(row, self.solution_field)
            answer = None if solution is None else extract_boxed(solution)
            answer_from = self.solution_field
        if answer is None or answer.lower() in self.unverifiable_answers:
            detail = (
                f"no answer in {self.answer_field!r}"
                + (f" and no \\boxed{{}} in {self.solution_field!r}" if self.solution_field else "")
                if answer is None
                else f"answer {answer!r} is not checkable"
            )
            return Skipped(
                reason=SkipReason.NO_ANSWER, detail=detail, row=index, problem_id=problem_id
            )
        metadata: dict[str, Any] = {"dataset": self.name, "row": index}
        if answer_from != self.answer_field:
            metadata["answer_from"] = answer_from
        if self.difficulty_field is not None and row.get(self.difficulty_field) is not None:
            metadata["difficulty"] = row[self.difficulty_field]
        for field in self.metadata_fields:
            if field in row:
                metadata[field] = row[field]
        fields: dict[str, Any] = {
            "kind": TaskKind.MATH,
            "prompt": prompt,
            "answer": answer,
            "source": _text(row, self.source_field) or self.name,
            "split": self.split,
            "metadata": metadata,
        }
        if problem_id is not None:
            fields["id"] = problem_id
        return Problem(**fields)


@contextlib.asynccontextmanager
async def _default_gold_checker() -> AsyncIterator[GoldChecker]:
    async with MathVerifier() as verifier:
        yield verifier.parse_golds


class MathSource(RowSource):
    """Math problems with gold answers, read lazily from rows.

    Build one with :meth:`from_hub`, :meth:`from_files`, or a preset (:func:`openr1_math`,
    :func:`numina_math`).

    Args:
        rows: the row reader.
        parser: which columns hold what.
        gold_checker: async callable that parses a batch of gold answers (None for an answer
            it cannot parse); default ``MathVerifier().parse_golds``.
        check_golds: set False to keep every answer unchecked (for data already verified).
    """

    def __init__(
        self,
        rows: Any,
        parser: MathRowParser,
        *,
        gold_checker: GoldChecker | None = None,
        check_golds: bool = True,
    ) -> None:
        super().__init__(rows, parser, name=parser.name, kind=TaskKind.MATH)
        self.gold_checker = gold_checker
        self.check_golds = check_golds

    @classmethod
    def from_hub(
        cls,
        dataset: str,
        *,
        name: str | None = None,
        config: str | None = None,
        split: str = "train",
        revision: str | None = None,
        streaming: bool = False,
        path: str | os.PathLike[str] | None = None,
        gold_checker: GoldChecker | None = None,
        check_golds: bool = True,
        **fields: Any,
    ) -> MathSource:
        """A source over a Hub dataset, or over a local copy of it when ``path`` is given.

        ``fields`` are :class:`MathRowParser` arguments (``problem_field``, ``answer_field``,
        ``solution_field``, ``id_field``, ...). Ids do not depend on where the rows come from,
        so a local copy resumes the same store as the Hub dataset.
        """
        parser = MathRowParser(name=name or _short_name(dataset), split=split, **fields)
        rows = open_rows(
            dataset=dataset,
            path=path,
            config=config,
            split=split,
            revision=revision,
            streaming=streaming,
            columns=parser.columns,
        )
        return cls(rows, parser, gold_checker=gold_checker, check_golds=check_golds)

    @classmethod
    def from_files(
        cls,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        split: str | None = None,
        gold_checker: GoldChecker | None = None,
        check_golds: bool = True,
        **fields: Any,
    ) -> MathSource:
        """A source over local JSON/JSONL/Parquet files (a file, a folder, a saved dataset)."""
        parser = MathRowParser(
            name=name or _short_name(os.fspath(path)), split=split or "", **fields
        )
        rows = open_rows(dataset=None, path=path, split=split or "", columns=parser.columns)
        return cls(rows, parser, gold_checker=gold_checker, check_golds=check_golds)

    def validation(self) -> contextlib.AbstractAsyncContextManager[Validator]:
        """Parse gold answers in batches; an unparseable one drops its problem."""
        return self._validation()

    @contextlib.asynccontextmanager
    async def _validation(self) -> AsyncIterator[Validator]:
        if not self.check_golds:

            async def keep_all(problems: Sequence[Problem]) -> list[Skipped | None]:
                return [None] * len(problems)

            yield keep_all
            return
        checker_context: contextlib.AbstractAsyncContextManager[GoldChecker] = (
            contextlib.nullcontext(self.gold_checker)
            if self.gold_checker is not None
            else _default_gold_checker()
        )
        async with checker_context as check:

            async def validate(problems: Sequence[Problem]) -> list[Skipped | None]:
                answers = [p.answer or "" for p in problems]
                parsed = list(await check(answers))
                if len(parsed) != len(answers):
                    raise ConfigurationError(
                        f"gold checker returned {len(parsed)} results for {len(answers)} answers"
                    )
                return [
                    None
                    if result is not None
                    else Skipped(
                        reason=SkipReason.INVALID_GOLD,
                        detail=f"gold answer {answer!r:.120} could not be parsed",
                        row=problem.metadata.get("row"),
                        problem_id=problem.id,
                    )
                    for problem, answer, result in zip(problems, answers, parsed, strict=True)
                ]

            yield validate


def _short_name(dataset: str) -> str:
    base = dataset.rstrip("/").rsplit("/", 1)[-1]
    for suffix in (".jsonl.gz", ".jsonl", ".json", ".parquet"):
        base = base.removesuffix(suffix)
    return base.lower() or "problems"


# --- presets ---------------------------------------------------------------------------------


def openr1_math(
    path: str | os.PathLike[str] | None = None,
    *,
    config: str = "default",
    split: str = "train",
    gold_checker: GoldChecker | None = None,
    check_golds: bool = True,
    **kwargs: Any,
) -> MathSource:
    """``open-r1/OpenR1-Math-220k``: ``problem``, ``answer``, ``source``; ids from ``uuid``.

    Config ``default`` holds the 94k problems of the paper's main split, ``extended`` the rest
    and ``all`` both. ``path`` points at a local copy (Parquet files of the dataset, JSONL, or
    a saved dataset) instead of the Hub. Only the problem columns are read, not the traces.
    """
    fields: dict[str, Any] = {
        "name": "openr1-math",
        "problem_field": "problem",
        "answer_field": "answer",
        "solution_field": "solution",
        "id_field": "uuid",
        "source_field": "source",
        "metadata_fields": ("problem_type", "question_type"),
    }
    fields.update(kwargs)
    return MathSource.from_hub(
        "open-r1/OpenR1-Math-220k",
        path=path,
        config=config,
        split=split,
        gold_checker=gold_checker,
        check_golds=check_golds,
        **fields,
    )


def _numina_check(
    require_valid: bool, include_synthetic: bool
) -> Callable[[Mapping[str, Any]], tuple[SkipReason, str] | None]:
    def check(row: Mapping[str, Any]) -> tuple[SkipReason, str] | None:
        if str(row.get("question_type", "")).strip().lower() == "proof":
            return SkipReason.NO_ANSWER, "question_type is 'proof'"
        if require_valid:
            for field in ("problem_is_valid", "solution_is_valid"):
                value = row.get(field)
                if value is not None and str(value).strip().lower() != "yes":
                    return SkipReason.FILTERED, f"{field} is {value!r}"
        if not include_synthetic and row.get("synthetic") is True:
            return SkipReason.FILTERED, "synthetic problem"
        return None

    return check


def numina_math(
    path: str | os.PathLike[str] | None = None,
    *,
    split: str = "train",
    require_valid: bool = True,
    include_synthetic: bool = True,
    gold_checker: GoldChecker | None = None,
    check_golds: bool = True,
    **kwargs: Any,
) -> MathSource:
    r"""``AI-MO/NuminaMath-1.5``: ``problem`` and ``answer``, else the ``\boxed{}`` of ``solution``.

    Proof problems and answers ``proof``/``notfound`` are skipped as uncheckable; with
    ``require_valid`` so are rows the dataset marks ``problem_is_valid``/``solution_is_valid``
    other than ``Yes``. The dataset has no id column: ids are content hashes.
    """
    fields: dict[str, Any] = {
        "name": "numina-math-1.5",
        "problem_field": "problem",
        "answer_field": "answer",
        "solution_field": "solution",
        "source_field": "source",
        "metadata_fields": (
            "problem_type",
            "question_type",
            "problem_is_valid",
            "solution_is_valid",
            "synthetic",
        ),
        "row_check": _numina_check(require_valid, include_synthetic),
    }
    fields.update(kwargs)
    return MathSource.from_hub(
        "AI-MO/NuminaMath-1.5",
        path=path,
        split=split,
        gold_checker=gold_checker,
        check_golds=check_golds,
        **fields,
    )
