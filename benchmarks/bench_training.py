"""Training benchmarks.

1. Data preparation: traces -> tokenized examples (Qwen3 chat format, offline Qwen3 tokenizer),
   tokens per second, against a naive one-conversation-at-a-time rendering in the same run.
2. The training loop's own cost: :meth:`Trainer.train` driving a backend whose steps cost
   nothing, per step, against a bare loop doing the same backend calls and the same writes by
   hand (a metrics line per step, fsynced with a checkpoint line at each checkpoint; ratio
   near 1: the loop adds little beyond the file writes).
3. Against a Tinker-compatible server on loopback (SkyRL's Tinker API, JAX, CPU; needs
   ``bash tests/servers/setup_tinker_server.sh``): wall time per step with pipelining (step N+1
   submitted before step N is awaited) against without, and the server's idle gap between
   finishing one step and receiving the next (from the server's own request timestamps).

Usage: .venv/bin/python benchmarks/bench_training.py [--quick] [--no-server]
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import logging
import math
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.servers.tinker_server import SETUP_SCRIPT, TinkerServer, venv_ready  # noqa: E402

from tracedistill.chat import ChatRenderer, qwen3_offline_tokenizer  # noqa: E402
from tracedistill.records import Message, Trace  # noqa: E402
from tracedistill.training.base import (  # noqa: E402
    PendingStep,
    SavedWeights,
    StepOutput,
    StepPlan,
    TrainConfig,
    Trainer,
    TrainingSession,
    TrainingState,
)
from tracedistill.training.checkpoints import SamplerWeights  # noqa: E402
from tracedistill.training.data import (  # noqa: E402
    epoch_order,
    prepare_examples,
    steps_per_epoch,
)
from tracedistill.training.tinker import TinkerTrainer  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "math500_test.jsonl"


def _corpus() -> list[str]:
    if DATA.is_file():
        with DATA.open() as f:
            rows = [json.loads(line) for line in f]
        return [r["problem"] + "\n" + r.get("solution", "") for r in rows]
    words = ["let", "x", "be", "the", "sum", "of", "all", "integers", "n", "such", "that"]
    rng = random.Random(0)
    return [" ".join(rng.choice(words) for _ in range(200)) for _ in range(100)]


def synthetic_traces(n: int, target_tokens: int, seed: int = 0) -> list[Trace]:
    """``n`` traces of about ``target_tokens`` tokens, built from MATH-500 text when present."""
    rng = random.Random(seed)
    corpus = _corpus()
    traces = []
    for i in range(n):
        question = rng.choice(corpus)[:400]
        reasoning: list[str] = []
        size = 0
        while size < target_tokens * 4:  # ~4 characters a token
            piece = rng.choice(corpus)
            reasoning.append(piece)
            size += len(piece)
        traces.append(
            Trace(
                problem_id=f"p{i}",
                teacher="bench",
                model="bench",
                prompt=(Message("user", question),),
                reasoning="\n".join(reasoning)[: target_tokens * 4],
                answer=f"The answer is \\boxed{{{i}}}.",
                sample_index=i,
            )
        )
    return traces


def bench_data(quick: bool) -> None:
    n = 500 if quick else 25_000
    tok = qwen3_offline_tokenizer()
    renderer = ChatRenderer(tok)
    traces = synthetic_traces(n, 700)
    cfg = TrainConfig(base_model="bench", max_length=4096, num_samples=min(n, 25_000))
    started = time.perf_counter()
    data = prepare_examples(traces, renderer, cfg)
    batched = time.perf_counter() - started
    tokens = data.report.length.kept_tokens
    sub = traces[: max(n // 10, 50)]
    started = time.perf_counter()
    naive_tokens = 0
    for t in sub:
        ids, _ = renderer.render(t.messages())
        naive_tokens += len(ids)
    naive = time.perf_counter() - started
    print(f"data preparation: {n} traces, {tokens:,} tokens in {batched:.2f}s")
    print(f"  batched  {tokens / batched:,.0f} tokens/s")
    print(f"  naive    {naive_tokens / naive:,.0f} tokens/s (one conversation at a time)")
    print(f"  ratio batched/naive: {(tokens / batched) / (naive_tokens / naive):.2f}x")
    print(f"  {data.report.length.summary()}")


class _FreeStep(PendingStep):
    def __init__(self, plan: StepPlan, where: Path) -> None:
        self.plan = plan
        self.where = where

    async def output(self) -> StepOutput:
        return StepOutput(nll=1.0, loss_tokens=len(self.plan.batch))

    async def saved(self) -> SavedWeights:
        return SavedWeights(SamplerWeights(str(self.where / "a")), TrainingState(str(self.where)))


class _FreeSession(TrainingSession):
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def start(self, state: TrainingState | None) -> None:
        return None

    async def step(self, plan: StepPlan) -> PendingStep:
        return _FreeStep(plan, self.directory / (plan.save_as or "none"))


class _FreeTrainer(Trainer):
    """A backend whose steps cost nothing: what is left is the loop."""

    backend = "free"

    def __init__(self) -> None:
        self._tokenizer = qwen3_offline_tokenizer()

    async def open(self, config: TrainConfig, directory: Path) -> TrainingSession:
        return _FreeSession(directory)


async def _bare_loop(
    session: TrainingSession, cfg: TrainConfig, pool: list[Any], out: Path
) -> None:
    """The same backend calls and the same durability as the Trainer, written by hand.

    One metrics line per step handed to the operating system; at each checkpoint the metrics
    file is forced to disk and a checkpoint line appended and forced to disk. One permutation
    of the pool per epoch.
    """
    total = cfg.total_steps(len(pool))
    per_epoch = steps_per_epoch(cfg, len(pool))
    await session.start(None)
    with (out / "metrics.jsonl").open("ab") as f, (out / "checkpoints.jsonl").open("ab") as c:
        for index in range(total):
            epoch, within = divmod(index, per_epoch)
            if within == 0:
                order = epoch_order(cfg, len(pool), epoch)
            start = within * cfg.batch_size
            number = index + 1
            saves = number % cfg.checkpoint_every == 0 or number == total
            plan = StepPlan(
                number=number,
                epoch=epoch,
                batch=[pool[i] for i in order[start : start + cfg.batch_size]],
                learning_rate=cfg.learning_rate_at(index, total),
                save_as=f"step_{number:06d}" if saves else None,
            )
            pending = await session.step(plan)
            output = await pending.output()
            f.write(json.dumps({"step": number, "nll": output.nll}).encode() + b"\n")
            f.flush()
            if saves:
                saved = await pending.saved()
                os.fsync(f.fileno())
                c.write(json.dumps({"step": number, "state": str(saved.state)}).encode() + b"\n")
                c.flush()
                os.fsync(c.fileno())


def bench_loop(quick: bool) -> None:
    steps = 200 if quick else 2000
    few = steps // 10
    conversations = [
        (f"c{i}", [Message("user", f"{i}?"), Message("assistant", f"{i}.")]) for i in range(64)
    ]

    def config(max_steps: int) -> TrainConfig:
        return TrainConfig(
            base_model="free",
            batch_size=8,
            max_length=64,
            epochs=None,
            max_steps=max_steps,
            checkpoint_every=50,
        )

    trainer = _FreeTrainer()

    async def main() -> dict[tuple[str, int], float]:
        best: dict[tuple[str, int], float] = {}
        with tempfile.TemporaryDirectory() as tmp:
            data = await trainer.prepare(conversations, config(steps))
            for attempt in range(3):  # alternated, best of three: the disk's fsync is noisy
                for n in (few, steps):
                    cfg = config(n)
                    bare_dir = Path(tmp) / f"bare{attempt}-{n}"
                    bare_dir.mkdir()
                    started = time.perf_counter()
                    await _bare_loop(_FreeSession(bare_dir), cfg, list(data.examples), bare_dir)
                    took = time.perf_counter() - started
                    best["bare", n] = min(best.get(("bare", n), math.inf), took)
                    started = time.perf_counter()
                    await trainer.train(data.examples, cfg, Path(tmp) / f"loop{attempt}-{n}")
                    took = time.perf_counter() - started
                    best["loop", n] = min(best.get(("loop", n), math.inf), took)
        return best

    best = anyio.run(main)
    bare, loop = best["bare", steps], best["loop", steps]
    # Per step, without what a run pays once (config.json, data.json and run.json written
    # atomically and durably, the data report, reading the checkpoints back): the slope
    # between a run of `few` steps and one of `steps`.
    bare_step = (bare - best["bare", few]) / (steps - few)
    loop_step = (loop - best["loop", few]) / (steps - few)
    print(f"training loop: {steps} steps of a backend whose steps cost nothing")
    print(f"  Trainer.train {loop / steps * 1e6:8.0f} us/step (fsynced at each checkpoint)")
    print(f"  bare loop     {bare / steps * 1e6:8.0f} us/step (same calls and writes by hand)")
    print(f"  ratio Trainer.train/bare: {loop / bare:.2f}x")
    print(
        f"  per extra step ({few} -> {steps} steps): Trainer.train {loop_step * 1e6:.0f} us, "
        f"bare {bare_step * 1e6:.0f} us, ratio {loop_step / bare_step:.2f}x; once per run: "
        f"Trainer.train {(best['loop', few] - few * loop_step) * 1e3:.0f} ms, "
        f"bare {(best['bare', few] - few * bare_step) * 1e3:.0f} ms"
    )


def _idle_gaps(db: Path, model_id: str | None) -> list[float]:
    """Seconds the server waited between finishing an optim_step and receiving the next work."""
    con = sqlite3.connect(str(db))
    try:
        rows = con.execute(
            "SELECT request_id, request_type, model_id, created_at, completed_at FROM futures "
            "ORDER BY request_id"
        ).fetchall()
    finally:
        con.close()

    def ts(v: str | None) -> float | None:
        return None if v is None else dt.datetime.fromisoformat(v).timestamp()

    train = [r for r in rows if model_id is None or r[2] == model_id]
    gaps = []
    for prev, nxt in itertools.pairwise(train):
        if str(prev[1]).lower().endswith("optim_step") and "forward" in str(nxt[1]).lower():
            done, received = ts(prev[4]), ts(nxt[3])
            if done is not None and received is not None:
                gaps.append(max(0.0, received - done))
    return gaps


async def _run(
    server: TinkerServer, pipeline: bool, steps: int, workdir: Path
) -> tuple[float, Any]:
    conversations = [
        (
            f"c{i:03d}",
            [
                Message("user", f"What is {i} plus {i}?"),
                Message("assistant", f"<think>\n{i} plus {i} is {2 * i}.\n</think>\n\n{2 * i}"),
            ],
        )
        for i in range(100, 100 + 4 * steps)
    ]
    cfg = TrainConfig(
        base_model=server.base_model,
        lora_rank=8,
        batch_size=4,
        learning_rate=1e-3,
        max_length=64,
        epochs=None,
        max_steps=steps,
        checkpoint_every=10_000,
        shuffle=False,
    )
    trainer = TinkerTrainer(
        base_url=server.base_url, api_key=server.api_key, pipeline=pipeline, connect_timeout=120
    )
    started = time.perf_counter()
    run = await trainer.train(conversations, cfg, workdir / f"run-{'pipe' if pipeline else 'seq'}")
    return time.perf_counter() - started, run


def bench_server(quick: bool) -> None:
    if not venv_ready():
        print(f"server benchmark skipped: no server venv (run bash {SETUP_SCRIPT})")
        return
    from tracedistill.training.local import build_tiny_model

    steps = 6 if quick else 20
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model = build_tiny_model(workdir / "model", kind="qwen3")
        with TinkerServer(model, workdir / "server", max_lora_adapters=8) as server:

            async def main() -> None:
                await _run(server, True, 2, workdir / "warm")  # compile the shapes first
                results = {}
                for pipeline in (False, True):
                    wall, run = await _run(server, pipeline, steps, workdir)
                    per_step = [m.seconds for m in run.metrics]
                    results[pipeline] = (wall, per_step)
                db = workdir / "server" / "tinker.db"
                gaps_all = _idle_gaps(db, None)
                print(f"loopback Tinker-compatible server, {steps} steps of 4 sequences:")
                for pipeline in (False, True):
                    wall, per_step = results[pipeline]
                    name = "pipelined" if pipeline else "sequential"
                    print(
                        f"  {name:10s} {statistics.median(per_step) * 1000:7.1f} ms/step "
                        f"(median), run wall {wall:.1f}s"
                    )
                seq = statistics.median(results[False][1])
                pipe = statistics.median(results[True][1])
                print(f"  ratio sequential/pipelined per step: {seq / pipe:.2f}x")
                if gaps_all:
                    # The runs happened in order warm, sequential, pipelined.
                    n = steps - 1
                    seq_gaps, pipe_gaps = gaps_all[-2 * n : -n], gaps_all[-n:]
                    print(
                        "  server idle gap between steps: sequential "
                        f"{statistics.mean(seq_gaps) * 1000:.1f} ms, pipelined "
                        f"{statistics.mean(pipe_gaps) * 1000:.1f} ms (mean)"
                    )

            anyio.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few seconds, for CI smoke runs")
    parser.add_argument("--no-server", action="store_true", help="skip the server benchmark")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    bench_data(args.quick)
    bench_loop(args.quick)
    if not args.no_server:
        bench_server(args.quick)


if __name__ == "__main__":
    main()
