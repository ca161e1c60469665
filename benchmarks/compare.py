"""Compare the benchmarks of an older revision with this tree's, run alternately in one session.

Usage::

    git worktree add /tmp/benchold d9594a9
    .venv/bin/python benchmarks/compare.py /tmp/benchold [--rounds 2] [--only store teachers]

Each benchmark runs as its own script on its own code (``PYTHONPATH=<tree>/src``, working
directory the tree), so a script that changed between the revisions still measures the same
figure on each side. Per round every benchmark runs old then new, the next round new then old
(drift in the machine's load falls on both sides alike). Figures are parsed from each script's
own output; for each one the table shows old and new (medians over the rounds), new/old as
min/median/max over the rounds (round i's new against round i's old), and a ``cost`` column
that is new/old for times and old/new for rates, so above 1 always means the new code is slower.
Each run's child CPU time (user + system, all its processes) is a figure too: on a shared
machine it moves less with load than wall time does. The load average (1 min) seen before each
run is printed with the table.

The benchmark data must be at ``<tree>/../shared/data`` for both trees (a symlink for a worktree
outside the project's parent folder: ``ln -s /work/shared /tmp/shared``).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NUMBER = r"([0-9][0-9,]*\.?[0-9]*)"


@dataclass(frozen=True)
class Figure:
    """One number parsed from a benchmark's output."""

    name: str
    pattern: str  # a regex whose first group is the number
    higher_is_better: bool


@dataclass(frozen=True)
class Bench:
    """One benchmark: the command lines each side runs and the figures read from their output."""

    name: str
    old: list[list[str]]
    new: list[list[str]]
    figures: list[Figure]
    #: Both sides' commands do the same work, so their wall and CPU time compare too.
    same_work: bool = True


def _rate(name: str, pattern: str) -> Figure:
    return Figure(name, pattern, True)


def _time(name: str, pattern: str) -> Figure:
    return Figure(name, pattern, False)


BENCHES = [
    Bench(
        "store",
        [["benchmarks/bench_store.py", "-n", "50000"]],
        [["benchmarks/bench_store.py", "-n", "50000"]],
        [
            _rate("write traces/s", rf"write\s+{NUMBER} traces/s"),
            _rate("write vs json baseline (x)", rf"write .*ratio\s+{NUMBER}x"),
            _rate("reopen+scan traces/s", rf"reopen\+scan\s+{NUMBER} traces/s"),
            _rate("scan vs json baseline (x)", rf"reopen\+scan .*ratio\s+{NUMBER}x"),
        ],
    ),
    Bench(
        "problems",
        [["benchmarks/bench_problems.py", "--quick"]],
        [["benchmarks/bench_problems.py", "--quick"]],
        [
            _time("source s (20k rows -> 4k)", rf"source\s+:\s+{NUMBER} s"),
            _time("source/baseline time (x)", rf"source / baseline: time x{NUMBER}"),
        ],
    ),
    Bench(
        "training",
        # The loopback Tinker server (JAX on CPU) takes minutes per run on a shared machine and
        # measures the server more than the client: left out.
        [["benchmarks/bench_training.py", "--quick", "--no-server"]],
        [["benchmarks/bench_training.py", "--quick", "--no-server"]],
        [
            _rate("data prep tokens/s (500 traces)", rf"batched\s+{NUMBER} tokens/s"),
            _rate("data prep batched/naive (x)", rf"ratio batched/naive: {NUMBER}x"),
        ],
        same_work=False,  # the new script also times the training loop
    ),
    Bench(
        "evaluation",
        [["benchmarks/bench_evaluation.py", "--quick"]],
        [["benchmarks/bench_evaluation.py", "--quick"]],
        [
            _rate("MATH-500 grading 2 workers /s", rf"2 worker\(s\): .*? \({NUMBER}/s"),
            _rate("MBPP+ grading /s", rf"MBPP\+ grading.*\({NUMBER}/s"),
            _rate("200 ms latency ideal/actual", rf"ideal/actual {NUMBER}"),
        ],
    ),
    Bench(
        "teachers",
        [["benchmarks/bench_teachers.py", "--case", "throughput", "20000", "default"]],
        [["benchmarks/bench_teachers.py", "--case", "throughput", "20000", "default"]],
        [
            _rate("zero latency req/s (20k problems)", rf'"req_per_s": {NUMBER}'),
            _rate("req per client CPU-second", rf'"req_per_cpu_s": {NUMBER}'),
            _time("peak RSS MB", rf'"rss_peak_mb": {NUMBER}'),
        ],
    ),
    Bench(
        "verifiers",
        # The old script has no --only: its --quick runs 120 MATH-500 golds and 12 MBPP+ tasks,
        # the same subsets as the new script's two parts (its mutants part is left out).
        [["benchmarks/bench_verifiers.py", "--quick"]],
        [
            ["benchmarks/bench_verifiers.py", "--quick", "--only", "math"],
            ["benchmarks/bench_verifiers.py", "--quick", "--only", "mbpp"],
        ],
        [
            _rate("math pairs/s (120 golds)", rf"= {NUMBER} pairs/s"),
            _time("MBPP+ 12 tasks check s", rf"check \(references cached\) {NUMBER}s"),
            _time("MBPP+ 12 tasks reference run + check s", rf"reference run \+ check {NUMBER}s"),
        ],
        same_work=False,  # the new script also checks the light tasks again
    ),
]


