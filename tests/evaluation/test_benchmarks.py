from __future__ import annotations

import json
from pathlib import Path

import pytest

from tracedistill.errors import ConfigurationError, ProblemSourceError
from tracedistill.evaluation import (
    PromptMode,
    custom_benchmark,
    decontaminate,
    file_sha256,
    math500,
    mbpp_plus,
)
from tracedistill.evaluation.benchmarks import MATH500_LOCAL_SHA256, MBPP_PLUS_LOCAL_SHA256
from tracedistill.prompts import CODE_PROMPT, MATH_PROMPT
from tracedistill.records import Message, Problem, TaskKind


def test_math500_local(math500_path: Path) -> None:
    bench = math500(math500_path)
    assert len(bench) == 500 and bench.name == "MATH-500" and bench.kind is TaskKind.MATH
    assert bench.sha256 == MATH500_LOCAL_SHA256 == file_sha256(math500_path)
    assert bench.notes == ()
    first = bench.problems[0]
    assert first.id.startswith("math500/test/") and first.answer
    prompt = bench.prompt(first)
    assert isinstance(prompt, tuple) and prompt == MATH_PROMPT.render(first)
    assert "\\boxed{}" in prompt[-1].content
    # A subset keeps the file hash, so its results pair with the full benchmark's.
    assert bench.subset(10).sha256 == bench.sha256 and len(bench.subset(10)) == 10


def test_mbpp_plus_local_chat_and_completion(mbpp_path: Path) -> None:
    bench = mbpp_plus(mbpp_path)
    assert len(bench) == 378 and bench.kind is TaskKind.CODE
    assert bench.sha256 == MBPP_PLUS_LOCAL_SHA256
    assert any("NOT the official" in n or "not the official" in n for n in bench.notes)
    p = next(p for p in bench.problems if p.id == "Mbpp/2")
    assert "similar_elements(" in p.prompt and "assert " in p.prompt
    assert p.metadata["evalplus"] == {"dataset": "mbpp", "task_id": "Mbpp/2"}
    assert p.metadata["example_assert_added"] is True
    assert p.tests is not None and p.tests.function is not None
    assert p.tests.function.entry_point == "similar_elements"
    assert p.tests.function.reference_solution
    chat = bench.prompt(p)
    assert isinstance(chat, tuple) and chat == CODE_PROMPT.render(p)
    # Integers beyond int64 are kept exact (not turned into floats).
    huge = [
        v
        for q in bench.problems
        for inp in q.tests.function.plus_inputs  # type: ignore[union-attr]
        for v in _flatten(inp)
        if isinstance(v, int) and abs(v) > 2**63
    ]
    assert huge and all(isinstance(v, int) for v in huge)

    base = mbpp_plus(mbpp_path, mode="completion")
    assert base.mode is PromptMode.COMPLETION and base.max_tokens == 768
    text = base.prompt(p)
    assert isinstance(text, str) and text.startswith('"""') and "assert similar_elements" in text
    assert "\nif __name__" in base.stop and base.accept_truncated and base.grade_with_prompt
    assert base.graded_text(p, "def similar_elements(a, b): ...").startswith(text)


def _flatten(value: object) -> list[object]:
    if isinstance(value, list | tuple):
        return [x for v in value for x in _flatten(v)]
    return [value]


def test_mbpp_official_prompt_is_kept(tmp_path: Path, mbpp_path: Path) -> None:
    row = json.loads(mbpp_path.read_text().splitlines()[0])
    row["prompt"] = '"""\nWrite a function.\nassert similar_elements((1,), (1,)) == (1,)\n"""\n'
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(row) + "\n")
    bench = mbpp_plus(path)
    problem = bench.problems[0]
    assert problem.metadata["example_assert_added"] is False
    assert problem.metadata["completion_prompt"] == row["prompt"]
    assert any("is not the official" in n for n in bench.notes)


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ProblemSourceError):
        math500(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem": "x"}) + "\n")
    with pytest.raises(ProblemSourceError, match="answer"):
        math500(bad)
    with pytest.raises(ConfigurationError):
        custom_benchmark("empty", [])
    math_p = Problem(kind="math", prompt="1+1?", answer="2", id="a")
    code_p = Problem(kind="code", prompt="f", tests={"asserts": ["assert True"]}, id="b")
    with pytest.raises(ConfigurationError, match="is math"):
        custom_benchmark("mixed", [math_p, code_p])
    with pytest.raises(ConfigurationError, match="duplicate"):
        custom_benchmark("dup", [math_p, math_p])


def test_custom_benchmark_template_and_completion() -> None:
    problems = [
        Problem(kind="math", prompt=f"What is {i}+{i}?", answer=str(2 * i)) for i in range(3)
    ]
    bench = custom_benchmark("mine", problems, template="Q: {prompt}\nBox it.")
    assert bench.prompt(problems[0]) == (Message("user", "Q: What is 0+0?\nBox it."),)
    raw = custom_benchmark("raw", problems, completion_prompt=lambda p: f"Q: {p.prompt}\nA:")
    assert raw.mode is PromptMode.COMPLETION and raw.prompt(problems[1]) == "Q: What is 1+1?\nA:"
    assert bench.sha256 == raw.sha256  # same problems, same content hash


def test_decontamination_report_and_filters(math500_path: Path) -> None:
    bench = math500(math500_path)
    target = next(p for p in bench.problems if len(p.prompt.split()) > 30)
    leaked = Problem(
        kind="math",
        prompt="Warm-up.   " + target.prompt.upper() + " Show your work.",
        answer="1",
        id="train/leaked",
    )
    clean = Problem(
        kind="math",
        prompt="Compute the sum of the first ten primes.",
        answer="129",
        id="train/clean",
    )
    report = decontaminate([leaked, clean], bench)
    assert report.contaminated and report.checked == 2
    assert report.training_ids == {"train/leaked"}
    assert report.benchmark_ids("MATH-500") == {target.id}
    assert report.overlaps[0].shared > 3
    assert [p.id for p in report.clean([leaked, clean])] == ["train/clean"]
    filtered = report.clean_benchmark(bench)
    assert len(filtered) == 499 and target.id not in filtered.ids
    assert "1 of 2 training problems" in report.summary()
    assert decontaminate([("x", "nothing in common here at all, really")], bench).overlaps == ()


def test_unreachable_sources_say_how_to_use_a_local_file(monkeypatch: pytest.MonkeyPatch) -> None:
    import evalplus.data.mbpp

    from tracedistill.errors import DatasetUnavailableError
    from tracedistill.problems import _io

    def no_github() -> str:
        raise OSError("github.com unreachable")

    monkeypatch.setattr(evalplus.data.mbpp, "_ready_mbpp_plus_path", no_github)
    with pytest.raises(DatasetUnavailableError, match="pass its path"):
        mbpp_plus()

    def no_hub(self: object) -> object:
        raise DatasetUnavailableError("Could not load HuggingFaceH4/MATH-500: offline")

    monkeypatch.setattr(_io.HubRows, "load", no_hub)
    with pytest.raises(DatasetUnavailableError, match="MATH-500"):
        math500()
