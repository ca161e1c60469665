r"""Benchmarks: problems, the prompt each is sent with, and how its response is graded.

Built in:

- :func:`math500`: MATH-500 from the Hub (``HuggingFaceH4/MATH-500``) or a local JSONL, graded by
  :class:`~tracedistill.verifiers.MathVerifier` (default: the final ``\boxed{}``, else "the
  answer is X", else the last ``$...$``; ``extraction="boxed"`` for boxed answers only).
- :func:`mbpp_plus`: MBPP+ from the official evalplus release or a local JSONL, graded on the
  base and plus tests by :class:`~tracedistill.verifiers.code.CodeVerifier`; a chat prompt for
  chat-format students and evalplus's completion prompt for base models.
- :func:`custom_benchmark`: any list of :class:`~tracedistill.records.Problem`.

Chat prompts are the teachers' templates (:mod:`tracedistill.prompts`), so a student
is evaluated with the prompt its training data was generated with. Every benchmark records the
sha256 of the file it was read from (or of its rows, for a Hub dataset) so that results on
different files are never compared as if they were the same.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import orjson

from tracedistill.clients.base import Prompt
from tracedistill.errors import ConfigurationError, DatasetUnavailableError, ProblemSourceError
from tracedistill.problems.rows import HubRows, iter_jsonl
from tracedistill.prompts import CODE_PROMPT, MATH_PROMPT, PromptTemplate
from tracedistill.records import CodeTests, FunctionTests, Problem, TaskKind
from tracedistill.verifiers.base import Verifier

__all__ = [
    "MATH500_HUB",
    "MATH500_LOCAL_SHA256",
    "MBPP_PLUS_LOCAL_SHA256",
    "MBPP_PLUS_OFFICIAL_SHA256_PREFIX",
    "Benchmark",
    "PromptMode",
    "custom_benchmark",
    "file_sha256",
    "math500",
    "mbpp_plus",
]

log = logging.getLogger(__name__)

MATH500_HUB = "HuggingFaceH4/MATH-500"
#: sha256 of ``prm800k/math_splits/test.jsonl`` (the same 500 problems as the Hub dataset).
MATH500_LOCAL_SHA256 = "35dc41080a3680858b27fa7e0533d2d547825316fc5dafe5d316f4ccc5a06132"
#: sha256 of a 378-task file rebuilt from evalplus commit 767efcc: NOT the official release.
MBPP_PLUS_LOCAL_SHA256 = "9af1b143b25f238fd46bd285717fdccc8e6f1d4bfec4941456cacfe33e9bda0e"
#: The official MBPP+ v0.2.0 release file's sha256 begins with this.
MBPP_PLUS_OFFICIAL_SHA256_PREFIX = "af43697e"

#: Where base-model completions of MBPP+ stop (evalplus's extra end-of-sequence strings, plus
#: the start of a next docstring task or of test code).
MBPP_COMPLETION_STOPS = (
    "\nif __name__",
    "\ndef main(",
    "\nprint(",
    "\nassert ",
    "\n'''",
    '\n"""',
    "\n```",
)


class PromptMode(enum.StrEnum):
    """How problems are put to the model.

    ``CHAT``: user messages (the sampler renders them in the student's chat format);
    ``COMPLETION``: raw text the model continues (the protocol for base models).
    """

    CHAT = "chat"
    COMPLETION = "completion"


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _rows_sha256(rows: Sequence[Mapping[str, Any]]) -> str:
    digest = hashlib.sha256()
    for row in rows:
        digest.update(orjson.dumps(row, option=orjson.OPT_SORT_KEYS) + b"\n")
    return digest.hexdigest()


def _problems(value: Iterable[Problem]) -> tuple[Problem, ...]:
    return tuple(value)


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError("expected a sequence of strings, got a string")
    return tuple(value)


def _default_verifier(kind: TaskKind) -> Verifier:
    if kind is TaskKind.MATH:
        from tracedistill.verifiers.math import MathVerifier

        return MathVerifier()
    from tracedistill.verifiers.code import CodeVerifier

    return CodeVerifier()


