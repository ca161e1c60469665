"""A user-written Teacher and a user-defined benchmark, assembled into a small experiment.

Runs offline on the CPU in a few minutes:

    python examples/custom_teacher_and_benchmark.py

The teacher is a plain Python solver for greatest-common-divisor questions (swap in a call to
your own model server: implement ``complete`` and return a ``TeacherCompletion``). The benchmark is
any list of ``Problem``s. The student is the demo's tiny Qwen3 model, trained with LoRA locally:
it is far too small to learn Euclid's algorithm (its 600-token vocabulary was made for the
demo's problems), so expect little beyond the think block; point ``base_model`` at a real model
directory (and use a GPU) for numbers that mean something.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import anyio

from tracedistill import Experiment, Problem, Run, TrainConfig, custom_benchmark
from tracedistill.demo import build_demo_student
from tracedistill.records import SamplingParams, TokenUsage
from tracedistill.teachers import (
    PromptSet,
    PromptTemplate,
    Teacher,
    TeacherCompletion,
    TeacherRequest,
)
from tracedistill.training.local import LocalTrainer

PROMPTS = PromptSet(math=PromptTemplate(user="{prompt}\nPut the final answer in \\boxed{}."))


class GcdTeacher(Teacher):
    """Answers "What is gcd(a, b)?" with Euclid's algorithm written out as reasoning."""

    rate_limited = False  # no provider behind it
    reports_cost = True  # and it says what each answer cost: nothing

    def __init__(self) -> None:
        super().__init__(
            model="euclid", params=SamplingParams(max_tokens=128, temperature=0.0), prompts=PROMPTS
        )

    async def complete(
        self, request: TeacherRequest, *, observe: object = None
    ) -> TeacherCompletion:
        a, b = request.problem.metadata["a"], request.problem.metadata["b"]
        steps, x, y = [], a, b
        while y:
            steps.append(f"gcd({x}, {y}) = gcd({y}, {x % y})")
            x, y = y, x % y
        reasoning = "; ".join(steps) + f"; so the gcd is {x}."
        return TeacherCompletion(
            reasoning=reasoning,
            answer=f"\\boxed{{{x}}}",
            usage=TokenUsage(prompt_tokens=12, completion_tokens=len(reasoning) // 4),
            cost_usd=0.0,
        )


def gcd_problems(n: int, seed: int) -> list[Problem]:
    rng = random.Random(seed)
    out: dict[str, Problem] = {}
    while len(out) < n:
        a, b = rng.randint(2, 60), rng.randint(2, 60)
        prompt = f"What is gcd({a}, {b})?"
        out[prompt] = Problem(
            kind="math", prompt=prompt, answer=str(math.gcd(a, b)), metadata={"a": a, "b": b}
        )
    return list(out.values())


async def main(directory: Path = Path("runs/custom")) -> None:
    student = await anyio.to_thread.run_sync(
        lambda: build_demo_student(directory / "student-base", warmup_steps=150)
    )
    problems = gcd_problems(140, seed=1)
    benchmark = custom_benchmark("gcd-40", problems[100:], template=PROMPTS.math, max_tokens=160)
    run = Run(
        name="euclid-gcd",
        task="math",
        teacher=GcdTeacher(),
        problems=problems[:100],
        train=TrainConfig(
            base_model=str(student),
            lora_rank=32,
            batch_size=8,
            learning_rate=1e-2,
            max_length=320,
            epochs=None,
            max_steps=200,
            checkpoint_every=100,
        ),
    )
    experiment = Experiment(
        directory,
        [run],
        trainer=LocalTrainer(device="cpu"),
        benchmarks=[benchmark],
        baseline=student,
    )
    print(experiment.plan())
    results = await experiment.run()
    print(results.to_markdown())


if __name__ == "__main__":
    anyio.run(main)
