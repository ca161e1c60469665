"""The Experiment end to end: the demo, resume after SIGKILL at every stage, the dry run."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import orjson
import pytest

from tracedistill.demo import SyntheticTeacher, build_demo_student, synthetic_problems
from tracedistill.errors import ConfigurationError
from tracedistill.experiment import STAGES, Experiment, Run
from tracedistill.store import JsonlTraceStore
from tracedistill.teachers import OpenRouterTeacher, Pricing
from tracedistill.training.base import TrainConfig
from tracedistill.training.local import LocalTrainer

from .driver import build

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_student(tmp_path_factory.mktemp("student") / "base", warmup_steps=3)


def _lines(path: Path) -> list[dict]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines() if x.strip()]


def _check_no_rework(directory: Path) -> None:
    """Every trace, verdict and evaluated problem is stored exactly once."""
    store_dir = next((directory / "traces").iterdir())
    keys = collections.Counter(r["key"] for r in _lines(store_dir / "traces.jsonl"))
    assert keys and max(keys.values()) == 1
    verdicts = collections.Counter(
        (r["trace_key"], r["verifier"], r["verifier_version"])
        for r in _lines(store_dir / "verdicts.jsonl")
    )
    assert max(verdicts.values()) == 1
    for log in (directory / "evaluations").rglob("*.jsonl"):
        samples = collections.Counter(
            r["problem_id"] for r in _lines(log) if r.get("type") == "sample"
        )
        assert samples and max(samples.values()) == 1, f"{log} sampled a problem twice"


@pytest.mark.slow
def test_resume_after_sigkill_at_each_stage(tmp_path: Path, student: Path) -> None:
    directory = tmp_path / "exp"
    log = directory / "experiment.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRACEDISTILL_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "tests.experiment.driver", str(directory), str(student)]
    killed_at = []
    for stage in STAGES:
        marker = f"math: {stage}"
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if log.is_file() and marker in log.read_text():
                break
            time.sleep(0.05)
        if proc.poll() is None:
            time.sleep(0.5 if stage in ("train", "evaluate") else 0.05)
            proc.send_signal(signal.SIGKILL)
            killed_at.append(stage)
        proc.wait()
        stages = directory / "runs" / "math" / "stages.json"
        if stages.is_file():
            done = orjson.loads(stages.read_bytes())["stages"]
            assert all(s in STAGES for s in done)
    assert len(killed_at) >= 3, killed_at
    final = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=600)
    assert final.returncode == 0, final.stderr.decode()[-3000:]
    assert b"RESULTS" in final.stdout
    done = orjson.loads((directory / "runs" / "math" / "stages.json").read_bytes())["stages"]
    assert set(done) == set(STAGES)
    _check_no_rework(directory)
    ckpts = _lines(directory / "runs" / "math" / "training" / "checkpoints.jsonl")
    assert {c["step"] for c in ckpts} == {2, 4, 6}
    results = build(directory, student).results()
    assert results.steps("math") == [2, 4, 6]
    assert results.base("held-out-math") is not None
    provenance = orjson.loads((directory / "experiment.json").read_bytes())
    assert provenance["runs"]["math"]["stages"]["stages"].keys() == set(STAGES)
    assert provenance["benchmarks"][0]["sha256"]


def test_dry_run_plan_needs_no_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    teacher = OpenRouterTeacher(
        model="anthropic/claude-sonnet-4.5",
        pricing=Pricing(input_per_million=3.0, output_per_million=15.0),
    )
    problems = synthetic_problems("math", 100)
    run = Run(
        name="sonnet-math",
        task="math",
        teacher=teacher,
        problems=problems,
        train=TrainConfig(base_model="Qwen/Qwen3-30B-A3B-Base", batch_size=10, checkpoint_every=2),
    )
    plan = Experiment(tmp_path, [run], trainer=LocalTrainer()).plan()
    row = plan.rows[0]
    assert row.requests == 100 and row.stored == 0
    # 70 expected correct examples / batch 10 = 7 steps, a checkpoint every 2 -> 4
    assert (row.train_examples, row.train_steps, row.checkpoints) == (70, 7, 4)
    expected_out = 100 * 8192 // 2
    assert row.completion_tokens == expected_out
    assert row.generation_usd == pytest.approx(
        (row.prompt_tokens * 3.0 + expected_out * 15.0) / 1e6
    )
    text = str(plan)
    assert "sonnet-math" in text and "worst case" in text
    assert not (tmp_path / "traces").exists()  # a dry run touches nothing


def test_plan_marks_a_run_too_small_to_train(tmp_path: Path) -> None:
    # 5 problems at the default 0.7 pass rate expect 3 examples: less than a batch of 10. The
    # dry run still prints, with the run's training figures unknown and the reason noted.
    run = Run(
        name="tiny",
        task="math",
        teacher=SyntheticTeacher(),
        problems=synthetic_problems("math", 5),
        train=TrainConfig(base_model="x", batch_size=10),
    )
    plan = Experiment(tmp_path, [run], trainer=LocalTrainer()).plan()
    row = plan.rows[0]
    assert (row.requests, row.train_examples) == (5, 3)
    assert (row.train_steps, row.checkpoints, row.eval_requests) == (None, None, 0)
    assert "cannot train: 3 examples do not fill one batch of 10" in str(plan)


def test_plan_counts_what_is_already_stored(tmp_path: Path) -> None:
    teacher = SyntheticTeacher()
    problems = synthetic_problems("math", 20)
    run = Run(
        name="m",
        task="math",
        teacher=teacher,
        problems=problems,
        train=TrainConfig(base_model="x", batch_size=2),
    )
    exp = Experiment(tmp_path, [run], trainer=LocalTrainer())

    async def half() -> None:
        from tracedistill.teachers import generate

        async with await JsonlTraceStore.aopen(exp.store_dir(run)) as store:
            await generate(teacher, problems[:8], store, progress=False)

    anyio.run(half)
    row = exp.plan().rows[0]
    assert (row.stored, row.requests, row.generation_usd) == (8, 12, 0.0)


def test_configuration_errors(tmp_path: Path) -> None:
    teacher = SyntheticTeacher()
    train = TrainConfig(base_model="x")
    with pytest.raises(ConfigurationError, match="folder"):
        Run(name="a b", task="math", teacher=teacher, problems=[], train=train)
    with pytest.raises(ConfigurationError, match="task must be"):
        Run(name="a", task="poetry", teacher=teacher, problems=[], train=train)
    with pytest.raises(ConfigurationError, match="give problems="):
        Run(name="a", task="math", teacher=teacher, train=train)
    run = Run(name="a", task="math", teacher=teacher, problems=[], train=train)
    with pytest.raises(ConfigurationError, match="unique"):
        Experiment(tmp_path, [run, run], trainer=LocalTrainer())
    exp = Experiment(tmp_path, [run], trainer=LocalTrainer())
    with pytest.raises(ConfigurationError, match="unknown stage"):
        anyio.run(lambda: exp.run(stages=["cook"]))
    with pytest.raises(ConfigurationError, match="unknown run"):
        anyio.run(lambda: exp.run(runs=["b"]))