@attrs.frozen(slots=True, kw_only=True)
class Benchmark:
    """A set of problems of one kind, how each is prompted, and how responses are graded.

    Args:
        name: the benchmark's name in results (``MATH-500``).
        kind: the task kind of every problem.
        problems: the problems, in a fixed order.
        mode: chat messages or a raw completion prompt.
        template: the chat prompt template (CHAT mode).
        completion_prompt: the raw prompt of a problem (COMPLETION mode).
        stop: stop strings sent with every request (COMPLETION mode uses them to end a
            base model's continuation).
        max_tokens: the default generation budget.
        sha256: the sha256 of the source file (or of the rows of a Hub dataset).
        source: where the problems were read from.
        accept_truncated: grade responses cut at ``max_tokens`` instead of failing them.
        grade_with_prompt: grade ``prompt + response`` (completion prompts that hold code).
        verifier_factory: builds the grader (default: MathVerifier or CodeVerifier).
        notes: facts about the source a reader of the results must know.
    """

    name: str = attrs.field(validator=attrs.validators.min_len(1))
    kind: TaskKind = attrs.field(converter=TaskKind)
    problems: tuple[Problem, ...] = attrs.field(converter=_problems)
    mode: PromptMode = attrs.field(default=PromptMode.CHAT, converter=PromptMode)
    template: PromptTemplate | None = None
    completion_prompt: Callable[[Problem], str] | None = attrs.field(default=None, eq=False)
    stop: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    max_tokens: int = 4096
    sha256: str = ""
    source: str = ""
    accept_truncated: bool = False
    grade_with_prompt: bool = False
    verifier_factory: Callable[[], Verifier] | None = attrs.field(default=None, eq=False)
    notes: tuple[str, ...] = attrs.field(default=(), converter=_strings)

    def __attrs_post_init__(self) -> None:
        if not self.problems:
            raise ConfigurationError(f"benchmark {self.name!r} has no problems")
        ids: set[str] = set()
        for problem in self.problems:
            if problem.kind is not self.kind:
                raise ConfigurationError(
                    f"benchmark {self.name!r} is {self.kind}, but problem {problem.id!r} is "
                    f"{problem.kind}"
                )
            if problem.id in ids:
                raise ConfigurationError(f"benchmark {self.name!r}: duplicate id {problem.id!r}")
            ids.add(problem.id)
        if self.mode is PromptMode.COMPLETION and self.completion_prompt is None:
            raise ConfigurationError(
                f"benchmark {self.name!r}: completion mode needs a completion_prompt"
            )
        if not self.sha256:
            object.__setattr__(self, "sha256", _rows_sha256([p.to_dict() for p in self.problems]))

    def __len__(self) -> int:
        return len(self.problems)

    @property
    def ids(self) -> list[str]:
        """The problem ids, in order."""
        return [p.id for p in self.problems]

    def prompt(self, problem: Problem) -> Prompt:
        """The prompt sent for ``problem``: messages (CHAT) or text (COMPLETION)."""
        if self.mode is PromptMode.COMPLETION:
            assert self.completion_prompt is not None
            return self.completion_prompt(problem)
        template = self.template or (MATH_PROMPT if self.kind is TaskKind.MATH else CODE_PROMPT)
        return template.render(problem)

    def graded_text(self, problem: Problem, response: str) -> str:
        """The text handed to the grader for a response (the answer after any think block)."""
        if self.grade_with_prompt:
            prompt = self.prompt(problem)
            assert isinstance(prompt, str)
            return prompt + response
        return response

    def make_verifier(self) -> Verifier:
        """A new grader for this benchmark's problems."""
        if self.verifier_factory is not None:
            return self.verifier_factory()
        return _default_verifier(self.kind)

    def describe(self) -> dict[str, Any]:
        """What identifies this benchmark and its prompts in a stored evaluation."""
        template = self.template or (MATH_PROMPT if self.kind is TaskKind.MATH else CODE_PROMPT)
        return {
            "benchmark": self.name,
            "kind": str(self.kind),
            "benchmark_sha256": self.sha256,
            "benchmark_source": self.source,
            "mode": str(self.mode),
            "template": template.to_dict() if self.mode is PromptMode.CHAT else None,
            "stop": list(self.stop),
            "notes": list(self.notes),
        }

    def subset(self, n: int | None = None, *, ids: Iterable[str] | None = None) -> Benchmark:
        """The first ``n`` problems, or those with the given ids (same name and file hash).

        A subset keeps the file's sha256: its results pair with the full benchmark's.
        """
        if ids is not None:
            wanted = set(ids)
            chosen = tuple(p for p in self.problems if p.id in wanted)
        else:
            chosen = self.problems[: n if n is not None else len(self.problems)]
        return attrs.evolve(self, problems=chosen)

    def exclude(self, ids: Iterable[str]) -> Benchmark:
        """The benchmark without the problems of the given ids (e.g. contaminated ones)."""
        dropped = set(ids)
        return attrs.evolve(self, problems=tuple(p for p in self.problems if p.id not in dropped))

    def with_mode(self, mode: PromptMode | str, **changes: Any) -> Benchmark:
        """A copy with another prompt mode (and any other field changed)."""
        return attrs.evolve(self, mode=PromptMode(mode), **changes)


