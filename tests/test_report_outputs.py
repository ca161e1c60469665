"""What a notebook shows: text and HTML forms of every result, the Evaluator-to-Results path,
the trace-quality table's units, and writers that create their folders."""

from __future__ import annotations

import html.parser
from pathlib import Path

import anyio
import pytest

from tracedistill.chat import LengthPolicy, LengthReport
from tracedistill.evaluation import Completion, EvalStore
from tracedistill.evaluation.results import ProblemOutcome, build_result
from tracedistill.records import FinishReason, Message, Problem, TaskKind, TokenUsage, Trace
from tracedistill.report import BASE, Results, RunInfo, Score, parse_label, trace_quality
from tracedistill.store import JsonlTraceStore
from tracedistill.teachers.engine import GenerationSummary
from tracedistill.training.base import Checkpoint, StepMetrics, TrainConfig, TrainingResult


class _Checker(html.parser.HTMLParser):
    """Fails on unbalanced table markup (what a browser would silently repair)."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag in ("table", "thead", "tbody", "tr", "td", "th", "ul", "li", "p", "b", "h3"):
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()


def well_formed(markup: str) -> str:
    checker = _Checker()
    checker.feed(markup)
    assert checker.stack == []
    return markup


# --- EvalResult -> Results -----------------------------------------------------------------


def _result(label: str, bench: str, passed: list[bool], kind: str = "math") -> object:
    outcomes = [
        ProblemOutcome(
            problem_id=f"{bench}/{i}",
            passed=ok,
            reason="passed" if ok else "wrong-answer",
            text=f"<think>x</think> \\boxed{{{i}}}" if i % 2 else "no answer",
            finish_reason=FinishReason.STOP,
            completion_tokens=10,
            format={"think_opened": True, "think_closed": bool(i % 2), "boxed": bool(i % 2)},
        )
        for i, ok in enumerate(passed)
    ]
    header = {
        "label": label,
        "benchmark": bench,
        "kind": kind,
        "model": "student",
        "benchmark_sha256": "f" * 64,
        "benchmark_source": "problems",
        "sampler": {"backend": "local", "model": "m"},
    }
    return build_result(header, outcomes, expected=len(passed))


def test_results_from_evaluations_match_results_from_scores() -> None:
    n = 40
    base = [i < 10 for i in range(n)]
    early = [i < 20 for i in range(n)]
    late = [i < 30 for i in range(n)]
    evaluations = [
        _result("base", "B", base),
        _result("run@10", "B", early),
        _result("run@20", "B", late),
    ]
    results = Results.from_evaluations(
        evaluations,
        [RunInfo(name="run", teacher="t", task="math", in_domain="B")],
        samples={"run@10": 80, "run@20": 160},
    )
    assert results.steps("run") == [10, 20]
    assert results.base("B") is not None and results.base("B").accuracy == 0.25
    by_scores = Results(
        [
            Score(model=BASE, benchmark="B", outcomes={f"B/{i}": v for i, v in enumerate(base)}),
            Score(
                model="run",
                step=10,
                benchmark="B",
                samples=80,
                outcomes={f"B/{i}": v for i, v in enumerate(early)},
            ),
            Score(
                model="run",
                step=20,
                benchmark="B",
                samples=160,
                outcomes={f"B/{i}": v for i, v in enumerate(late)},
            ),
        ],
        [RunInfo(name="run", teacher="t", task="math", in_domain="B")],
    )
    for title in ("Best in-domain", "Delta from base (paired; * = significant at 5%)"):
        assert results.tables()[title] == by_scores.tables()[title]
    assert results.per_step("run")[0]["samples"] == 80
    # format compliance: a closed think block and a boxed answer (the odd problems)
    assert results.score("run", 20, "B").format_compliance == 0.5
    assert "+50.0*" in results.delta_from_base()[0]["best B vs base"]


def test_from_evaluations_reads_what_the_evaluator_stored(tmp_path: Path) -> None:
    store = EvalStore(tmp_path)
    for label, k in (("base", 1), ("a@5", 3)):
        header = {
            "label": label,
            "benchmark": "B",
            "kind": "math",
            "model": "m",
            "benchmark_sha256": "s",
            "grader": "g",
            "request_keys": {f"p{i}": f"k{i}" for i in range(4)},
        }
        with store.open(label, "B", header) as log:
            for i in range(4):
                log.add_sample(
                    f"p{i}", f"k{i}", Completion(text="x", finish_reason=FinishReason.STOP)
                )
                log.add_grade(
                    f"p{i}",
                    f"k{i}",
                    grader="g",
                    passed=i < k,
                    reason="passed" if i < k else "wrong-answer",
                    details={},
                    format={},
                    elapsed_s=0.0,
                )
    results = Results.from_evaluations(store.results())
    assert [(s.label, s.correct) for s in results.scores] == [("a@5", 3), ("base", 1)]


def test_labels_that_say_nothing_are_refused() -> None:
    assert parse_label("base") == (BASE, None)
    assert parse_label("sonnet-math@300") == ("sonnet-math", 300)
    assert parse_label("qwen-base", base="qwen-base") == (BASE, None)
    assert parse_label("a@b@7") == ("a@b", 7)
    with pytest.raises(ValueError, match="<run>@<step>"):
        Results.from_evaluations([_result("my-model", "B", [True])])
    with pytest.raises(ValueError, match="two scores"):
        Results.from_evaluations([_result("r@1", "B", [True]), _result("r@1", "B", [False])])


# --- text and HTML forms -------------------------------------------------------------------


def test_eval_result_text_and_html() -> None:
    result = _result("run@10", "MATH-500", [True, False, True, True])
    assert repr(result).startswith("<EvalResult MATH-500 run@10: 75.0% [")
    assert len(repr(result)) < 200  # not the outcomes, whatever their number
    text = str(result)
    assert "accuracy:" in text and "3 of 4 graded" in text and "\\boxed{} answer" in text
    markup = well_formed(result._repr_html_())
    assert "75.0%" in markup and "wrong-answer 1" in markup
    partial = build_result({"label": "x", "benchmark": "B"}, list(result.outcomes), expected=9)
    assert "PARTIAL" in str(partial) and "PARTIAL" in repr(partial)


def test_results_text_and_html() -> None:
    empty = Results([])
    assert "nothing evaluated yet" in repr(empty)
    assert "nothing evaluated yet" in empty._repr_html_()
    results = Results.from_evaluations(
        [_result("base", "B", [False, True]), _result("r@1", "B", [True, True])],
        [RunInfo(name="r", teacher="t", task="math", in_domain="B")],
    )
    text = repr(results)
    assert not text.startswith("<tracedistill")
    assert repr(results.score("r", 1, "B")) == "<Score r@1 on B: 100.0 [34.2, 100.0], n=2>"
    assert "Results: 1 run(s) (r), benchmarks B, 2 scores" in text
    assert "| r | 100.0 [" in text  # the best in-domain table
    markup = well_formed(results._repr_html_())
    assert "<h3>Best in-domain</h3>" in markup
    assert str(results) == results.to_markdown()


def test_generation_summary_text_and_html() -> None:
    summary = GenerationSummary(
        teacher="sonnet",
        model="anthropic/claude",
        problems=10,
        requested=10,
        skipped=0,
        done=9,
        truncated=1,
        failed=1,
        resampled=0,
        attempts=12,
        throttled=2,
        input_tokens=1000,
        output_tokens=5000,
        spend_usd=0.5,
        total_spend_usd=0.5,
        elapsed_s=6.0,
    )
    assert "9 answered (1 truncated)" in str(summary)
    markup = well_formed(summary._repr_html_())
    assert "sonnet" in markup and "9 (1 cut at max_tokens)" in markup and "$0.5000" in markup


def test_training_run_text_and_html(tmp_path: Path) -> None:
    metrics = [
        StepMetrics(
            step=s,
            epoch=0,
            samples_seen=8 * s,
            nll=1.0 / s,
            tokens=100,
            loss_tokens=50,
            learning_rate=1e-3,
            seconds=0.1,
        )
        for s in range(1, 201)
    ]
    ckpts = [Checkpoint(step=s, samples_seen=8 * s, sampler=None, state=None) for s in (100, 200)]
    run = TrainingResult(
        run_dir=tmp_path,
        backend="local",
        config=TrainConfig(base_model="tiny"),
        total_steps=200,
        checkpoints=ckpts,
        metrics=metrics,
    )
    text = repr(run)
    assert text == "<TrainingResult local tiny: 200 of 200 steps, 2 checkpoints, final NLL 0.0050>"
    assert "checkpoints: 100, 200" in str(run)
    assert "0.0050" in well_formed(run._repr_html_())


# --- trace quality: one unit per figure ----------------------------------------------------


def _trace(i: int, *, truncated: bool) -> Trace:
    return Trace(
        problem_id=f"p{i}",
        teacher="t",
        model="m",
        prompt=(Message("user", f"What is {i}?"),),
        reasoning="Wait, let me check." if i == 0 else "ok",
        answer=f"\\boxed{{{i}}}",
        finish_reason=FinishReason.LENGTH if truncated else FinishReason.STOP,
        usage=TokenUsage(prompt_tokens=3000, completion_tokens=2000),
    )


def test_trace_quality_counts_each_figure_in_one_named_unit(tmp_path: Path) -> None:
    async def fill() -> None:
        async with await JsonlTraceStore.aopen(tmp_path / "s") as store:
            await store.add_problems(
                Problem(kind=TaskKind.MATH, prompt=f"What is {i}?", answer=str(i), id=f"p{i}")
                for i in range(4)
            )
            for i in range(4):
                await store.add_trace(_trace(i, truncated=i == 3))

    anyio.run(fill)
    with JsonlTraceStore(tmp_path / "s", readonly=True) as store:
        # prompt + completion = 5,000 provider tokens > 4,096: no longer counted as truncated
        before = trace_quality(store, teacher="t", task="math")
        length = LengthReport(
            max_length=4096, policy=LengthPolicy.DROP, total=4, kept=3, dropped=("p1",)
        )
        after = trace_quality(store, teacher="t", task="math", length=length)
    assert before.truncation_rate == 0.25  # the one the teacher stopped at max_tokens
    assert before.over_max_length is None and before.max_length is None
    assert after.over_max_length == 0.25 and after.max_length == 4096
    only_quality = Results([], quality=[before, after])
    assert list(only_quality.tables()) == ["Trace quality"]  # nothing evaluated yet
    assert "Trace quality:\n| teacher |" in repr(only_quality)
    row = only_quality.quality_table()
    assert row[0]["cut at max_tokens (teacher)"] == "25.0%"
    assert row[0]["over max_length (student tokens)"] is None
    assert row[1]["over max_length (student tokens)"] == "25.0% > 4,096"
    assert row[0]["mean tokens (teacher)"] == "2,000"
    assert "truncated" not in row[0]


# --- writers create their folders ----------------------------------------------------------


def test_writers_create_their_folders(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    results = Results.from_evaluations(
        [_result("base", "B", [False, True]), _result("r@1", "B", [True, True])]
    )
    out = results.to_html(tmp_path / "new" / "dir" / "report.html")
    assert out.is_file()
    for name, plot in (
        ("steps", results.plot_steps),
        ("format", results.plot_format),
        ("pareto", results.plot_pareto),
    ):
        path = tmp_path / name / "deep" / f"{name}.png"
        plot(path)
        assert path.is_file()
    import matplotlib.pyplot as plt

    plt.close("all")
