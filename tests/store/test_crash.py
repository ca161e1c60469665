"""SIGKILL a writer at random moments: every acknowledged record survives, nothing duplicates."""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import orjson
import pytest

from tracedistill.store import JsonlTraceStore

ROOT = Path(__file__).resolve().parents[2]
TOTAL = 400


def start_writer(path: Path, seed: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.store.crash_writer", str(path), str(TOTAL), str(seed)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def check_store(path: Path, acked: set[str]) -> set[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a torn last line is expected and reported
        store = JsonlTraceStore(path)
    with store:
        keys = [t.key for t in store.traces()]
        assert len(keys) == len(set(keys)), "a key is stored twice"
        missing = acked - set(keys)
        assert not missing, f"{len(missing)} acknowledged traces lost"
        for key in list(acked)[:5]:
            assert store.get(key) is not None
    raw = collections.Counter(
        orjson.loads(line)["key"] for line in (path / "traces.jsonl").read_bytes().splitlines()
    )
    assert max(raw.values(), default=1) == 1
    return set(keys)


@pytest.mark.slow
def test_sigkill_at_random_points_loses_nothing_acknowledged(tmp_path: Path) -> None:
    rng = random.Random(1234)
    path = tmp_path / "store"
    acked: set[str] = set()
    kills = 0
    for round_ in range(8):
        proc = start_writer(path, seed=round_)
        assert proc.stdout is not None
        target = rng.randint(5, 60)
        seen = 0
        deadline = time.monotonic() + 60
        while seen < target and time.monotonic() < deadline:
            line = proc.stdout.readline().decode().strip()
            if not line or line == "DONE":
                break
            acked.add(line)
            seen += 1
        if proc.poll() is None:
            # Kill at a random moment after the last read acknowledgment, mid-write or not.
            time.sleep(rng.random() * 0.02)
            proc.send_signal(signal.SIGKILL)
            kills += 1
        for line in proc.stdout.read().decode().split():  # acks printed before the kill landed
            if line != "DONE":
                acked.add(line)
        proc.wait()
        check_store(path, acked)
    assert kills >= 5
    proc = start_writer(path, seed=99)
    out, _ = proc.communicate(timeout=120)
    assert out.decode().split()[-1] == "DONE"
    final = check_store(path, acked)
    assert len(final) == TOTAL