# --- MATH-500 --------------------------------------------------------------------------------


def _math500_problem(row: Mapping[str, Any], index: int, origin: str) -> Problem:
    try:
        problem, answer = str(row["problem"]), str(row["answer"])
    except KeyError as exc:
        raise ProblemSourceError(f"{origin}: row {index} has no {exc.args[0]!r} field") from None
    raw_id = row.get("unique_id") or str(index)
    metadata = {k: row[k] for k in ("subject", "level") if k in row}
    return Problem(
        kind=TaskKind.MATH,
        prompt=problem,
        answer=answer,
        source="MATH-500",
        split="test",
        metadata=metadata,
        id=f"math500/{raw_id}",
    )


def math500(
    path: str | Path | None = None,
    *,
    template: PromptTemplate | None = None,
    max_tokens: int = 4096,
    dataset: str = MATH500_HUB,
    verifier_factory: Callable[[], Verifier] | None = None,
) -> Benchmark:
    r"""MATH-500, graded by :class:`MathVerifier` (its protocol says which answers count).

    Args:
        path: a local JSONL with ``problem``, ``answer`` (and ``unique_id``, ``subject``,
            ``level``) fields; None loads ``dataset`` from the Hugging Face Hub (blocking: call
            it off the event loop, or before starting one).
        template: the chat prompt (default: the teachers' math prompt, which asks for
            ``\boxed{}``).
        max_tokens: the default generation budget.
        dataset: the Hub dataset used when no path is given.
        verifier_factory: builds the grader (default: ``MathVerifier()``, which also accepts
            "the answer is X" and the last ``$...$`` when there is no ``\boxed{}``;
            ``lambda: MathVerifier(extraction="boxed")`` for the boxed-only protocol).

    Raises:
        DatasetUnavailableError: the Hub dataset could not be loaded (pass a local path).
    """
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ProblemSourceError(f"MATH-500 file not found: {file}")
        rows = list(iter_jsonl(file))
        sha = file_sha256(file)
        source = str(file)
    else:
        rows = list(HubRows(dataset, split="test"))
        sha = _rows_sha256(rows)
        source = f"hf:{dataset}"
    problems = tuple(_math500_problem(row, i, source) for i, row in enumerate(rows))
    notes: list[str] = []
    if path is not None and sha != MATH500_LOCAL_SHA256:
        notes.append(f"file sha256 {sha[:12]} differs from prm800k's test.jsonl")
    return Benchmark(
        name="MATH-500",
        kind=TaskKind.MATH,
        problems=problems,
        template=template,
        max_tokens=max_tokens,
        sha256=sha,
        source=source,
        verifier_factory=verifier_factory,
        notes=tuple(notes),
    )


