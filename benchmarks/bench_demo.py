"""The offline demo's wall time and what it shows, recorded together.

Runs ``run_demo`` (the code of ``python -m tracedistill demo``) in a fresh directory and prints
one JSON record: the wall time against the 3-minute target (a ratio), the machine's load average
before and after (a loaded machine explains a slow run), and the report's own figures: per run,
the base model's and every checkpoint's held-out accuracy (correct / n) on both tasks, and the
exact McNemar p-value of the last checkpoint against the base model.

Usage: .venv/bin/python benchmarks/bench_demo.py [--size full|ci] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tracedistill.demo import run_demo  # noqa: E402
from tracedistill.report import Results, Score, compare  # noqa: E402

TARGET_S = 180.0  # the target: under 3 minutes on 2 quiet cores


def _cell(score: Score | None) -> str | None:
    if score is None:
        return None
    n = len(score.outcomes)
    return f"{sum(score.outcomes.values())}/{n}"


def _figures(results: Results) -> dict[str, Any]:
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


def main() -> None:
    """Run the demo once and print its record."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="full", choices=["full", "ci"])
    parser.add_argument("--out", type=Path, help="also write the record to this JSON file")
    args = parser.parse_args()
    os.environ.setdefault("TRACEDISTILL_PROGRESS", "0")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        results = anyio.run(lambda: run_demo(Path(tmp) / "demo", size=args.size, progress=False))
        wall = time.perf_counter() - started
    record = {
        "size": args.size,
        "wall_s": round(wall, 1),
        "wall_vs_3min_target": round(wall / TARGET_S, 2),
        "cpus": os.cpu_count(),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "figures": _figures(results),
    }
    text = json.dumps(record, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
