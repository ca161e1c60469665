from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from tests.evaluation.helpers import expected_correct, responder
from tests.servers.openai_server import OpenAIServer
from tracedistill.evaluation import EvalStore

ROOT = Path(__file__).resolve().parents[2]
N = 60


def _lines(path: Path, kind: str) -> list[dict[str, object]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_bytes().splitlines():
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # a torn last line
        if record.get("type") == kind:
            out.append(record)
    return out


def _run(url: str, run_dir: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TRACEDISTILL_PROGRESS": "0", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.evaluation.eval_worker", url, str(run_dir), str(N)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_sigkill_mid_evaluation_never_resamples_a_finished_problem(tmp_path: Path) -> None:
    log_path = EvalStore(tmp_path).path_for("ckpt-100", "arith")
    with OpenAIServer(responder=responder, latency=0.1) as server:
        proc = _run(server.url, tmp_path)
        deadline = time.monotonic() + 60
        while len(_lines(log_path, "sample")) < 12:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the evaluation made no progress"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        finished = {str(r["problem_id"]) for r in _lines(log_path, "sample")}
        assert 12 <= len(finished) < N
        requests_before = sum(server.stats.requests_by_prompt.values())

        again = _run(server.url, tmp_path)
        out, err = again.communicate(timeout=120)
        assert again.returncode == 0, err.decode()[-2000:]
        assert f"RESULT {expected_correct(N)} {N}" in out.decode()

    by_prompt = server.stats.requests_by_prompt
    for problem_id in finished:
        index = problem_id.split("/")[1]
        hits = [c for p, c in by_prompt.items() if f"Problem {index}:" in p]
        assert hits == [1], f"{problem_id} was sampled again after the restart"
    # Only the requests in flight at the kill (at most the concurrency) were sent twice.
    total = sum(by_prompt.values())
    assert N <= total <= N + 4
    assert requests_before - len(finished) <= 4
    # Every problem has exactly one sample in the log, and one grade.
    samples = [str(r["problem_id"]) for r in _lines(log_path, "sample")]
    assert len(samples) == len(set(samples)) == N
    assert len({str(r["problem_id"]) for r in _lines(log_path, "grade")}) == N
    result = EvalStore(tmp_path).load("ckpt-100", "arith")
    assert result.complete and result.correct == expected_correct(N)
