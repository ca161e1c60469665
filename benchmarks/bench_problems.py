"""Problem-source benchmark: stream a 200,000-row pool into a deduplicated, decontaminated
sample of 40,000.

Writes a local pool in the OpenR1-Math layout (Parquet by default, ``--format jsonl`` for JSON
Lines) with a heavy trace column the source must not read, 1% exact and 1% normalized
duplicates, and 50 planted MATH-500 problems (from ``../shared/data`` when present, else a
synthetic benchmark). Then, each in a fresh process so peak RSS is its own:

- the source: ``openr1_math(path).sample(40_000, decontaminate=MATH-500)``, gold checking off
  (that cost belongs to the verifier's benchmark);
- a baseline: read every row of the file into memory and ``random.sample`` 40,000.

Prints wall time and peak RSS of each, the source's ratios to the targets (60 s, 1 GB) and to
the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MATH500 = ROOT / ".." / "shared" / "data" / "math500_test.jsonl"
TARGET_S = 60.0
TARGET_RSS_MB = 1024.0

WORDS = (
    "let",
    "find",
    "compute",
    "the",
    "value",
    "of",
    "integer",
    "real",
    "number",
    "triangle",
    "circle",
    "square",
    "sum",
    "product",
    "prime",
    "divisor",
    "remainder",
    "sequence",
    "function",
    "polynomial",
    "root",
    "equation",
    "inequality",
    "area",
    "perimeter",
    "angle",
    "probability",
    "expected",
    "points",
    "chosen",
    "random",
    "positive",
    "least",
    "greatest",
    "such",
    "that",
    "if",
    "and",
    "only",
    "when",
    "given",
    "where",
    "each",
    "every",
    "how",
    "many",
    "ways",
    "can",
    "be",
    "arranged",
    "in",
    "a",
    "row",
)


def benchmark_texts() -> dict[str, str]:
    if MATH500.exists():
        out = {}
        with MATH500.open() as handle:
            for line in handle:
                row = json.loads(line)
                out[row["unique_id"]] = row["problem"]
        return out
    rng = random.Random(500)
    return {f"bench/{i}": " ".join(rng.choices(WORDS, k=40)) for i in range(500)}


def make_rows(n: int, bench: dict[str, str]) -> list[dict[str, Any]]:
    rng = random.Random(0)
    trace = "Let me think step by step about this problem. " * 12
    rows: list[dict[str, Any]] = []
    for i in range(n):
        words = rng.choices(WORDS, k=rng.randint(30, 90))
        rows.append(
            {
                "problem": f"Problem {i}: "
                + " ".join(words)
                + f" with n = {rng.randint(1, 10**6)}?",
                "answer": str(rng.randint(0, 999)),
                "source": rng.choice(["olympiads", "amc_aime", "cn_contest", "aops_forum"]),
                "uuid": f"{i:08x}-bench",
                "problem_type": "Algebra",
                "question_type": "math-word-problem",
                "generations": [trace + str(i)],
            }
        )
    for k in range(n // 100):  # 1% exact and 1% normalized duplicates under new ids
        a, b = rng.randrange(n), rng.randrange(n)
        rows[a] = {**rows[rng.randrange(n)], "uuid": f"dup-exact-{k}"}
        source = rows[rng.randrange(n)]
        rows[b] = {**source, "uuid": f"dup-norm-{k}", "problem": source["problem"].upper()}
    for k, text in enumerate(list(bench.values())[:50]):  # planted benchmark problems
        rows[rng.randrange(n)] = {**rows[k], "problem": text, "uuid": f"leak-{k}"}
    return rows


def write_pool(rows: list[dict[str, Any]], folder: Path, fmt: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        path = folder / "train.jsonl"
        with path.open("w") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
        return path
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = folder / "train-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=10_000)
    return path


def peak_rss_mb() -> float:
    # VmHWM is this process's own peak; ru_maxrss would carry the parent's peak across exec.
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def measure_source(path: Path, n: int) -> dict[str, Any]:
    import anyio

    from tracedistill.problems import Decontaminator, openr1_math

    async def run() -> Any:
        bench = Decontaminator({"MATH-500": benchmark_texts()})
        source = openr1_math(path, check_golds=False)
        return await source.sample(n, seed=0, decontaminate=bench, progress=False)

    start = time.perf_counter()
    pool = anyio.run(run)
    elapsed = time.perf_counter() - start
    report = pool.report
    return {
        "seconds": elapsed,
        "rss_mb": peak_rss_mb(),
        "selected": len(pool),
        "rows": report.rows,
        "skipped": dict(report.skipped),
        "overlaps": report.overlaps_by_benchmark(),
    }


def measure_baseline(path: Path, n: int) -> dict[str, Any]:
    start = time.perf_counter()
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    else:
        with path.open() as handle:
            rows = [json.loads(line) for line in handle]
    sample = random.Random(0).sample(rows, n)
    elapsed = time.perf_counter() - start
    return {"seconds": elapsed, "rss_mb": peak_rss_mb(), "selected": len(sample)}


def child(kind: str, path: Path, n: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--measure", kind, "--path", str(path), "--n", str(n)],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="20,000 rows into 4,000")
    parser.add_argument("--format", choices=("parquet", "jsonl"), default="parquet")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--measure", choices=("source", "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure = measure_source if args.measure == "source" else measure_baseline
        print(json.dumps(measure(args.path, args.n)))
        return

    rows_n = args.rows or (20_000 if args.quick else 200_000)
    sample_n = rows_n // 5
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = write_pool(make_rows(rows_n, benchmark_texts()), Path(tmp) / "pool", args.format)
        size_mb = path.stat().st_size / 2**20
        print(
            f"pool: {rows_n:,} rows, {args.format}, {size_mb:,.0f} MB "
            f"(written in {time.perf_counter() - start:.1f} s); sample {sample_n:,}"
        )
        source = child("source", path, sample_n)
        baseline = child("baseline", path, sample_n)

    scale = rows_n / 200_000  # targets are for 200,000 rows
    print(
        f"source   : {source['seconds']:7.2f} s  peak RSS {source['rss_mb']:7.0f} MB  "
        f"selected {source['selected']:,} of {source['rows']:,} rows; skipped {source['skipped']}; "
        f"overlaps {source['overlaps']}"
    )
    print(
        f"baseline : {baseline['seconds']:7.2f} s  peak RSS {baseline['rss_mb']:7.0f} MB  "
        "(whole file in memory, random.sample; no dedup, no decontamination)"
    )
    print(
        f"time / target ({TARGET_S * scale:.0f} s) = {source['seconds'] / (TARGET_S * scale):.2f}; "
        f"peak RSS / target ({TARGET_RSS_MB:.0f} MB) = {source['rss_mb'] / TARGET_RSS_MB:.2f}"
    )
    print(
        f"source / baseline: time x{source['seconds'] / baseline['seconds']:.2f}, "
        f"peak RSS x{source['rss_mb'] / baseline['rss_mb']:.2f}"
    )


if __name__ == "__main__":
    main()