@dataclass
class Side:
    """What one side (old or new) measured, per figure, over the rounds."""

    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.values.setdefault(name, []).append(value)


def run_side(tree: Path, bench: Bench, commands: list[list[str]], log: Path) -> dict[str, float]:
    """Run one side's commands in ``tree``; the parsed figures plus wall and child CPU time."""
    env = dict(os.environ, PYTHONPATH=str(tree / "src"), TRACEDISTILL_PROGRESS="0")
    output, wall, cpu = "", 0.0, 0.0
    for command in commands:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, *command], cwd=tree, env=env, capture_output=True, text=True
        )
        wall += time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu += (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        output += done.stdout + done.stderr
        if done.returncode != 0:
            print(f"  {bench.name} in {tree}: exit {done.returncode}", file=sys.stderr)
    with log.open("a") as handle:
        handle.write(f"==== {bench.name} {tree}\n{output}\n")
    found = {"run wall s": wall, "run CPU s (all processes)": cpu} if bench.same_work else {}
    for figure in bench.figures:
        match = re.search(figure.pattern, output)
        if match:
            found[figure.name] = float(match.group(1).replace(",", ""))
    return found


def _higher_is_better(bench: Bench, name: str) -> bool:
    return next((f.higher_is_better for f in bench.figures if f.name == name), False)


def report(bench: Bench, old: Side, new: Side) -> None:
    """Print one benchmark's rows: old and new medians, new/old min/median/max, cost."""
    for name, olds in old.values.items():
        news = new.values.get(name, [])
        if not news:
            continue
        pairs = [n / o for o, n in zip(olds, news, strict=False) if o > 0]
        if not pairs:
            continue
        med = statistics.median(pairs)
        cost = 1 / med if _higher_is_better(bench, name) else med
        print(
            f"{bench.name:11s} {name:40s} {statistics.median(olds):>12,.2f} "
            f"{statistics.median(news):>12,.2f}   {min(pairs):5.2f} {med:5.2f} {max(pairs):5.2f}"
            f"   {cost:5.2f}"
        )


def main() -> None:
    """Run the chosen benchmarks alternately on both trees and print the comparison table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path, help="the older revision's worktree")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", nargs="+", choices=[b.name for b in BENCHES])
    parser.add_argument("--log", type=Path, default=Path("compare.log"), help="raw outputs")
    args = parser.parse_args()
    old_tree = args.old.resolve()
    for tree in (old_tree, ROOT):
        if not (tree.parent / "shared" / "data").is_dir():
            sys.exit(f"no benchmark data at {tree.parent / 'shared' / 'data'}")
    benches = [b for b in BENCHES if not args.only or b.name in args.only]
    results = {b.name: (Side(), Side()) for b in benches}
    loads: list[float] = []
    for round_index in range(args.rounds):
        for bench in benches:
            order = [("old", old_tree), ("new", ROOT)]
            if round_index % 2:
                order.reverse()
            for side, tree in order:
                loads.append(os.getloadavg()[0])
                commands = bench.old if side == "old" else bench.new
                found = run_side(tree, bench, commands, args.log)
                print(f"round {round_index + 1} {bench.name} {side}: {found}", flush=True)
                target = results[bench.name][0 if side == "old" else 1]
                for name, value in found.items():
                    target.add(name, value)
        table(benches, results, loads, old_tree, round_index + 1)


def table(
    benches: list[Bench],
    results: dict[str, tuple[Side, Side]],
    loads: list[float],
    old_tree: Path,
    rounds: int,
) -> None:
    """Print the comparison over the rounds done so far."""
    print(f"\nold {old_tree}, new {ROOT}; {rounds} round(s), old and new alternating")
    print(
        f"load average (1 min) before the runs: min {min(loads):.1f}, median "
        f"{statistics.median(loads):.1f}, max {max(loads):.1f} on {os.cpu_count()} cores"
    )
    print(
        f"{'benchmark':11s} {'figure':40s} {'old':>12s} {'new':>12s}   new/old min/med/max"
        "   cost (>1 slower)"
    )
    for bench in benches:
        report(bench, *results[bench.name])


if __name__ == "__main__":
    main()
