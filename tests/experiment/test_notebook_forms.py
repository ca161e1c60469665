"""The Experiment as a notebook meets it: run_sync in a running loop, the plan's forms."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from tracedistill.demo import SyntheticTeacher, synthetic_problems
from tracedistill.experiment import Experiment, Plan, Run
from tracedistill.teachers import OpenRouterTeacher, Pricing
from tracedistill.training.base import TrainConfig
from tracedistill.training.local import LocalTrainer

from ..test_report_outputs import well_formed


def _experiment(tmp_path: Path) -> Experiment:
    run = Run(
        name="m",
        task="math",
        teacher=SyntheticTeacher(),
        problems=synthetic_problems("math", 10),
        train=TrainConfig(base_model="x", batch_size=2),
    )
    return Experiment(tmp_path, [run], trainer=LocalTrainer())


def test_run_sync_in_a_running_loop_names_the_await_form(tmp_path: Path) -> None:
    experiment = _experiment(tmp_path)

    async def in_a_notebook() -> None:
        with pytest.raises(RuntimeError, match=r"await experiment\.run\(stages=\['generate'\]\)"):
            experiment.run_sync(stages=["generate"])

    anyio.run(in_a_notebook)
    assert not (tmp_path / "runs").exists()  # nothing started


def test_plan_text_and_html_mark_what_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    sonnet = OpenRouterTeacher(
        model="anthropic/claude-sonnet-4.5",
        pricing=Pricing(input_per_million=3.0, output_per_million=15.0),
    )
    runs = [
        Run(
            name="sonnet-math",
            task="math",
            teacher=sonnet,
            problems=synthetic_problems("math", 100),
            train=TrainConfig(base_model="q", batch_size=10, checkpoint_every=2),
        ),
        Run(
            name="free",
            task="math",
            teacher=SyntheticTeacher(),
            problems=synthetic_problems("math", 20),
            train=TrainConfig(base_model="q", batch_size=2),
        ),
    ]
    experiment = Experiment(tmp_path, runs, trainer=LocalTrainer())
    plan = experiment.plan(unavailable={"MATH-500": "no data (set TRACEDISTILL_DATA)"})
    plan = plan.with_unavailable("r1-math", "the Hub is not reachable")
    assert isinstance(plan, Plan)
    table = plan.table()
    assert [r["run"] for r in table] == ["sonnet-math", "free", "total"]
    assert table[-1]["to request"] == 120
    assert table[-1]["generation cost"] == pytest.approx(table[0]["generation cost"])
    text = str(plan)
    assert repr(plan) == text
    assert "| sonnet-math |" in text and "| total |" in text
    assert "Not available" in text and "- MATH-500: no data (set TRACEDISTILL_DATA)" in text
    assert "- r1-math: the Hub is not reachable" in text
    markup = well_formed(plan._repr_html_())
    assert "<th>generation cost</th>" in markup and "<b>r1-math</b>" in markup
    assert f"${table[0]['generation cost']:,.2f}" in markup
    # a plan without anything missing says nothing about it
    assert "Not available" not in str(experiment.plan())


def test_quality_table_takes_student_lengths_from_the_data_report(tmp_path: Path) -> None:
    from tracedistill.chat import ChatFormat, LengthPolicy, LengthReport
    from tracedistill.training.base import DataReport, TrainingDirectory

    experiment = _experiment(tmp_path)
    anyio.run(lambda: experiment.run(stages=["generate"]))
    (quality,) = experiment.results().quality
    assert quality.over_max_length is None  # no training data prepared yet
    assert quality.truncation_rate == 0.0
    run = experiment.runs[0]
    folder = TrainingDirectory(experiment.run_dir(run) / "training")
    folder.path.mkdir(parents=True)
    length = LengthReport(
        max_length=96, policy=LengthPolicy.TRUNCATE, total=8, kept=8, truncated=("a", "b")
    )
    folder.write_data_report(
        DataReport(
            pool_size=10, selected=8, length=length, tokenizer="t", chat_format=ChatFormat.QWEN3
        )
    )
    (quality,) = experiment.results().quality
    assert (quality.over_max_length, quality.max_length) == (0.25, 96)
    (row,) = experiment.results().quality_table()
    assert row["over max_length (student tokens)"] == "25.0% > 96"
    # an unreadable data report is listed in the results, not only logged
    data = folder.path / "data.json"
    data.write_bytes(b"{not json")
    results = experiment.results()
    (quality,) = results.quality
    assert quality.over_max_length is None
    assert [what for what, _ in results.unreadable] == [f"length report of {run.name}"]
    assert str(data) in results.unreadable[0][1] and "Not included" in results.to_markdown()