# --- MBPP+ -----------------------------------------------------------------------------------

_QUOTES = re.compile(r"^\s*('''|\"\"\")\s*|\s*('''|\"\"\")\s*$")


def _task_text(prompt: str) -> str:
    return _QUOTES.sub("", prompt).strip()


def _first_assert(assertion: str) -> str | None:
    for line in assertion.splitlines():
        if line.strip().startswith("assert "):
            return line.strip()
    return None


def _mbpp_problem(row: Mapping[str, Any], index: int, origin: str) -> tuple[Problem, bool]:
    """One MBPP+ row as a Problem, and whether its example assert had to be added."""
    try:
        task_id = str(row["task_id"])
        raw_prompt = str(row["prompt"])
        entry = str(row["entry_point"])
        solution = str(row["canonical_solution"])
    except KeyError as exc:
        raise ProblemSourceError(f"{origin}: row {index} has no {exc.args[0]!r} field") from None
    text = _task_text(raw_prompt)
    added = False
    if "assert " not in text:
        # The rebuilt file's prompts lack the example assert of the official release: without
        # it the model cannot know the function's name and signature.
        example = _first_assert(str(row.get("assertion") or ""))
        if example is None:
            raise ProblemSourceError(
                f"{origin}: {task_id} shows no example assert and has no 'assertion' to take "
                "one from"
            )
        text = f"{text}\n{example}"
        raw_prompt = f'"""\n{text}\n"""\n'
        added = True
    description, _, example_part = text.partition("\nassert ")
    shown = "assert " + example_part if example_part else ""
    chat_prompt = f"{description.strip()}\nYour code should pass this test:\n\n{shown}".strip()
    tests = CodeTests(
        function=FunctionTests(
            entry_point=entry,
            base_inputs=row.get("base_input") or [],
            plus_inputs=row.get("plus_input") or [],
            reference_solution=solution,
            atol=float(row.get("atol") or 0.0),
        )
    )
    problem = Problem(
        kind=TaskKind.CODE,
        prompt=chat_prompt,
        tests=tests,
        source="MBPP+",
        split="test",
        metadata={
            "evalplus": {"dataset": "mbpp", "task_id": task_id},
            "entry_point": entry,
            "completion_prompt": raw_prompt if raw_prompt.endswith("\n") else raw_prompt + "\n",
            "example_assert_added": added,
        },
        id=task_id,
    )
    return problem, added


def _official_mbpp_plus_path() -> Path:
    try:
        from evalplus.data.mbpp import _ready_mbpp_plus_path

        return Path(_ready_mbpp_plus_path())
    except Exception as exc:  # any download failure: the release is on GitHub
        raise DatasetUnavailableError(
            f"could not fetch the official MBPP+ release through evalplus ({type(exc).__name__}: "
            f"{exc!s:.200}). Download MbppPlus-v0.2.0.jsonl.gz from "
            "github.com/evalplus/mbppplus_release where GitHub is reachable and pass its path."
        ) from exc


def _mbpp_completion_prompt(problem: Problem) -> str:
    return str(problem.metadata["completion_prompt"])


