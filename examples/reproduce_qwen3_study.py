"""Reproduce the Qwen3-30B-A3B-Base distillation study (four runs) with tracedistill.

  teacher                      task   traces                        learning rate
  Claude Sonnet 4.5 (OpenRouter) math  40,000 prompts, correct only  2e-4
  Claude Sonnet 4.5 (OpenRouter) code  40,000 prompts, correct only  2e-4
  DeepSeek-R1 (replayed)         math  open-r1/OpenR1-Math-220k      2e-5
  DeepSeek-R1 (replayed)         code  nvidia/OpenCodeReasoning      2e-5

LoRA rank 32, batch 50, cosine LR, AdamW 0.9/0.95, 4,096 tokens, 25,000 samples, a checkpoint
every 100 steps, on Tinker; MATH-500 and MBPP+ at temperature 0 for the base model and every
checkpoint; then the study's tables, plots and an HTML report.

    python examples/reproduce_qwen3_study.py            # dry run without keys: plan and cost
    OPENROUTER_API_KEY=... TINKER_API_KEY=... python examples/reproduce_qwen3_study.py --run

Run it again after any crash: every stage continues where it stopped.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import anyio

from tracedistill import Experiment, Run, TrainConfig
from tracedistill.errors import DatasetUnavailableError
from tracedistill.evaluation import math500, mbpp_plus
from tracedistill.evaluation.samplers.tinker import TinkerSampler
from tracedistill.experiment import Filters, Generation
from tracedistill.problems import code_contests, openr1_math
from tracedistill.teachers import OpenRouterTeacher, Pricing, ReplayTeacher
from tracedistill.training.tinker import TinkerTrainer

# The base model is a parameter: Tinker has announced the retirement of Qwen3-30B-A3B.
BASE_MODEL = os.environ.get("STUDENT", "Qwen/Qwen3-30B-A3B-Base")
DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"  # local copies, if any


def train_config(lr: float, *, filter_length: bool = True) -> TrainConfig:
    return TrainConfig(
        base_model=BASE_MODEL,
        lora_rank=32,
        batch_size=50,
        learning_rate=lr,
        lr_schedule="cosine",
        adam_beta1=0.9,
        adam_beta2=0.95,
        max_length=4096,
        length_policy="drop" if filter_length else "truncate",
        num_samples=25_000,
        epochs=1,
        checkpoint_every=100,
    )


# OpenRouter reports each response's cost; the budget is a hard cap that survives restarts.
SONNET_GENERATION = Generation(concurrency=128, budget_usd=2_000, expected_completion_tokens=700)


def build(directory: Path) -> Experiment:
    sonnet = OpenRouterTeacher(
        model="anthropic/claude-sonnet-4.5",
        name="sonnet-4.5",
        # OpenRouter reports each response's cost; these list prices only feed the dry run.
        pricing=Pricing(input_per_million=3.0, output_per_million=15.0),
    )
    runs = [
        Run(
            name="sonnet-math",
            task="math",
            teacher=sonnet,
            problems=openr1_math(),
            pool_size=40_000,
            train=train_config(2e-4),
            generation=Generation(
                concurrency=128, budget_usd=2_000, expected_completion_tokens=700
            ),
        ),
        Run(
            name="sonnet-code",
            task="code",
            teacher=sonnet,
            problems=code_contests(),
            pool_size=40_000,
            train=train_config(2e-4, filter_length=False),
            generation=Generation(
                concurrency=128, budget_usd=2_000, expected_completion_tokens=700
            ),
        ),
    ]
    for name, task, layout in (
        ("r1-math", "math", "openr1-math"),
        ("r1-code", "code", "opencodereasoning"),
    ):
        try:
            teacher = ReplayTeacher.from_hub(layout)
        except DatasetUnavailableError as exc:  # offline: plan the other runs, say why
            print(f"note: {name} left out of this plan: {exc}")
            continue
        runs.append(
            Run(
                name=name,
                task=task,
                teacher=teacher,
                pool_size=40_000,
                train=train_config(2e-5, filter_length=task == "math"),
                generation=Generation(expected_completion_tokens=3_000),
                filters=Filters(correct_only=True),
            )
        )
    local_math = DATA / "math500_test.jsonl"
    local_mbpp = DATA / "mbppplus_378.jsonl"
    benchmarks = [
        math500(local_math if local_math.is_file() else None),
        mbpp_plus(local_mbpp if local_mbpp.is_file() else None),
    ]
    return Experiment(
        directory,
        runs,
        trainer=TinkerTrainer(),
        benchmarks=benchmarks,
        base_model=TinkerSampler(base_model=BASE_MODEL),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default="runs/qwen3-study")
    parser.add_argument("--run", action="store_true", help="run the study (needs the keys)")
    args = parser.parse_args()
    experiment = build(Path(args.dir))
    print(experiment.plan())
    if not args.run:
        return
    missing = [k for k in ("OPENROUTER_API_KEY", "TINKER_API_KEY") if not os.environ.get(k)]
    if missing:
        raise SystemExit(f"set {', '.join(missing)} to run the study (the plan above is free)")
    results = anyio.run(experiment.run)
    print(results.to_markdown())
    results.to_html(Path(args.dir) / "report.html", title="Qwen3-30B-A3B-Base distillation")


if __name__ == "__main__":
    main()
