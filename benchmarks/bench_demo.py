"""The offline demo's time and what it shows, recorded together.

Runs ``run_demo`` (the code of ``python -m tracedistill demo``) in a fresh directory and prints
one JSON record: the wall time against the 3-minute target (a ratio); the CPU time of the
process and of its children (the code sandbox), which depends far less on other work on the
machine than the wall time; the machine's load average before, during (sampled every 2 s) and
after the run; and the report's own figures: per run, the base model's and every checkpoint's
held-out accuracy (correct / n) on both tasks, and the exact McNemar p-value of the last
checkpoint against the base model.

``--ablation`` adds the answer-only runs (the same student, problems and budget, trained on the
teacher's verified answers without their steps) and records, per task, the last checkpoint's
accuracy with and without steps and the exact McNemar p-value between them.

``--src DIR`` runs another checkout's ``run_demo`` (e.g. an older commit in a git worktree)
with this harness, so that two versions are timed the same way, back to back.

Usage: .venv/bin/python benchmarks/bench_demo.py [--size full|ci] [--ablation] [--src DIR]
[--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 180.0  # the target: under 3 minutes on 2 quiet cores


def _cell(score: Any) -> str | None:
    if score is None:
        return None
    return f"{sum(score.outcomes.values())}/{len(score.outcomes)}"


def _figures(results: Any, compare: Any) -> dict[str, Any]:
    """Per run: held-out correct/n per step and benchmark, and p of last vs base."""
    out: dict[str, Any] = {}
    for run in results.run_names:
        steps = results.steps(run)
        row: dict[str, Any] = {}
        for bench in results.benchmarks:
            base = results.base(bench)
            last = results.score(run, steps[-1], bench) if steps else None
            row[bench] = {
                "base": _cell(base),
                "steps": {s: _cell(results.score(run, s, bench)) for s in steps},
                "p_last_vs_base": (
                    None if base is None or last is None else compare(base, last).p_value
                ),
            }
        out[run] = row
    return out


def _ablation(results: Any, compare: Any) -> dict[str, Any]:
    """Per task: last-checkpoint accuracy with and without steps, and McNemar p between them."""
    out: dict[str, Any] = {}
    for run in results.run_names:
        direct = f"{run}-direct"
        if direct not in results.run_names:
            continue
        with_steps = results.score(run, results.steps(run)[-1], run)
        answer_only = results.score(direct, results.steps(direct)[-1], run)
        diff = compare(answer_only, with_steps)
        out[run] = {
            "with_steps": _cell(with_steps),
            "answer_only": _cell(answer_only),
            "p_steps_vs_answer_only": diff.p_value,
        }
    return out


class _LoadSampler:
    """Samples the 1-minute load average every ``every`` seconds in a daemon thread."""

    def __init__(self, every: float = 2.0) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._every = every
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> _LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _cpu() -> tuple[float, float]:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def main() -> None:
    """Run the demo once and print its record."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="full", choices=["full", "ci"])
    parser.add_argument("--ablation", action="store_true", help="add the answer-only runs")
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the sources to run")
    parser.add_argument("--out", type=Path, help="also write the record to this JSON file")
    args = parser.parse_args()
    sys.path.insert(0, str(args.src.resolve()))
    from tracedistill.demo import run_demo
    from tracedistill.report import compare

    os.environ.setdefault("TRACEDISTILL_PROGRESS", "0")
    kwargs: dict[str, Any] = {"size": args.size, "progress": False}
    if args.ablation:
        kwargs["ablation"] = True
    load_before = os.getloadavg()
    cpu_before = _cpu()
    with tempfile.TemporaryDirectory() as tmp, _LoadSampler() as load:
        started = time.perf_counter()
        results = anyio.run(lambda: run_demo(Path(tmp) / "demo", **kwargs))
        wall = time.perf_counter() - started
    cpu_after = _cpu()
    samples = load.samples or [os.getloadavg()[0]]
    record: dict[str, Any] = {
        "src": str(args.src.resolve()),
        "size": args.size,
        "ablation": args.ablation,
        "wall_s": round(wall, 1),
        "wall_vs_3min_target": round(wall / TARGET_S, 2),
        "cpu_s": round(cpu_after[0] - cpu_before[0], 1),
        "cpu_children_s": round(cpu_after[1] - cpu_before[1], 1),
        "cpus": os.cpu_count(),
        "load_before": [round(x, 2) for x in load_before],
        "load_during_mean": round(sum(samples) / len(samples), 2),
        "load_during_max": round(max(samples), 2),
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "figures": _figures(results, compare),
    }
    if args.ablation:
        record["ablation_figures"] = _ablation(results, compare)
    text = json.dumps(record, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
