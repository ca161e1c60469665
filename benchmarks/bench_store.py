"""Store benchmark: append N traces, close, reopen and scan; compare with a plain json baseline.

Prints traces/s for writing (one ``add_trace`` call per trace, default durability) and for
reopen + full scan, each with its ratio to a ``json.dumps`` + file-append baseline measured in the
same run, and with its ratio to the target (write >= 50,000/s; reopen+scan of 100,000 <= 1 s).
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from pathlib import Path

import anyio

from tracedistill.records import Message, Problem, SamplingParams, TokenUsage, Trace
from tracedistill.store import JsonlTraceStore


def make_data(n: int) -> tuple[list[Problem], list[Trace]]:
    problems = [
        Problem(kind="math", prompt=f"Compute {i} * 7 + 3.", answer=str(i * 7 + 3))
        for i in range(n)
    ]
    reasoning = "Let me multiply first, then add. " * 20  # ~700 bytes, a short trace
    traces = [
        Trace(
            problem_id=p.id,
            teacher="bench",
            model="bench-model",
            prompt=[Message("user", p.prompt)],
            reasoning=reasoning,
            answer=f"The answer is \\boxed{{{p.answer}}}.",
            usage=TokenUsage(prompt_tokens=20, completion_tokens=180),
            params=SamplingParams(max_tokens=4096, temperature=0.7),
            cost_usd=0.0012,
        )
        for p in problems
    ]
    return problems, traces


def baseline_write(traces: list[Trace], path: Path) -> float:
    start = time.perf_counter()
    with path.open("a") as fh:
        for t in traces:
            fh.write(json.dumps(t.to_dict()) + "\n")
            fh.flush()  # handed to the OS per record, as the store does
    return time.perf_counter() - start


def baseline_scan(path: Path) -> float:
    start = time.perf_counter()
    count = 0
    with path.open() as fh:
        for line in fh:
            Trace.from_dict(json.loads(line))
            count += 1
    return time.perf_counter() - start


async def store_write(problems: list[Problem], traces: list[Trace], path: Path) -> float:
    with JsonlTraceStore(path) as store:
        await store.add_problems(problems)
        start = time.perf_counter()
        for t in traces:
            await store.add_trace(t)
        return time.perf_counter() - start


def store_scan(path: Path, n: int) -> float:
    start = time.perf_counter()
    with JsonlTraceStore(path, readonly=True) as store:
        count = sum(1 for _ in store.traces())
    elapsed = time.perf_counter() - start
    assert count == n
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="10,000 traces instead of 100,000")
    parser.add_argument("-n", type=int, default=None)
    args = parser.parse_args()
    n = args.n or (10_000 if args.quick else 100_000)
    problems, traces = make_data(n)
    with tempfile.TemporaryDirectory() as tmp:
        base_path, store_path = Path(tmp) / "baseline.jsonl", Path(tmp) / "store"
        base_w = baseline_write(traces, base_path)
        store_w = anyio.run(store_write, problems, traces, store_path)
        # Scans start from what a fresh process has: none of the written objects in memory.
        del problems, traces
        gc.collect()
        base_s = baseline_scan(base_path)
        store_s = store_scan(store_path, n)
    w_rate, s_rate = n / store_w, n / store_s
    scan_target_s = n / 100_000  # 1 s per 100,000 traces
    print(f"store benchmark, {n:,} traces of ~1 KB")
    print(
        f"  write       {w_rate:>10,.0f} traces/s  vs baseline {n / base_w:>10,.0f}/s  "
        f"ratio {base_w / store_w:5.2f}x  target 50,000/s: {w_rate / 50_000:5.2f} of target"
    )
    print(
        f"  reopen+scan {s_rate:>10,.0f} traces/s  vs baseline {n / base_s:>10,.0f}/s  "
        f"ratio {base_s / store_s:5.2f}x  {store_s:.2f} s, target {scan_target_s:.2f} s: "
        f"{scan_target_s / store_s:5.2f} of target"
    )


if __name__ == "__main__":
    main()
