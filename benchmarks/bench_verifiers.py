"""Benchmark the verifiers against the reference tools, in one run on one machine.

1. MBPP+: every canonical solution (base + plus tests) through evalplus 0.3.1's own checker
   (``check_correctness`` on a 2-process pool, as ``evalplus.evaluate`` runs it) and through
   CodeVerifier (2 sandbox runners). Reports both wall times, their ratio, and compares the
   verdicts one by one. Ground truth / reference outputs are computed first by each tool and
   cached (evalplus caches its ground truth the same way), so the timed part is checking.
2. Math: MATH-500 gold answers checked against correct and wrong predictions, with
   pathological inputs mixed in, on 2 worker processes: pairs per second with the current
   rules and with math-verify alone (``rules="math-verify"``, the rules of logic version 1),
   and their ratio. Then the hand-labelled equivalence suite
   (``tests/verifiers/math_equivalence.jsonl``, both roles): how often each agrees with the
   right verdict.
3. MBPP+ mutants: semantic mutants of every canonical solution (``tests/verifiers/mutants.py``:
   operator, comparison, constant and off-by-one changes, returns wrapped in iterators,
   generators, views, containers, numeric conversions) graded by CodeVerifier and by evalplus's
   own ``check_correctness``: agreement, and every disagreement listed.

Run: ``.venv/bin/python benchmarks/bench_verifiers.py [--quick]``. Data comes from
``../shared/data`` (relative to the project root).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import anyio

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

from tests.verifiers.helpers import load_math500_problems, load_mbppplus_problems  # noqa: E402
from tests.verifiers.mutants import (  # noqa: E402
    evalplus_ground_truth,
    evalplus_pool,
    evalplus_task,
    evalplus_verdict_cache,
    grade_with_evalplus,
    program_key,
    read_verdicts,
    selection,
)

from tracedistill.records import Problem, TaskKind  # noqa: E402
from tracedistill.verifiers import CodeVerifier, MathVerifier  # noqa: E402

# --- evalplus side ---------------------------------------------------------------------------


def run_evalplus(
    rows: list[dict[str, Any]], workers: int, truth: dict[str, Any] | None = None
) -> tuple[dict[str, tuple[str, str]], dict[str, Any], float, float]:
    """Check every canonical solution with evalplus; return statuses, ground truth, times."""
    from evalplus.evaluate import check_correctness

    tasks = [evalplus_task(row) for row in rows]
    start = time.perf_counter()
    if truth is None:
        truth = {task["task_id"]: evalplus_ground_truth(task) for task in tasks}
    truth_s = time.perf_counter() - start
    start = time.perf_counter()
    statuses: dict[str, tuple[str, str]] = {}
    with evalplus_pool(workers) as pool:
        futures = [
            pool.submit(
                check_correctness,
                "mbpp",
                0,
                task,
                task["prompt"] + task["canonical_solution"],
                truth[task["task_id"]],
                False,
                True,
                task["task_id"],
            )
            for task in tasks
        ]
        for future in futures:
            result = future.result()
            statuses[result["task_id"]] = (result["base"][0], result["plus"][0])
    return statuses, truth, truth_s, time.perf_counter() - start


# --- ours --------------------------------------------------------------------------------------


async def run_ours(
    items: list[tuple[Problem, dict[str, Any]]],
    workers: int,
    cache: Path,
    bubblewrap: bool | None = None,
) -> tuple[dict[str, bool], dict[str, str], float, float]:
    pairs = [(p, row["prompt"] + row["canonical_solution"]) for p, row in items]
    async with CodeVerifier(workers=workers, cache_dir=cache, bubblewrap=bubblewrap) as verifier:
        backend = "bubblewrap" if (await verifier.capabilities())["bubblewrap"] else "fork"
        print(f"  (tracedistill sandbox backend: {backend})", flush=True)
        start = time.perf_counter()
        await verifier.check_many(pairs, progress=False)  # computes and caches the references
        cold_s = time.perf_counter() - start
        start = time.perf_counter()
        results = await verifier.check_many(pairs, progress=False)
        warm_s = time.perf_counter() - start
    passed = {p.id: r.passed for (p, _), r in zip(items, results, strict=True)}
    reasons = {
        p.id: f"{r.reason} {r.details}"
        for (p, _), r in zip(items, results, strict=True)
        if not r.passed
    }
    return passed, reasons, cold_s, warm_s


async def grade_ours(
    pairs: list[tuple[Problem, str]], workers: int, cache: Path
) -> tuple[list[tuple[bool, str]], float]:
    async with CodeVerifier(workers=workers, cache_dir=cache) as verifier:
        start = time.perf_counter()
        results = await verifier.check_many(pairs, progress=False)
        elapsed = time.perf_counter() - start
    return [(r.passed, f"{r.reason} {r.details}") for r in results], elapsed


def run_mutants(
    items: list[tuple[Problem, dict[str, Any]]],
    workers: int,
    cache: Path,
    *,
    light: bool = False,
    limit: int | None = None,
    verdicts: Path | None = None,
) -> dict[str, Any]:
    """Grade the mutants with both checkers; print agreement and every disagreement.

    ``light``: only the tasks whose canonical solution computes for under 50 ms (evalplus's
    ground-truth timing), which leaves out the few whose mutants take minutes on both sides.
    ``limit``: the first ``limit`` mutants only. ``verdicts``: evalplus's verdicts cached
    there (JSONL; a rerun grades only what is new there), evalplus's side first, so that an
    interrupted run leaves its verdicts for the next.
    """
    if light:
        heavy = []
        for problem, row in items:
            truth = evalplus_ground_truth(evalplus_task(row))
            if sum(truth["base_time"]) + sum(truth["plus_time"]) >= 0.05:
                heavy.append(problem.id)
        items = [(p, row) for p, row in items if p.id not in heavy]
        print(f"mbpp+ mutants: light tasks only, {len(items)} (left out: {', '.join(heavy)})")
    by_id = {p.id: p for p, _ in items}
    chosen = selection([row for _, row in items])[:limit]
    print(f"mbpp+ mutants: {len(chosen)} of {len({row['task_id'] for row, _ in chosen})} tasks")
    pairs = [(by_id[row["task_id"]], code) for row, (_, code) in chosen]
    known = len(_cached(verdicts, chosen))
    start = time.perf_counter()
    theirs = grade_with_evalplus(
        [(row, code) for row, (_, code) in chosen], workers, cache=verdicts
    )
    theirs_s = time.perf_counter() - start
    ours, ours_s = anyio.run(grade_ours, pairs, workers, cache)
    differ = [
        i for i, (mine, other) in enumerate(zip(ours, theirs, strict=True)) if mine[0] != other[0]
    ]
    # Every disagreement is graded again by both, alone: a per-test time limit met under CPU
    # load is a timeout here but a plain "fail" in evalplus's report, so it cannot be told
    # from a wrong output by its status.
    regraded = list(differ)
    if regraded:
        again, _ = anyio.run(grade_ours, [pairs[i] for i in regraded], 1, cache)
        again_theirs = grade_with_evalplus([(chosen[i][0], chosen[i][1][1]) for i in regraded], 1)
        for i, mine, other in zip(regraded, again, again_theirs, strict=True):
            ours[i], theirs[i] = mine, other
        differ = [i for i in differ if ours[i][0] != theirs[i][0]]
    passed = sum(p for p, _ in theirs)
    speed = f"{theirs_s / ours_s:.1f}x" if not known else f"n/a, {known} verdicts from the cache"
    print(
        f"mbpp+ mutants: {len(chosen)} (evalplus passes {passed}), graded in {ours_s:.1f}s "
        f"(tracedistill) vs {theirs_s:.1f}s (evalplus) on {workers} workers: {speed}; "
        f"verdicts identical {len(chosen) - len(differ)}/{len(chosen)}"
        f" (after grading the {len(regraded)} disagreements again, alone)"
    )
    for i in differ:
        row, (kind, code) = chosen[i]
        print(
            f"    {row['task_id']} {kind}: evalplus {theirs[i][1]}, tracedistill "
            f"{ours[i][1][:200]}\n      {code.strip().splitlines()[-1][:160]}"
        )
    return {
        "mutants": len(chosen),
        "mutants_identical": len(chosen) - len(differ),
        "mutants_speedup": round(theirs_s / ours_s, 2) if not known else None,
    }


def _cached(verdicts: Path | None, chosen: list[Any]) -> list[str]:
    """The keys of ``chosen``'s mutants whose evalplus verdict is in the cache already."""
    if verdicts is None:
        return []
    found = read_verdicts(verdicts)
    return [key for row, (_, code) in chosen if (key := program_key(row, code)) in found]