def mbpp_plus(
    path: str | Path | None = None,
    *,
    mode: PromptMode | str = PromptMode.CHAT,
    template: PromptTemplate | None = None,
    max_tokens: int | None = None,
    verifier_factory: Callable[[], Verifier] | None = None,
) -> Benchmark:
    """MBPP+ (378 tasks of v0.2.0), graded on its base and plus tests.

    Args:
        path: a local JSONL (``task_id, prompt, entry_point, canonical_solution, base_input,
            plus_input, atol``; ``.jsonl.gz`` too); None fetches the official release with
            evalplus (blocking; needs GitHub).
        mode: CHAT (the teachers' code prompt around the task and its example assert, answer
            in a fenced block) or COMPLETION (evalplus's base-model protocol: the task's
            docstring prompt continued greedily, cut at evalplus's stop strings, graded together
            with the prompt).
        template: the chat prompt template (default: the teachers' code prompt).
        max_tokens: the default budget (4096 in chat mode, 768 as evalplus in completion mode).
        verifier_factory: builds the grader (default: :class:`CodeVerifier`).

    The file's sha256 is recorded; a file that is not the official release is named so in the
    benchmark's ``notes`` (and in every stored result), because numbers for publication must
    come from the official file. Integers beyond 64 bits in the test inputs are kept exact.

    Raises:
        DatasetUnavailableError: no path and the official release could not be fetched.
    """
    file = Path(path) if path is not None else _official_mbpp_plus_path()
    if not file.is_file():
        raise ProblemSourceError(f"MBPP+ file not found: {file}")
    sha = file_sha256(file)
    added = 0
    problems: list[Problem] = []
    for index, row in enumerate(iter_jsonl(file)):
        problem, was_added = _mbpp_problem(row, index, str(file))
        problems.append(problem)
        added += was_added
    notes: list[str] = []
    if sha == MBPP_PLUS_LOCAL_SHA256:
        notes.append(
            "not the official MBPP+ v0.2.0 release (a file rebuilt from evalplus commit 767efcc): "
            "prompts lack the example assert (added from the tests) and a few reference fixes; "
            "use the official file for published numbers"
        )
    elif not sha.startswith(MBPP_PLUS_OFFICIAL_SHA256_PREFIX):
        notes.append(f"file sha256 {sha[:12]} is not the official MBPP+ v0.2.0 release")
    if added:
        notes.append(f"example assert added to {added} prompts from the task's tests")
    prompt_mode = PromptMode(mode)
    completion = prompt_mode is PromptMode.COMPLETION
    return Benchmark(
        name="MBPP+",
        kind=TaskKind.CODE,
        problems=tuple(problems),
        mode=prompt_mode,
        template=template,
        completion_prompt=_mbpp_completion_prompt,
        stop=MBPP_COMPLETION_STOPS if completion else (),
        max_tokens=max_tokens or (768 if completion else 4096),
        sha256=sha,
        source=str(file),
        accept_truncated=completion,
        grade_with_prompt=completion,
        verifier_factory=verifier_factory,
        notes=tuple(notes),
    )


# --- user benchmarks -------------------------------------------------------------------------


def custom_benchmark(
    name: str,
    problems: Iterable[Problem],
    *,
    template: PromptTemplate | str | None = None,
    completion_prompt: Callable[[Problem], str] | None = None,
    stop: Sequence[str] = (),
    max_tokens: int = 4096,
    verifier_factory: Callable[[], Verifier] | None = None,
    accept_truncated: bool = False,
) -> Benchmark:
    """A benchmark from any problems of one kind.

    Args:
        name: its name in results.
        problems: the problems (all math or all code; ids must be unique).
        template: the chat prompt (a :class:`PromptTemplate` or its user text with
            ``{prompt}``); default: the teachers' template of the problems' kind.
        completion_prompt: give it to prompt with raw text instead of chat messages.
        stop: stop strings for every request.
        max_tokens: the default generation budget.
        verifier_factory: builds the grader (default: MathVerifier or CodeVerifier).
        accept_truncated: grade responses cut at ``max_tokens`` instead of failing them.

    The recorded sha256 is that of the problems' content.
    """
    items = tuple(problems)
    if not items:
        raise ConfigurationError(f"benchmark {name!r} has no problems")
    if isinstance(template, str):
        template = PromptTemplate(user=template, name=f"{name}-prompt")
    return Benchmark(
        name=name,
        kind=items[0].kind,
        problems=items,
        mode=PromptMode.COMPLETION if completion_prompt is not None else PromptMode.CHAT,
        template=template,
        completion_prompt=completion_prompt,
        stop=tuple(stop),
        max_tokens=max_tokens,
        source="problems",
        accept_truncated=accept_truncated,
        verifier_factory=verifier_factory,
    )
