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
other. A problem without any test is reported (reason ``no-tests``) and never yielded. The row
parsers live in :mod:`tracedistill.problems.code_parsers` and are re-exported here.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs

from tracedistill.problems.base import (
    ProblemSource,
    RowParser,
    RowSource,
    Skipped,
    SkipReason,
)
from tracedistill.problems.code_parsers import (
    CODE_CONTESTS_DIFFICULTY,
    CODE_CONTESTS_SOURCE,
    CodeContestsRowParser,
    CodeforcesRowParser,
    MbppRowParser,
    TacoRowParser,
    as_text,
    codeforces_statement,
    parse_input_output,
    problem_statement,
    skipped,
    with_starter_code,
)
from tracedistill.problems.dedup import normalize_text
from tracedistill.problems.rows import RowReader, open_rows
from tracedistill.records import Problem, TaskKind

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
            raw_id = as_text(row.get("id")).strip()
            if not raw_id:
                bad.append(skipped(SkipReason.INVALID_ROW, "no id", number, None))
                continue
            qid = f"ocr/{raw_id}"
            if qid in questions:
                continue
            text = as_text(row.get("input")).strip()
            raw_index = row.get("index")
            try:
                index = None if raw_index in (None, "", "-") else int(raw_index)
            except (TypeError, ValueError):
                bad.append(skipped(SkipReason.INVALID_ROW, f"index {raw_index!r}", number, qid))
                continue
            datasets = tuple(
                d.strip().lower() for d in as_text(row.get("dataset")).split(",") if d.strip()
            )
            metadata = {
                k: row[k] for k in ("source", "difficulty", "license") if row.get(k) is not None
            }
            questions[qid] = _Question(
                qid=qid,
                text=None if text in ("", "-") else text,
                datasets=datasets,
                split=as_text(row.get("split")).strip(),
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
                        key = (dataset, _text_key(problem_statement(item)))
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
            yield skipped(SkipReason.NO_TESTS, detail, q.row, qid)

    def _join(self, q: _Question, dataset: str, origin: Problem | Skipped) -> Problem | Skipped:
        if isinstance(origin, Skipped):
            return skipped(
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
            source=as_text(q.metadata.get("source")) or origin.source,
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