def _passed(status: tuple[str, str]) -> bool:
    return status == ("pass", "pass")


Rules = Literal["exact", "math-verify"]

# --- math ----------------------------------------------------------------------------------------


PATHOLOGICAL = [
    "The answer is $9^{9^{9}}$.",
    "\\boxed{" + "{" * 3000 + "1" + "}" * 3000 + "}",
    "x" * 1_000_000 + " \\boxed{2}",
    "\\boxed{10^{10^{10}}}",
    "\\boxed{100000!}",
]


def _wrong(answer: str) -> str:
    return f"\\boxed{{{answer}+1}}"


def _math_pairs(problems: list[Problem]) -> list[tuple[Problem, str]]:
    pairs: list[tuple[Problem, str]] = []
    for index, problem in enumerate(problems):
        assert problem.answer is not None
        pairs.append((problem, f"So the result is \\boxed{{{problem.answer}}}."))
        pairs.append((problem, _wrong(problem.answer)))
        if index % 100 == 0:
            pairs.append((problem, PATHOLOGICAL[(index // 100) % len(PATHOLOGICAL)]))
    return pairs


async def run_math(
    pairs: list[tuple[Problem, str]], workers: int
) -> dict[Rules, tuple[float, list[bool]]]:
    """Check ``pairs`` with both rule sets, interleaved in chunks; return time and verdicts.

    Both verifiers' pools are up for the whole run and take turns chunk by chunk (the one
    that goes first alternates), so a change in machine load hits both alike.
    """
    chunk = 100
    seconds: dict[Rules, float] = {"exact": 0.0, "math-verify": 0.0}
    passed: dict[Rules, list[bool]] = {"exact": [], "math-verify": []}
    async with (
        MathVerifier(workers=workers, timeout_s=5) as exact,
        MathVerifier(workers=workers, timeout_s=5, rules="math-verify") as plain,
    ):
        for begin in range(0, len(pairs), chunk):
            part = pairs[begin : begin + chunk]
            turns = [exact, plain] if (begin // chunk) % 2 == 0 else [plain, exact]
            for verifier in turns:
                rules: Rules = "exact" if verifier is exact else "math-verify"
                start = time.perf_counter()
                results = await verifier.check_many(part, progress=False)
                seconds[rules] += time.perf_counter() - start
                passed[rules].extend(r.passed for r in results)
    return {rules: (seconds[rules], passed[rules]) for rules in seconds}


SUITE = ROOT / "tests" / "verifiers" / "math_equivalence.jsonl"


async def run_suite(workers: int, rules: Rules) -> tuple[int, int, list[str]]:
    """Check the equivalence suite in both roles; return (right, total, wrong cases)."""
    rows = [json.loads(line) for line in SUITE.read_text(encoding="utf-8").splitlines() if line]
    cases: list[tuple[str, str, bool]] = []
    for row in rows:
        cases.append((row["gold"], row["pred"], row["equal"]))
        if row.get("symmetric", True):
            cases.append((row["pred"], row["gold"], row["equal"]))
    items = [
        (Problem(kind=TaskKind.MATH, prompt="p", answer=gold), f"\\boxed{{{pred}}}")
        for gold, pred, _ in cases
    ]
    async with MathVerifier(workers=workers, timeout_s=10, rules=rules) as verifier:
        results = await verifier.check_many(items, progress=False)
    wrong = [
        f"{gold!r} vs {pred!r}: right verdict {equal}"
        for (gold, pred, equal), r in zip(cases, results, strict=True)
        if r.passed != equal
    ]
    return len(cases) - len(wrong), len(cases), wrong


def math_figures(problems: list[Problem], workers: int) -> dict[str, Any]:
    """Throughput of both rule sets on the same pairs, then agreement on the suite."""
    pairs = _math_pairs(problems)
    n = len(pairs)
    runs = anyio.run(run_math, pairs, workers)
    for rules, (took, passed) in runs.items():
        correct_ok = sum(
            ok for ok, (_, text) in zip(passed, pairs, strict=True) if text.startswith("So the")
        )
        wrong_passed = sum(
            ok for ok, (_, text) in zip(passed, pairs, strict=True) if text.endswith("+1}")
        )
        print(
            f"math ({rules}): {n} pairs (golds vs correct and wrong, "
            f"{len(range(0, len(problems), 100))} pathological) in {took:.2f}s = "
            f"{n / took:.0f} pairs/s on {workers} workers; correct accepted "
            f"{correct_ok}/{len(problems)}, wrong accepted {wrong_passed}"
        )
    exact_s, plain_s = runs["exact"][0], runs["math-verify"][0]
    ratio = plain_s / exact_s
    print(
        f"math: exact rules {n / exact_s:.0f} pairs/s, math-verify alone (today's logic "
        f"version 1) {n / plain_s:.0f} pairs/s: throughput ratio {ratio:.2f} (target >= 1.0; "
        f"interleaved in chunks of 100 pairs on the same machine)"
    )
    order: tuple[Rules, ...] = ("math-verify", "exact")
    agreement: dict[str, float] = {}
    for rules in order:
        right, total, wrong = anyio.run(run_suite, workers, rules)
        agreement[rules] = right / total
        print(
            f"math equivalence suite ({rules}): {right}/{total} verdicts right "
            f"({100 * right / total:.1f}%)"
        )
        for case in wrong[: 8 if rules == "exact" else 3]:
            print(f"    wrong: {case}")
    return {
        "math_pairs_per_s": round(n / exact_s, 1),
        "math_pairs_per_s_math_verify": round(n / plain_s, 1),
        "math_throughput_ratio": round(ratio, 2),
        "math_suite_agreement": round(agreement["exact"], 4),
        "math_suite_agreement_math_verify": round(agreement["math-verify"], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few seconds: small subsets")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--only",
        choices=["math", "mbpp", "mutants", "cpu"],
        help="run one part of the benchmark (cpu: only when asked)",
    )
    parser.add_argument(
        "--tasks", help="mutants: these MBPP+ tasks only (comma-separated, e.g. Mbpp/2,Mbpp/3)"
    )
    parser.add_argument("--limit", type=int, help="mutants: the first LIMIT mutants only")
    parser.add_argument(
        "--no-verdict-cache",
        action="store_true",
        help="mutants: grade every mutant with evalplus again (default: reuse the verdicts "
        "cached under ~/.cache/tracedistill/evalplus-verdicts)",
    )
    parser.add_argument(
        "--light-mutants",
        action="store_true",
        help="mutants of the tasks whose canonical solution computes for under 50 ms only",
    )
    parser.add_argument(
        "--bubblewrap",
        choices=["auto", "on", "off"],
        default="auto",
        help="CodeVerifier's bubblewrap backend (auto: when bwrap is installed)",
    )
    parser.add_argument(
        "--baseline-src",
        help="cpu: a src/ directory of other tracedistill code (e.g. an old commit's worktree) "
        "to measure in alternation with this one",
    )
    parser.add_argument("--rounds", type=int, default=3, help="cpu: alternations")
    parser.add_argument("--cpu-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cpu_child:
        anyio.run(cpu_child, json.loads(Path(args.cpu_child).read_text()))
        return
    mbpp_path, math_path = DATA / "mbppplus_378.jsonl", DATA / "math500_test.jsonl"
    if not mbpp_path.exists() or not math_path.exists():
        sys.exit(f"benchmark data not found in {DATA}")

    summary: dict[str, Any] = {}
    if args.only in (None, "math"):
        summary.update(bench_math(math_path, args))
    if args.only in (None, "mbpp"):
        summary.update(bench_mbpp(mbpp_path, args))
    if args.only in (None, "mutants"):
        summary.update(bench_mutants(mbpp_path, args))
    if args.only == "cpu":
        summary.update(bench_cpu(mbpp_path, args))
    print(json.dumps(summary))


def bench_mutants(mbpp_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """MBPP+ mutants graded by tracedistill and evalplus (evalplus's verdicts cached)."""
    items = load_mbppplus_problems(mbpp_path)
    if args.tasks:
        wanted = set(args.tasks.split(","))
        items = [(p, row) for p, row in items if p.id in wanted]
    elif args.quick:
        items = items[:12]
    verdicts = None if args.no_verdict_cache else evalplus_verdict_cache()
    with tempfile.TemporaryDirectory() as cache:
        return run_mutants(
            items,
            args.workers,
            Path(cache),
            light=args.light_mutants,
            limit=args.limit,
            verdicts=verdicts,
        )


def bench_cpu(mbpp_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """CPU per light MBPP+ sample (the verifier's process, its runners and their samples), warm
    check, this code and ``--baseline-src``'s in alternating child processes, in one session.
    """
    items = load_mbppplus_problems(mbpp_path)
    if args.tasks:
        light = args.tasks.split(",")
    else:
        light = [
            p.id
            for p, row in items[: 12 if args.quick else None]
            if sum(sum(t) for t in _times(evalplus_ground_truth(evalplus_task(row)))) < 0.05
        ]
    sides = {"this": str(ROOT / "src")}
    if args.baseline_src:
        sides["baseline"] = str(Path(args.baseline_src).resolve())
    totals: dict[str, list[float]] = {side: [0.0, 0.0, 0.0] for side in sides}
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "tasks.json"
        spec.write_text(json.dumps({"tasks": light, "workers": args.workers}))
        for _ in range(args.rounds):
            for side, src in sides.items():
                env = dict(os.environ, PYTHONPATH=src)
                out = subprocess.run(
                    [sys.executable, __file__, "--cpu-child", str(spec)],
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                parent, runners, samples = json.loads(out.strip().splitlines()[-1])
                print(
                    f"  {side}: parent {parent:.2f}s, runners {runners:.2f}s, samples "
                    f"{samples:.2f}s (load average {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
                for i, value in enumerate((parent, runners, samples)):
                    totals[side][i] += value
    n = len(light) * 2 * args.rounds
    per = {side: sum(t) / n * 1000 for side, t in totals.items()}
    print(
        f"cpu per light sample ({len(light)} tasks): "
        + ", ".join(f"{side} {ms:.1f} ms" for side, ms in per.items())
    )
    if "baseline" not in totals:
        return {"cpu_ms_per_light_sample": round(per["this"], 2)}
    ratio = [
        t / b if b else float("nan")
        for t, b in zip(totals["this"], totals["baseline"], strict=True)
    ]
    print(
        f"  this/baseline: total {per['this'] / per['baseline']:.2f} (parent {ratio[0]:.2f}, "
        f"runners {ratio[1]:.2f}, samples {ratio[2]:.2f})"
    )
    return {"cpu_this_over_baseline": round(per["this"] / per["baseline"], 3)}


def _times(truth: dict[str, Any]) -> list[list[float]]:
    return [truth["base_time"], truth["plus_time"]]


async def cpu_child(spec: dict[str, Any]) -> None:
    """In a child process (``--cpu-child``): two warm checks of the light tasks; prints the CPU
    seconds of this process, of its runners and of their samples (from /proc).
    """
    wanted = set(spec["tasks"])
    pairs = [
        (p, row["prompt"] + row["canonical_solution"])
        for p, row in load_mbppplus_problems(DATA / "mbppplus_378.jsonl")
        if p.id in wanted
    ]
    used = [0.0, 0.0, 0.0]
    with tempfile.TemporaryDirectory() as cache:
        async with CodeVerifier(workers=int(spec["workers"]), cache_dir=cache) as verifier:
            await verifier.check_many(pairs, progress=False)  # references, cached
            for _ in range(2):
                before, self_before = _tree_cpu(), resource.getrusage(resource.RUSAGE_SELF)
                await verifier.check_many(pairs, progress=False)
                after, self_after = _tree_cpu(), resource.getrusage(resource.RUSAGE_SELF)
                used[0] += (self_after.ru_utime + self_after.ru_stime) - (
                    self_before.ru_utime + self_before.ru_stime
                )
                for pid, (own, reaped) in after.items():
                    own_0, reaped_0 = before.get(pid, (own, reaped))
                    used[1] += own - own_0
                    used[2] += reaped - reaped_0
    print(json.dumps(used))


def _tree_cpu() -> dict[int, tuple[float, float]]:
    """Every process under this one: (its own CPU seconds, those of its reaped children)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stats[int(entry)] = (
                    Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                )
    parents = {pid: int(fields[1]) for pid, fields in stats.items()}
    me, tree = os.getpid(), {}
    for pid, fields in stats.items():
        ancestor = parents.get(pid)
        while ancestor not in (None, 0, 1, me):
            ancestor = parents.get(ancestor)
        if ancestor == me:
            own = (int(fields[11]) + int(fields[12])) / tick
            tree[pid] = (own, (int(fields[13]) + int(fields[14])) / tick)
    return tree


def bench_math(math_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """MATH-500 golds against correct, wrong and pathological predictions."""
    math_problems = load_math500_problems(math_path)
    if args.quick:
        math_problems = math_problems[:120]
    return math_figures(math_problems, args.workers)


def bench_mbpp(mbpp_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """MBPP+ canonical solutions: tracedistill vs evalplus, all tasks and the light ones."""
    items = load_mbppplus_problems(mbpp_path)
    if args.quick:
        items = items[:12]
    rows = [row for _, row in items]
    with tempfile.TemporaryDirectory() as cache:
        bwrap = {"auto": None, "on": True, "off": False}[args.bubblewrap]
        ours, reasons, cold_s, warm_s = anyio.run(run_ours, items, args.workers, Path(cache), bwrap)
        theirs, truth, truth_s, evalplus_s = run_evalplus(rows, args.workers)
        differ = sorted(tid for tid in ours if ours[tid] != _passed(theirs[tid]))
        n_theirs = sum(_passed(s) for s in theirs.values())
        print(f"mbpp+: {len(items)} canonical solutions, base+plus, {args.workers} workers each")
        print(
            f"  evalplus: ground truth {truth_s:.1f}s; check {evalplus_s:.1f}s "
            f"({len(items) / evalplus_s:.2f} samples/s), passed {n_theirs}"
        )
        print(
            f"  tracedistill: reference run + check {cold_s:.1f}s; check (references cached) "
            f"{warm_s:.1f}s ({len(items) / warm_s:.2f} samples/s), passed {sum(ours.values())}"
        )
        print(
            f"  speed-up on checking: {evalplus_s / warm_s:.1f}x (target >= 10x); including "
            f"ground truth / reference outputs: {(truth_s + evalplus_s) / cold_s:.1f}x"
        )
        compute_s = sum(sum(t["base_time"]) + sum(t["plus_time"]) for t in truth.values())
        floor_s = compute_s / args.workers
        print(
            f"  the canonical solutions themselves compute for {compute_s:.1f}s (in-process, "
            f"evalplus's ground-truth timing), a floor of {floor_s:.1f}s on "
            f"{args.workers} workers for any checker: at most {evalplus_s / floor_s:.1f}x "
            f"evalplus here; tracedistill's floor / actual = {floor_s / warm_s:.2f}"
        )
        print(f"  verdicts identical: {len(items) - len(differ)}/{len(items)}")
        for tid in differ:
            print(
                f"    {tid}: evalplus base/plus {theirs[tid]}, tracedistill "
                f"{'pass' if ours[tid] else reasons.get(tid, '')[:200]}"
            )
        for tid, why in sorted(reasons.items()):
            print(f"  tracedistill failed {tid}: {why[:300]}")
        # Per-sample overhead: the tasks whose canonical solution computes for under 50 ms.
        light = [
            (p, row)
            for p, row in items
            if sum(truth[p.id]["base_time"]) + sum(truth[p.id]["plus_time"]) < 0.05
        ]
        light_ours, _, _, light_warm_s = anyio.run(
            run_ours, light, args.workers, Path(cache), bwrap
        )
        light_theirs, _, _, light_evalplus_s = run_evalplus(
            [row for _, row in light], args.workers, truth
        )
    light_same = sum(light_ours[p.id] == _passed(light_theirs[p.id]) for p, _ in light)
    print(
        f"  light tasks (canonical compute < 50 ms, {len(light)} of them): evalplus "
        f"{light_evalplus_s:.1f}s, tracedistill {light_warm_s:.1f}s -> "
        f"{light_evalplus_s / light_warm_s:.1f}x; identical verdicts {light_same}/{len(light)}"
    )
    return {
        "mbpp_speedup": round(evalplus_s / warm_s, 2),
        "mbpp_speedup_ceiling": round(evalplus_s / floor_s, 2),
        "mbpp_floor_over_actual": round(floor_s / warm_s, 2),
        "mbpp_light_speedup": round(light_evalplus_s / light_warm_s, 2),
        "mbpp_identical": len(items) - len(differ),
        "mbpp_total": len(items),
    }


if __name__ == "__main__":
    main()
