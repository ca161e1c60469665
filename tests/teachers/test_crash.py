"""A generating process killed with SIGKILL halfway and restarted completes the pool exactly."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import orjson

from tests.servers.openai_server import OpenAIServer
from tracedistill import JsonlTraceStore

SCRIPT = Path(__file__).with_name("crash_generator.py")
COUNT = 300


def test_sigkill_halfway_then_resume(tmp_path: Path) -> None:
    store_path = tmp_path / "store"
    with OpenAIServer(latency=0.01) as server:
        args = [sys.executable, str(SCRIPT), server.url, str(store_path), str(COUNT)]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        traces = store_path / "traces.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if traces.exists() and traces.read_bytes().count(b"\n") >= COUNT:
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        lines_at_kill = traces.read_bytes().count(b"\n")
        assert COUNT <= lines_at_kill < 2 * COUNT, "killed too late to test anything"
        answered_before = server.stats.answered

        done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True)
        assert done.stdout.startswith("DONE")
        resumed_done, resumed_skipped = map(int, done.stdout.split()[1:3])
        assert resumed_skipped >= lines_at_kill - 1
        assert resumed_done + resumed_skipped == 2 * COUNT
        # only requests in flight at the kill were bought twice
        assert server.stats.answered - 2 * COUNT <= 16 + 1
        assert server.stats.answered >= answered_before

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a torn last line is expected after SIGKILL
        store = JsonlTraceStore(store_path, readonly=True)
    keys = [orjson.loads(line)["key"] for line in traces.read_bytes().splitlines() if line]
    duplicates = [k for k, n in collections.Counter(keys).items() if n > 1]
    assert not duplicates
    stored = list(store.traces())
    assert len(stored) == 2 * COUNT and all(t.ok for t in stored)
    per_problem = collections.Counter(t.problem_id for t in stored)
    assert len(per_problem) == COUNT and set(per_problem.values()) == {2}
    store.close()
