"""The driver through every stage in one process, fast: a real teacher, store and grader, a
trainer that only saves checkpoints and a sampler that answers by rule."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import orjson

from tracedistill.clients.base import Sampler
from tracedistill.demo import DEMO_PROMPTS, SyntheticTeacher, synthetic_problems
from tracedistill.evaluation import Completion
from tracedistill.evaluation.benchmarks import custom_benchmark
from tracedistill.experiment import STAGES, Experiment, Run
from tracedistill.records import FinishReason, Trace
from tracedistill.training.base import TrainConfig, TrainingDirectory
from tracedistill.training.checkpoints import Checkpoint


class _SavingTrainer:
    """Saves a checkpoint at steps 1 and 2 of a run; trains nothing."""

    def __init__(self) -> None:
        self.seen: list[Trace] = []

    async def train(self, traces: list[Trace], config: Any, directory: Path) -> Any:
        self.seen = list(traces)
        folder = TrainingDirectory(directory)
        saved = [
            Checkpoint(step=s, samples_seen=2 * s, sampler=f"{directory}/w{s}", state=None)
            for s in (1, 2)
        ]
        for ckpt in saved:
            folder.add_checkpoint(ckpt)
        folder.close()
        return SimpleNamespace(total_steps=2, checkpoints=saved, metrics=[], final_checkpoint=None)


class _RuleSampler(Sampler):
    """Answers every prompt with one fixed boxed number after a think block."""

    def __init__(self, answer: str) -> None:
        super().__init__(max_concurrency=4)
        self.model = f"rule-{answer}"
        self.answer = answer

    async def _sample(self, prompt: Any, params: Any) -> Completion:
        text = f"<think>w</think>\\boxed{{{self.answer}}}"
        return Completion(text=text, finish_reason=FinishReason.STOP)


def test_every_stage_through_the_driver_and_again_without_rework(tmp_path: Path) -> None:
    problems = synthetic_problems("math", 24, seed=7)
    bench = custom_benchmark("held-out", problems[16:], template=DEMO_PROMPTS.math, max_tokens=32)
    run = Run(
        name="r",
        task="math",
        teacher=SyntheticTeacher(),
        problems=problems[:16],
        train=TrainConfig(base_model="x", batch_size=2),
    )
    trainer = _SavingTrainer()

    def factory(model: Any, run: Run | None) -> Sampler:
        return _RuleSampler("0" if run is None else str(model.step))

    exp = Experiment(
        tmp_path,
        [run],
        trainer=trainer,  # type: ignore[arg-type]
        benchmarks=[bench],
        baseline="base-model",
        sampler_factory=factory,
        progress=False,
    )
    results = anyio.run(exp.run)
    stages = orjson.loads((tmp_path / "runs" / "r" / "stages.json").read_bytes())["stages"]
    assert set(stages) == set(STAGES)
    assert stages["filter"]["selected"] == len(trainer.seen) > 0
    assert results.steps("r") == [1, 2]
    assert results.base("held-out") is not None
    score = results.score("r", 2, "held-out")
    assert score is not None and score.n == 8 and score.format_compliance == 1.0
    assert not results.unreadable
    assert results.grading_table()[0]["answers that count"].startswith("the final \\boxed{}")
    provenance = orjson.loads((tmp_path / "experiment.json").read_bytes())
    assert provenance["runs"]["r"]["stages"]["stages"].keys() == set(STAGES)
    # a second call finds everything done and gives the same report
    trainer.seen = []
    again = anyio.run(exp.run)
    assert trainer.seen == [] and again.to_markdown() == results.to_markdown()


class _AnswerSampler(Sampler):
    """Answers each prompt correctly: boxed for half of the problems, in words for the rest."""

    def __init__(self, answers: dict[str, str]) -> None:
        super().__init__(max_concurrency=4)
        self.model = "answers"
        self.answers = answers

    async def _sample(self, prompt: Any, params: Any) -> Completion:
        index, answer = next(
            (i, a) for i, (p, a) in enumerate(self.answers.items()) if str(prompt) == p
        )
        final = f"\\boxed{{{answer}}}" if index % 2 == 0 else f"The answer is {answer}."
        return Completion(text=f"<think>w</think>{final}", finish_reason=FinishReason.STOP)


def test_a_benchmarks_strict_grader_grades_inside_an_experiment(tmp_path: Path) -> None:
    from tracedistill.evaluation import EvalStore
    from tracedistill.report import Results
    from tracedistill.verifiers.math import MathVerifier

    problems = synthetic_problems("math", 8, seed=11)
    strict = custom_benchmark(
        "strict",
        problems,
        template=DEMO_PROMPTS.math,
        verifier_factory=lambda: MathVerifier(extraction="boxed", workers=1),
    )
    lenient = custom_benchmark("lenient", problems, template=DEMO_PROMPTS.math)
    answers = {str(strict.prompt(p)): str(p.answer) for p in problems}
    exp = Experiment(
        tmp_path,
        [],
        trainer=_SavingTrainer(),  # type: ignore[arg-type]
        benchmarks=[strict, lenient],
        baseline=_AnswerSampler(answers),
        progress=False,
    )
    results = anyio.run(lambda: exp.run(stages=["evaluate"]))
    graded_strictly, graded_leniently = results.base("strict"), results.base("lenient")
    assert graded_strictly is not None and graded_leniently is not None
    # the unboxed correct answers count as wrong under the benchmark's boxed-only grader
    assert (graded_strictly.correct, graded_leniently.correct) == (4, 8)
    boxed_only, default = MathVerifier(extraction="boxed").protocol, MathVerifier().protocol
    assert boxed_only != default
    assert results.protocols == {"strict": boxed_only, "lenient": default}
    table = {row["benchmark"]: row["answers that count"] for row in results.grading_table()}
    assert table == {"strict": boxed_only, "lenient": default}
    # the protocol is stored in each evaluation, so results built from the logs state it too
    stored = Results.from_evaluations(EvalStore(tmp_path).results())
    assert stored.protocols == {"strict": boxed_only, "lenient": default}


def test_base_model_is_a_deprecated_name_of_baseline(tmp_path: Path) -> None:
    import pytest

    from tracedistill.errors import ConfigurationError
    from tracedistill.training.local import LocalTrainer

    with pytest.warns(DeprecationWarning, match="baseline="):
        old = Experiment(tmp_path, [], trainer=LocalTrainer(), base_model="student")
    assert old.baseline == "student"
    with pytest.warns(DeprecationWarning, match="baseline="):
        assert old.base_model == "student"
    new = Experiment(tmp_path, [], trainer=LocalTrainer(), baseline="student")
    assert new.baseline == "student" and new.plan().base_eval_requests == 0  # no benchmarks
    with pytest.raises(ConfigurationError, match="once"):
        Experiment(tmp_path, [], trainer=LocalTrainer(), baseline="a", base_model="b")


def test_provenance_is_written_off_the_event_loop(tmp_path: Path, monkeypatch: Any) -> None:
    import threading

    from tracedistill.experiment.rundir import ExperimentDirectory

    threads: list[int] = []
    write = ExperimentDirectory.write_provenance

    def recording(self: ExperimentDirectory, *args: Any) -> None:
        threads.append(threading.get_ident())
        write(self, *args)  # opens every trace store not open and scans it

    monkeypatch.setattr(ExperimentDirectory, "write_provenance", recording)
    problems = synthetic_problems("math", 6, seed=2)
    run = Run(
        name="r", task="math", teacher=SyntheticTeacher(), problems=problems,
        train=TrainConfig(base_model="x"),
    )  # fmt: skip
    exp = Experiment(tmp_path, [run], trainer=_SavingTrainer(), progress=False)  # type: ignore[arg-type]

    async def main() -> int:
        await exp.run(stages=["generate", "verify"])
        return threading.get_ident()

    loop_thread = anyio.run(main)
    assert len(threads) == 3  # after each stage, and once more at the end
    assert loop_thread not in threads
    provenance = orjson.loads((tmp_path / "experiment.json").read_bytes())
    assert provenance["total_spend_usd"] >= 0 and "r" in provenance["runs"]
