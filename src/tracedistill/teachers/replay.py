"""Replay: existing traces from a Hugging Face dataset or a local file, as a teacher.

A :class:`ReplayTeacher` reads a dataset of reasoning traces (DeepSeek-R1's in
``open-r1/OpenR1-Math-220k`` or ``nvidia/OpenCodeReasoning``, or any layout you describe with a
:class:`ReplayLayout`), offers its problems through :meth:`ReplayTeacher.problems`, and answers
each (problem, sample index) with the stored trace, so replayed runs and live runs flow through
the same :func:`~tracedistill.teachers.engine.generate`, store, verifiers and trainers.

The dataset is read with ``datasets`` (Arrow, memory-mapped): only an index from problem id to
rows is kept in memory.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio.to_thread
import attrs

from tracedistill.errors import (
    ConfigurationError,
    DatasetUnavailableError,
    InvalidRequestError,
    ProblemSourceError,
    RecordError,
)
from tracedistill.prompts import PromptSet
from tracedistill.records import (
    THINK_CLOSE,
    CodeTests,
    FinishReason,
    Problem,
    ReasoningKind,
    StdioCase,
    TaskKind,
    TokenUsage,
    split_completion,
)
from tracedistill.teachers.base import Observer, Teacher, TeacherCompletion, TeacherRequest

__all__ = [
    "OPENCODEREASONING",
    "OPENR1_MATH",
    "ReplayLayout",
    "ReplaySample",
    "ReplayTeacher",
    "parse_sample_tests",
]

logger = logging.getLogger(__name__)


@attrs.frozen(slots=True, kw_only=True)
class ReplaySample:
    """One stored generation: the raw assistant text and what the dataset says about it."""

    text: str
    finish_reason: FinishReason | None = None
    metadata: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen(slots=True, kw_only=True)
class ReplayLayout:
    """How rows of one dataset layout become problems and samples.

    Args:
        name: the layout's name (and the default dataset id).
        kind: math or code.
        row_id: the problem id of a row (rows sharing an id are samples of one problem).
        problem: the :class:`Problem` of a row, or None to skip the row (with a reason logged).
        samples: the generations a row holds.
        id_columns: the columns ``row_id`` reads (the index pass reads only these).
        model: the model that wrote the traces.
    """

    name: str
    kind: TaskKind
    row_id: Callable[[Mapping[str, Any]], str]
    problem: Callable[[Mapping[str, Any]], Problem | None]
    samples: Callable[[Mapping[str, Any]], Sequence[ReplaySample]]
    id_columns: tuple[str, ...]
    model: str = "deepseek-ai/DeepSeek-R1"


# --- open-r1/OpenR1-Math-220k --------------------------------------------------------------


def _openr1_problem(row: Mapping[str, Any]) -> Problem | None:
    answer = row.get("answer")
    if not isinstance(answer, str) or not answer.strip():
        return None
    metadata = {
        k: row[k] for k in ("uuid", "problem_type", "question_type", "source") if row.get(k)
    }
    return Problem(
        kind=TaskKind.MATH,
        prompt=row["problem"],
        answer=answer,
        source="open-r1/OpenR1-Math-220k",
        metadata=metadata,
        id=_openr1_id(row),
    )


def _openr1_id(row: Mapping[str, Any]) -> str:
    return f"openr1-math-{row['uuid']}"


def _at(values: Any, index: int) -> Any:
    if isinstance(values, Sequence) and not isinstance(values, str) and index < len(values):
        return values[index]
    return None


def _openr1_samples(row: Mapping[str, Any]) -> list[ReplaySample]:
    samples = []
    for j, text in enumerate(row.get("generations") or []):
        finish = _at(row.get("finish_reasons"), j)
        complete = _at(row.get("is_reasoning_complete"), j)
        if finish == "length" or complete is False:
            reason: FinishReason | None = FinishReason.LENGTH
        elif finish == "stop":
            reason = FinishReason.STOP
        else:
            reason = None
        metadata = {}
        for column, key in (
            ("correctness_math_verify", "dataset_math_verify"),
            ("correctness_llama", "dataset_llama_judge"),
        ):
            value = _at(row.get(column), j)
            if value is not None:
                metadata[key] = bool(value)
        samples.append(ReplaySample(text=str(text), finish_reason=reason, metadata=metadata))
    return samples


#: ``open-r1/OpenR1-Math-220k``: one row per problem (``uuid``, ``problem``, ``answer``), its R1
#: traces in ``generations`` with ``finish_reasons`` and correctness flags.
OPENR1_MATH = ReplayLayout(
    name="open-r1/OpenR1-Math-220k",
    kind=TaskKind.MATH,
    row_id=_openr1_id,
    problem=_openr1_problem,
    samples=_openr1_samples,
    id_columns=("uuid",),
)


# --- nvidia/OpenCodeReasoning --------------------------------------------------------------

_EXAMPLES_HEAD = re.compile(
    r"^\s*-*\s*(?:examples?|sample(?:\s+tests?)?(?:\s+cases?)?|sample\s+input\s+and\s+output)"
    r"\s*\d*\s*-*\s*:?\s*$",
    re.IGNORECASE,
)
_INPUT_HEAD = re.compile(r"^\s*(?:sample\s+|example\s+)?input\s*\d*\s*:?\s*$", re.IGNORECASE)
_OUTPUT_HEAD = re.compile(r"^\s*(?:sample\s+|example\s+)?output\s*\d*\s*:?\s*$", re.IGNORECASE)
_SAMPLE_INPUT = re.compile(r"^\s*sample\s+input\s*\d*\s*:?\s*$", re.IGNORECASE)
_END_HEAD = re.compile(r"^\s*-*\s*(?:notes?|explanation\w*|constraints?)\s*-*\s*:?\s*$", re.I)


def parse_sample_tests(statement: str) -> tuple[StdioCase, ...]:
    """Extract the sample input/output pairs of a competitive-programming statement.

    Looks after the last "Examples" (or "Example", "Sample") heading, or from the first "Sample
    Input" heading, for alternating Input/Output blocks. Returns () when none is found.
    """
    lines = statement.splitlines()
    start = None
    for i, line in enumerate(lines):
        if _EXAMPLES_HEAD.match(line):
            start = i + 1
    if start is None:
        start = next((i for i, line in enumerate(lines) if _SAMPLE_INPUT.match(line)), None)
    if start is None:
        return ()
    cases: list[StdioCase] = []
    mode: str | None = None
    block: list[str] = []
    pending_input: str | None = None

    def close() -> None:
        nonlocal pending_input
        text = "\n".join(block).strip("\n")
        if mode == "in":
            pending_input = text
        elif mode == "out" and pending_input is not None:
            cases.append(StdioCase(stdin=pending_input + "\n", stdout=text + "\n"))
            pending_input = None

    for line in lines[start:]:
        if _INPUT_HEAD.match(line) or _OUTPUT_HEAD.match(line) or _END_HEAD.match(line):
            close()
            block = []
            if _END_HEAD.match(line):
                mode = None
                if cases:
                    break
                continue
            mode = "in" if _INPUT_HEAD.match(line) else "out"
            continue
        if mode is not None:
            block.append(line)
    close()
    return tuple(cases)


def _ocr_id(row: Mapping[str, Any]) -> str:
    return f"ocr-{row['id']}"


def _ocr_problem_factory(
    tests: Callable[[Mapping[str, Any]], CodeTests | None] | None,
) -> Callable[[Mapping[str, Any]], Problem | None]:
    def problem(row: Mapping[str, Any]) -> Problem | None:
        statement = row.get("input")
        if not isinstance(statement, str) or statement.strip() in ("", "-"):
            return None  # split_1 rows point into other datasets for their statement
        found = tests(row) if tests is not None else None
        if found is None:
            cases = parse_sample_tests(statement)
            if not cases:
                return None
            found = CodeTests(stdio=cases)
        metadata = {
            k: row[k] for k in ("dataset", "source", "difficulty", "license", "split") if row.get(k)
        }
        return Problem(
            kind=TaskKind.CODE,
            prompt=statement,
            tests=found,
            source="nvidia/OpenCodeReasoning",
            metadata=metadata,
            id=_ocr_id(row),
        )

    return problem


def _ocr_samples(row: Mapping[str, Any]) -> list[ReplaySample]:
    text = row.get("output")
    if not isinstance(text, str) or not text:
        return []
    return [ReplaySample(text=text)]


def opencodereasoning(
    tests: Callable[[Mapping[str, Any]], CodeTests | None] | None = None,
) -> ReplayLayout:
    """The ``nvidia/OpenCodeReasoning`` layout: one row per trace (``id``, ``input``, ``output``).

    The dataset holds no tests: by default each problem's tests are the sample input/output pairs
    of its statement (:func:`parse_sample_tests`); pass ``tests`` to supply your own (return None
    to fall back to the samples). Rows without a statement (``split_1``'s ``"-"``) or without
    sample tests are skipped, and counted in the log.
    """
    return ReplayLayout(
        name="nvidia/OpenCodeReasoning",
        kind=TaskKind.CODE,
        row_id=_ocr_id,
        problem=_ocr_problem_factory(tests),
        samples=_ocr_samples,
        id_columns=("id",),
    )


#: ``nvidia/OpenCodeReasoning`` with tests parsed from each statement's samples.
OPENCODEREASONING = opencodereasoning()

_LAYOUTS = {"openr1-math": OPENR1_MATH, "opencodereasoning": OPENCODEREASONING}


def _layout(layout: ReplayLayout | str) -> ReplayLayout:
    if isinstance(layout, ReplayLayout):
        return layout
    try:
        return _LAYOUTS[layout]
    except KeyError:
        raise ConfigurationError(
            f"unknown replay layout {layout!r}; use one of {sorted(_LAYOUTS)} or a ReplayLayout"
        ) from None


# --- the teacher ---------------------------------------------------------------------------


class ReplayTeacher(Teacher):
    """Answers problems with the traces a dataset already holds.

    Args:
        dataset: a ``datasets.Dataset`` (or any sequence of row dicts).
        layout: a :class:`ReplayLayout`, ``"openr1-math"`` or ``"opencodereasoning"``.
        name: the teacher id stored in traces (default ``replay:<layout name>``).
        model: the model that wrote the traces (default: the layout's).
        prompts: the templates that render each problem's prompt in the stored trace (the
            same ones live teachers use, so every run trains on the same prompt format).

    Build one with :meth:`from_hub` or :meth:`from_file`.
    """

    rate_limited = False

    def __init__(
        self,
        dataset: Any,
        layout: ReplayLayout | str,
        *,
        name: str | None = None,
        model: str | None = None,
        prompts: PromptSet | None = None,
        origin: str | None = None,
    ) -> None:
        self.layout = _layout(layout)
        super().__init__(
            model=model or self.layout.model,
            name=name or f"replay:{self.layout.name}",
            params=None,
            prompts=prompts,
            pricing=None,
            timeout=None,
        )
        self.dataset = dataset
        self.origin = origin or self.layout.name
        self._index: dict[str, list[int]] | None = None
        self.skipped_rows = 0

    reports_cost = True  # replaying costs nothing, and says so

    # --- construction ----------------------------------------------------------------------

    @classmethod
    def from_hub(
        cls,
        layout: ReplayLayout | str,
        *,
        dataset: str | None = None,
        config: str | None = None,
        split: str | None = None,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        **kwargs: Any,
    ) -> ReplayTeacher:
        """Load a dataset from the Hugging Face Hub (or its local cache).

        ``dataset`` defaults to the layout's dataset id; ``config`` and ``split`` to the
        dataset's main ones (``train``; ``split_0`` for OpenCodeReasoning). Other keyword
        arguments go to :class:`ReplayTeacher`.

        Raises:
            DatasetUnavailableError: the Hub cannot be reached and the dataset is not cached.
        """
        spec = _layout(layout)
        name = dataset or spec.name
        if "OpenCodeReasoning" in name:
            # its configs and splits share names: split_0 (statements inline), split_1
            split = split or config or "split_0"
            config = config or split
        split = split or "train"
        import datasets

        try:
            loaded = datasets.load_dataset(
                name,
                config,
                split=split,
                revision=revision,
                cache_dir=None if cache_dir is None else str(cache_dir),
            )
        except Exception as exc:  # the Hub client raises many unrelated types when offline
            raise DatasetUnavailableError(
                f"could not load {name!r} (config {config!r}, split {split!r}) from the Hugging "
                f"Face Hub: {type(exc).__name__}: {str(exc)[:300]}. Without Hub access, download "
                f"the dataset's parquet or JSONL files elsewhere and use "
                f"ReplayTeacher.from_file(path, layout={spec.name!r} layout)."
            ) from exc
        return cls(loaded, spec, origin=name, **kwargs)

    @classmethod
    def from_file(
        cls,
        path: str | Path | Sequence[str | Path],
        layout: ReplayLayout | str,
        *,
        cache_dir: str | Path | None = None,
        **kwargs: Any,
    ) -> ReplayTeacher:
        """Load local ``.jsonl``/``.json``/``.parquet``/``.csv`` files (a list for shards).

        ``cache_dir`` is where ``datasets`` keeps its Arrow copy (default: its own cache).

        Raises:
            ProblemSourceError: the files are missing or unreadable.
        """
        paths = [Path(path)] if isinstance(path, str | Path) else [Path(p) for p in path]
        if not paths:
            raise ProblemSourceError("from_file needs at least one file")
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise ProblemSourceError(f"replay file(s) not found: {', '.join(missing)}")
        suffixes = {p.suffix.lower() for p in paths}
        builders = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
        if len(suffixes) != 1 or next(iter(suffixes)) not in builders:
            raise ProblemSourceError(
                f"replay files must all be one of {sorted(builders)}; got {sorted(suffixes)}"
            )
        import datasets

        builder = builders[next(iter(suffixes))]
        try:
            loaded = datasets.load_dataset(
                builder,
                data_files=[str(p) for p in paths],
                split="train",
                cache_dir=None if cache_dir is None else str(cache_dir),
            )
        except Exception as exc:
            raise ProblemSourceError(
                f"could not read {', '.join(str(p) for p in paths)} as {builder}: {exc}"
            ) from exc
        return cls(loaded, layout, origin=str(paths[0]), **kwargs)

    # --- the index -------------------------------------------------------------------------

    def _build_index(self) -> dict[str, list[int]]:
        index: dict[str, list[int]] = {}
        data = self.dataset
        columns = list(self.layout.id_columns)
        if hasattr(data, "select_columns"):
            try:
                data = data.select_columns(columns)
            except ValueError as exc:
                raise ProblemSourceError(
                    f"{self.origin}: rows lack the column(s) {columns} of layout "
                    f"{self.layout.name!r}: {exc}"
                ) from exc
        for row_number, row in enumerate(data):
            try:
                pid = self.layout.row_id(row)
            except (KeyError, TypeError) as exc:
                raise ProblemSourceError(
                    f"{self.origin}: row {row_number} has no {exc} for layout {self.layout.name!r}"
                ) from exc
            index.setdefault(pid, []).append(row_number)
        return index

    async def _ensure_index(self) -> dict[str, list[int]]:
        if self._index is None:
            self._index = await anyio.to_thread.run_sync(self._build_index)
        return self._index

    def problems(self) -> Iterator[Problem]:
        """Iterate over the dataset's problems (each once, in dataset order).

        Rows that cannot become a problem (no gold answer, no statement, no tests) are skipped;
        :attr:`skipped_rows` counts them.
        """
        seen: set[str] = set()
        skipped: set[str] = set()
        for row_number, row in enumerate(self.dataset):
            try:
                pid = self.layout.row_id(row)
            except (KeyError, TypeError) as exc:
                raise ProblemSourceError(
                    f"{self.origin}: row {row_number} has no {exc} for layout {self.layout.name!r}"
                ) from exc
            if pid in seen or pid in skipped:
                continue
            try:
                problem = self.layout.problem(row)
            except (KeyError, TypeError, ValueError, RecordError) as exc:
                raise ProblemSourceError(
                    f"{self.origin}: row {row_number} is not a valid {self.layout.name} row: {exc}"
                ) from exc
            if problem is None:
                skipped.add(pid)
                self.skipped_rows += 1
                continue
            seen.add(pid)
            yield problem
        if skipped:
            logger.warning(
                "%s: skipped %d problem(s) that cannot be verified (no gold answer, statement or "
                "tests)",
                self.origin,
                len(skipped),
            )

    def _samples_of(self, rows: list[int]) -> list[tuple[int, ReplaySample]]:
        out: list[tuple[int, ReplaySample]] = []
        for row_number in rows:
            for sample in self.layout.samples(self.dataset[row_number]):
                out.append((row_number, sample))
        return out

    async def complete(
        self, request: TeacherRequest, *, observe: Observer | None = None
    ) -> TeacherCompletion:
        """Return the stored trace for the request's problem and sample index."""
        index = await self._ensure_index()
        rows = index.get(request.problem.id)
        if not rows:
            raise InvalidRequestError(
                f"{self.name}: problem {request.problem.id!r} is not in {self.origin}"
            )
        samples = await anyio.to_thread.run_sync(self._samples_of, rows)
        if request.sample_index >= len(samples):
            raise InvalidRequestError(
                f"{self.name}: {self.origin} holds {len(samples)} trace(s) for problem "
                f"{request.problem.id!r}; sample {request.sample_index} does not exist"
            )
        row_number, sample = samples[request.sample_index]
        reasoning, answer = split_completion(sample.text)
        finish = sample.finish_reason
        if finish is None:
            stripped = sample.text.lstrip()
            unclosed = stripped.startswith("<think>") and THINK_CLOSE not in stripped
            finish = FinishReason.LENGTH if unclosed else FinishReason.STOP
        return TeacherCompletion(
            reasoning=reasoning,
            answer=answer,
            reasoning_kind=ReasoningKind.RAW if reasoning else ReasoningKind.NONE,
            finish_reason=finish,
            usage=TokenUsage(),
            cost_usd=0.0,
            metadata={"dataset": self.origin, "row": row_number, **sample.metadata},
        )
