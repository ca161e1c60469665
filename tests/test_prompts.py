"""Prompt rendering: placeholders replaced in one pass, the split of a template cached."""

from __future__ import annotations

import random

from tracedistill.prompts import (
    PLACEHOLDERS,
    PromptSet,
    PromptTemplate,
    _fill,
    _render_text,
    _values,
)
from tracedistill.records import CodeTests, FunctionTests, Message, Problem, TaskKind


def _reference_fill(text: str, values: dict[str, str]) -> str:
    # The straightforward scan: at each "{", the first placeholder that starts there, else "{".
    out, i = [], 0
    while i < len(text):
        if text[i] == "{":
            name = next((n for n in values if text.startswith(n, i)), None)
            if name is not None:
                out.append(values[name])
                i += len(name)
                continue
        out.append(text[i])
        i += 1
    return "".join(out)


def test_fill_matches_a_character_by_character_scan() -> None:
    values = {"{prompt}": "P {id} {", "{entry_point}": "", "{source}": "S}", "{id}": "I"}
    pieces = ["{", "}", "a", "\\boxed{}", "{pro", "x{", "", *PLACEHOLDERS]
    rng = random.Random(12)
    for _ in range(5000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 9)))
        assert _fill(text, values) == _reference_fill(text, values), text


def test_rendering_reads_what_fill_reads_from_the_problem() -> None:
    # The per-request path reads each placeholder's value from the problem itself: it must
    # give _fill(text, _values(problem)) for any text, on math and code problems alike.
    problems = [
        Problem(id="p1", source="s}", kind=TaskKind.MATH, prompt="P {id} {", answer="1"),
        Problem(kind=TaskKind.MATH, prompt="{prompt}{entry_point}", answer="2"),
        Problem(
            kind=TaskKind.CODE,
            prompt="write f {source}",
            tests=CodeTests(
                function=FunctionTests(entry_point="f", base_inputs=[[1]], expected_base=[1])
            ),
        ),
        Problem(kind=TaskKind.CODE, prompt="asserts only", tests=CodeTests(asserts=["1"])),
    ]
    pieces = ["{", "}", "a", "\\boxed{}", "{pro", "x{", "", *PLACEHOLDERS]
    rng = random.Random(13)
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 9)))
        for problem in problems:
            assert _render_text(text, problem) == _fill(text, _values(problem)), text


def test_problem_text_with_placeholders_is_kept_and_system_comes_first() -> None:
    template = PromptTemplate(system="id={id} src={source}", user="{prompt} [{id}]")
    problem = Problem(id="p1", source="s", kind=TaskKind.MATH, prompt="what is {id}?", answer="1")
    assert template.render(problem) == (
        Message("system", "id=p1 src=s"),
        Message("user", "what is {id}? [p1]"),
    )


def test_for_kind_takes_members_and_their_values() -> None:
    prompts = PromptSet()
    assert prompts.for_kind(TaskKind.MATH) is prompts.math
    assert prompts.for_kind("code") is prompts.code
    assert prompts.for_kind(TaskKind.CODE) is prompts.code
