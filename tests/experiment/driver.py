"""A small real experiment, run in a subprocess by the resume tests."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

from tracedistill.demo import DEMO_PROMPTS, SyntheticTeacher, synthetic_problems
from tracedistill.evaluation.benchmarks import custom_benchmark
from tracedistill.experiment import Experiment, Run
from tracedistill.training.base import TrainConfig
from tracedistill.training.local import LocalTrainer


def build(directory: Path, student: Path) -> Experiment:
    problems = synthetic_problems("math", 40, seed=3)
    bench = custom_benchmark(
        "held-out-math", problems[32:], template=DEMO_PROMPTS.math, max_tokens=24
    )
    run = Run(
        name="math",
        task="math",
        teacher=SyntheticTeacher(),
        problems=problems[:32],
        train=TrainConfig(
            base_model=str(student),
            lora_rank=4,
            batch_size=4,
            learning_rate=1e-3,
            max_length=96,
            epochs=None,
            max_steps=6,
            checkpoint_every=2,
        ),
    )
    return Experiment(
        directory,
        [run],
        trainer=LocalTrainer(device="cpu"),
        benchmarks=[bench],
        baseline=student,
        progress=False,
    )


async def main(directory: str, student: str) -> None:
    results = await build(Path(directory), Path(student)).run()
    print("RESULTS", len(results.scores), flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2])
