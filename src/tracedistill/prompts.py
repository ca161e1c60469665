"""Prompt templates: how a problem becomes the chat messages sent to a teacher.

The same templates are used by the evaluator and the trainer, so a student is evaluated with the
prompt it was trained on. Templates are attrs records; override them per task with
:meth:`PromptSet.with_template` or by building your own :class:`PromptTemplate`.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from tracedistill.errors import ConfigurationError
from tracedistill.records import Message, Problem, TaskKind

__all__ = [
    "CODE_PROMPT",
    "DEFAULT_PROMPTS",
    "MATH_PROMPT",
    "PromptSet",
    "PromptTemplate",
]

#: Placeholders a template may use; each is replaced literally (no other brace is special, so
#: ``\boxed{}`` needs no escaping).
PLACEHOLDERS = ("{prompt}", "{entry_point}", "{source}", "{id}")


def _check_user(_inst: object, _attr: attrs.Attribute[Any], value: str) -> None:
    if "{prompt}" not in value:
        raise ConfigurationError(
            f"a prompt template's user text must contain the placeholder {{prompt}}; "
            f"got {value!r:.120}"
        )


@attrs.frozen(slots=True, kw_only=True)
class PromptTemplate:
    """A chat prompt for one kind of task.

    Args:
        user: the user message; ``{prompt}`` is replaced by the problem text. ``{entry_point}``
            (a code problem's function name, or empty), ``{source}`` and ``{id}`` may be used too.
        system: an optional system message (same placeholders).
        name: a short label, stored nowhere but useful in logs.
    """

    user: str = attrs.field(validator=[attrs.validators.instance_of(str), _check_user])
    system: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(str))
    )
    name: str = "custom"

    def render(self, problem: Problem) -> tuple[Message, ...]:
        """Return the messages for ``problem``."""
        # The role is a literal and _render_text returns a str: of_text skips re-checking them.
        user = Message.of_text("user", _render_text(self.user, problem))
        if self.system:
            return (Message.of_text("system", _render_text(self.system, problem)), user)
        return (user,)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict."""
        return {"user": self.user, "system": self.system, "name": self.name}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromptTemplate:
        """Build from :meth:`to_dict`'s output."""
        return cls(user=data["user"], system=data.get("system"), name=data.get("name", "custom"))


def _values(problem: Problem) -> dict[str, str]:
    entry = ""
    if problem.tests is not None and problem.tests.function is not None:
        entry = problem.tests.function.entry_point
    return {
        "{prompt}": problem.prompt,
        "{entry_point}": entry,
        "{source}": problem.source,
        "{id}": problem.id,
    }


def _entry_point(problem: Problem) -> str:
    tests = problem.tests
    if tests is not None and tests.function is not None:
        return tests.function.entry_point
    return ""


#: How each placeholder's value is read from a problem (what _values puts under it).
_GETTERS: dict[str, Callable[[Problem], str]] = {
    "{prompt}": operator.attrgetter("prompt"),
    "{entry_point}": _entry_point,
    "{source}": operator.attrgetter("source"),
    "{id}": operator.attrgetter("id"),
}

_Plan = tuple[str, tuple[tuple[Callable[[Problem], str], str], ...]]


@functools.lru_cache(maxsize=256)
def _plan(text: str) -> _Plan:
    """``text``'s split as its leading literal, then each placeholder's getter with the literal
    that follows it.
    """
    head = ""
    steps: list[tuple[Callable[[Problem], str], str]] = []
    for is_name, part in _split(text):
        if is_name:
            steps.append((_GETTERS[part], ""))
        elif steps:
            steps[-1] = (steps[-1][0], steps[-1][1] + part)
        else:
            head += part
    return head, tuple(steps)


def _render_text(text: str, problem: Problem) -> str:
    """``_fill(text, _values(problem))``, reading only the values ``text`` uses: once per
    request, at about a third of the cost.
    """
    out, steps = _plan(text)
    for get, literal in steps:
        out += get(problem) + literal
    return out


def _fill(text: str, values: Mapping[str, str]) -> str:
    # The template is split once per text; values go in after the split, so a problem text that
    # itself contains "{id}" is kept as is.
    return "".join([values[part] if is_name else part for is_name, part in _split(text)])


@functools.lru_cache(maxsize=256)
def _split(text: str) -> tuple[tuple[bool, str], ...]:
    # (is_placeholder, text) slots in order; a brace that starts no placeholder is literal.
    parts: list[tuple[bool, str]] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        j = text.find("{", i)
        if j < 0:
            literal.append(text[i:])
            break
        literal.append(text[i:j])
        name = next((n for n in PLACEHOLDERS if text.startswith(n, j)), None)
        if name is None:
            literal.append("{")
            i = j + 1
            continue
        parts.append((False, "".join(literal)))
        parts.append((True, name))
        literal = []
        i = j + len(name)
    parts.append((False, "".join(literal)))
    return tuple(part for part in parts if part[0] or part[1])


MATH_PROMPT = PromptTemplate(
    name="math-boxed",
    user=("{prompt}\n\nPlease reason step by step, and put your final answer within \\boxed{}."),
)

CODE_PROMPT = PromptTemplate(
    name="code-python",
    user=(
        "{prompt}\n\nWrite a complete, self-contained Python 3 solution. Think the problem "
        "through first, then give your final solution in a single ```python code block."
    ),
)


@attrs.frozen(slots=True, kw_only=True)
class PromptSet:
    """One template per task kind: what a teacher (or a sampler) sends for each problem."""

    math: PromptTemplate = MATH_PROMPT
    code: PromptTemplate = CODE_PROMPT

    def for_kind(self, kind: TaskKind | str) -> PromptTemplate:
        """Return the template of a task kind."""
        # The enum members themselves skip the conversion (a problem's kind is one already).
        if kind is TaskKind.MATH:
            return self.math
        if kind is TaskKind.CODE:
            return self.code
        return self.math if TaskKind(kind) is TaskKind.MATH else self.code

    def render(self, problem: Problem) -> tuple[Message, ...]:
        """Return the messages for ``problem`` with its kind's template."""
        return self.for_kind(problem.kind).render(problem)

    def with_template(self, kind: TaskKind | str, template: PromptTemplate | str) -> PromptSet:
        """Return a copy with ``kind``'s template replaced (a string is the user text)."""
        if isinstance(template, str):
            template = PromptTemplate(user=template)
        return attrs.evolve(self, **{str(TaskKind(kind)): template})


#: The templates used when none is given.
DEFAULT_PROMPTS = PromptSet()
