"""Reproduce the Qwen3-30B-A3B-Base distillation study (four runs) with tracedistill.

  teacher                        task  traces                        learning rate
  Claude Sonnet 4.5 (OpenRouter) math  40,000 prompts, correct only  2e-4
  Claude Sonnet 4.5 (OpenRouter) code  40,000 prompts, correct only  2e-4
  DeepSeek-R1 (replayed)         math  open-r1/OpenR1-Math-220k      2e-5
  DeepSeek-R1 (replayed)         code  nvidia/OpenCodeReasoning      2e-5

LoRA rank 32, batch 50, cosine LR, AdamW 0.9/0.95, 4,096 tokens, 25,000 samples, a checkpoint
every 100 steps, on Tinker; MATH-500 and MBPP+ at temperature 0 for the base model and every
checkpoint, MATH-500 graded by the study's protocol (only the final ``\\boxed{}`` answer
counts; the report's grading table says so); then the study's tables, plots and an HTML report.

    python examples/reproduce_qwen3_study.py                  # dry run: plan and cost, no key
    python examples/reproduce_qwen3_study.py --data DIR       # benchmarks from local files
    OPENROUTER_API_KEY=... TINKER_API_KEY=... python examples/reproduce_qwen3_study.py --run

The benchmark files are found in ``--data`` or ``$TRACEDISTILL_DATA`` (``math500_test.jsonl``
and ``mbppplus_378.jsonl`` or the official ``MbppPlus-v0.2.0.jsonl.gz``), else on the Hugging
Face Hub and GitHub. Without data and without network the plan is still printed, naming what is
unavailable. Run it again after any crash: every stage continues where it stopped.

The notebook ``reproduce_qwen3_study.ipynb`` holds the same study definition (it is
self-contained, so it runs from a copy of this folder alone); a test keeps the two equal.
"""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

import anyio

from tracedistill import Experiment, Run, TinkerSampler, TrainConfig
from tracedistill.errors import DatasetUnavailableError, ProblemSourceError
from tracedistill.evaluation import math500, mbpp_plus
from tracedistill.experiment import Filters, Generation
from tracedistill.problems import code_contests, openr1_math
from tracedistill.teachers import OpenRouterTeacher, Pricing, ReplayTeacher
from tracedistill.training.tinker import TinkerTrainer
from tracedistill.verifiers import MathVerifier

# The base model is a parameter: Tinker has announced the retirement of Qwen3-30B-A3B.
BASE_MODEL = os.environ.get("STUDENT", "Qwen/Qwen3-30B-A3B-Base")
BENCHMARK_FILES = {
    "MATH-500": ("math500_test.jsonl", "test.jsonl"),
    "MBPP+": ("MbppPlus-v0.2.0.jsonl.gz", "MbppPlus.jsonl.gz", "mbppplus_378.jsonl"),
}


def data_dir(given: str | os.PathLike[str] | None = None) -> Path | None:
    """The benchmark folder: the argument, else ``$TRACEDISTILL_DATA``, else None."""
    value = given or os.environ.get("TRACEDISTILL_DATA")
    return Path(value).expanduser() if value else None


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers (False at once when HF_HUB_OFFLINE is set)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
    except OSError:
        return False
    return True


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


def boxed_only() -> MathVerifier:
    """The study's grading protocol: only the final ``\\boxed{}`` answer counts."""
    return MathVerifier(extraction="boxed")


def load_benchmarks(data: Path | None, hub: bool) -> tuple[list, dict[str, str]]:
    """MATH-500 and MBPP+ from ``data`` (or the network); what could not be loaded, and why."""
    loaders = {
        "MATH-500": lambda path: math500(path, verifier_factory=boxed_only),
        "MBPP+": mbpp_plus,
    }
    found, missing = [], {}
    for name, loader in loaders.items():
        files = [data / f for f in BENCHMARK_FILES[name]] if data is not None else []
        path = next((f for f in files if f.is_file()), None)
        if path is None and not hub:
            where = f"no {' or '.join(BENCHMARK_FILES[name])} in {data}" if data else "no data"
            missing[name] = f"{where} (pass --data or set TRACEDISTILL_DATA) and no network"
            continue
        try:
            found.append(loader(path))
        except (DatasetUnavailableError, ProblemSourceError) as exc:
            missing[name] = str(exc)[:300]
    return found, missing


def build(directory: Path, data: Path | None = None) -> tuple[Experiment, dict[str, str]]:
    """The study's experiment, and what is unavailable offline (name -> why)."""
    hub = hub_reachable()
    sonnet = OpenRouterTeacher(
        model="anthropic/claude-sonnet-4.5",
        name="sonnet-4.5",
        # OpenRouter reports each response's cost; these list prices only feed the dry run.
        pricing=Pricing(input_per_million=3.0, output_per_million=15.0),
    )
    # The budget is a hard cap that survives restarts.
    sonnet_generation = Generation(
        concurrency=128, budget_usd=2_000, expected_completion_tokens=700
    )
    runs = [
        Run(
            name="sonnet-math",
            task="math",
            teacher=sonnet,
            problems=openr1_math(),
            pool_size=40_000,
            train=train_config(2e-4),
            generation=sonnet_generation,
        ),
        Run(
            name="sonnet-code",
            task="code",
            teacher=sonnet,
            problems=code_contests(),
            pool_size=40_000,
            train=train_config(2e-4, filter_length=False),
            generation=sonnet_generation,
        ),
    ]
    missing: dict[str, str] = {}
    for name, task, layout in (
        ("r1-math", "math", "openr1-math"),
        ("r1-code", "code", "opencodereasoning"),
    ):
        if not hub:
            missing[name] = f"its {layout} traces are on the Hugging Face Hub, not reachable"
            continue
        try:
            teacher = ReplayTeacher.from_hub(layout)
        except DatasetUnavailableError as exc:
            missing[name] = str(exc)[:300]
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
    benchmarks, missing_benchmarks = load_benchmarks(data, hub)
    missing.update(missing_benchmarks)
    experiment = Experiment(
        directory,
        runs,
        trainer=TinkerTrainer(),
        benchmarks=benchmarks,
        baseline=TinkerSampler(base_model=BASE_MODEL),
    )
    return experiment, missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default="runs/qwen3-study", help="the run directory")
    parser.add_argument("--data", help="folder with the benchmark files ($TRACEDISTILL_DATA)")
    parser.add_argument("--run", action="store_true", help="run the study (needs the keys)")
    args = parser.parse_args()
    experiment, missing = build(Path(args.dir), data_dir(args.data))
    print(experiment.plan(unavailable=missing))
    if not args.run:
        return
    keys = [k for k in ("OPENROUTER_API_KEY", "TINKER_API_KEY") if not os.environ.get(k)]
    if keys or missing:
        raise SystemExit(
            f"cannot run the whole study: missing {', '.join(keys + sorted(missing))} "
            "(the plan above is free)"
        )
    results = anyio.run(experiment.run)
    print(results.to_markdown())
    results.to_html(Path(args.dir) / "report.html", title="Qwen3-30B-A3B-Base distillation")


if __name__ == "__main__":
    main()
