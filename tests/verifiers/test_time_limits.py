"""Per-test time limits hold from outside the sample: signals ignored, blocked, or never seen.

Each sample below defeats the child's own timer (SIGALRM) in a different way. The runner counts
the lines the child writes and kills it once a test overruns its limit plus a small margin, so
the verdict is a timeout that comes long before the whole-sample wall limit. Times are asserted
against that wall limit with wide margins (the machine may be loaded), never as absolutes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tracedistill.records import CodeTests, FunctionTests, Problem, TaskKind, VerdictReason
from tracedistill.verifiers import CodeVerifier, SandboxLimits
from tracedistill.verifiers._checks import parse_records

pytestmark = pytest.mark.anyio

TESTS = 20  # the whole-sample wall limit grows with the number of tests; a test's does not
LIMIT_S = 1.0
LOAD_S = 2.0
WALL_S = TESTS * LIMIT_S + 1.0 + LOAD_S  # what the sample would get without per-test limits


def _problem() -> Problem:
    return Problem(
        id="limits",
        kind=TaskKind.CODE,
        prompt="Return x.",
        tests=CodeTests(
            function=FunctionTests(
                entry_point="f",
                base_inputs=[[i] for i in range(TESTS)],
                expected_base=list(range(TESTS)),
            )
        ),
    )


HONEST = "def f(x):\n    return x\n"

STUCK = {
    "ignores SIGALRM": (
        "import signal\ndef f(x):\n    signal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
        "    while True:\n        pass\n"
    ),
    "masks SIGALRM and sleeps in C": (
        "import signal, time\ndef f(x):\n"
        "    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})\n    time.sleep(1000)\n"
    ),
    "backtracks in the regex engine": (
        "import re\ndef f(x):\n    return re.match(r'(a+)+$', 'a' * 64 + 'b')\n"
    ),
    "swallows every timeout": (
        "def f(x):\n    while True:\n        try:\n            while True:\n                pass\n"
        "        except BaseException:\n            pass\n"
    ),
    "hangs while loading, SIGALRM ignored": (
        "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass\n"
    ),
    "closes its result pipe and hangs": (
        "import os, signal\ndef f(x):\n    signal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
        "    os.close(3)\n    while True:\n        pass\n"
    ),
}


def _verifier(tmp_path: Path, **kwargs: object) -> CodeVerifier:
    return CodeVerifier(
        workers=2,
        test_timeout_s=LIMIT_S,
        limits=SandboxLimits(memory_mb=1024, load_timeout_s=LOAD_S),
        cache_dir=tmp_path,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_stuck_samples_stop_at_their_test_limit(tmp_path: Path) -> None:
    problem = _problem()
    async with _verifier(tmp_path) as verifier:
        results = await verifier.check_many(
            [(problem, code) for code in STUCK.values()], progress=False
        )
        # the runners still work: an honest sample passes on each afterwards
        after = await verifier.check_many([(problem, HONEST)] * 2, progress=False)
        assert verifier.pool.replaced == 0  # the sample's process went, not the runner
    for name, result in zip(STUCK, results, strict=True):
        assert result.reason is VerdictReason.TIMEOUT, f"{name}: {result.reason} {result.details}"
        # one test's (or the loading's) limit plus margins, far below the whole-sample limit
        assert result.elapsed_s < WALL_S / 3, f"{name}: {result.elapsed_s:.1f}s"
    assert all(r.passed for r in after), [r.details for r in after]


async def test_forking_sample_is_stopped(tmp_path: Path) -> None:
    fork = "import os, time\ndef f(x):\n    if os.fork() == 0:\n        time.sleep(1000)\n"
    fork += "    time.sleep(1000)\n"
    async with _verifier(tmp_path) as verifier:
        result = await verifier.check(_problem(), fork)
    # new processes are forbidden by default: the first fork ends the sample
    assert result.reason is VerdictReason.SANDBOX_VIOLATION, result.details
    assert result.elapsed_s < WALL_S / 3


async def test_forked_process_holding_the_pipe_is_stopped(tmp_path: Path) -> None:
    """Where processes are allowed, a child that keeps the result pipe open and ignores
    signals does not hold the runner: the whole process group (or namespace) is killed."""
    code = (
        "import os, signal, time\n"
        "def f(x):\n"
        "    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})\n"
        "    os.fork()\n"
        "    time.sleep(1000)\n"
    )
    verifier = _verifier(tmp_path)
    async with verifier:
        await verifier.capabilities()
        # max_processes > 0 is refused as root by CodeVerifier; the runner itself does not
        # care, so the job is sent to it directly.
        job = verifier._job(
            "function",
            code,
            WALL_S,
            entry_point="f",
            groups=[
                {
                    "id": 0,
                    "start": 0,
                    "inputs": [[i] for i in range(TESTS)],
                    "limits": [LIMIT_S] * TESTS,
                }
            ],
            output_mode="plain",
        )
        job["limits"]["max_processes"] = 4
        outcome = await verifier.pool.run(job, timeout_s=WALL_S + 30)
    assert outcome.ok, outcome.error
    report = outcome.value
    assert report["status"] == "step-timeout", report
    assert report["wall_s"] < WALL_S / 3
    assert any(r.get("event") == "loaded" for r in parse_records(report["data"]))


async def test_elapsed_is_the_samples_own_run_time(tmp_path: Path) -> None:
    problem = Problem(
        id="sleep",
        kind=TaskKind.CODE,
        prompt="Return x.",
        tests=CodeTests(
            function=FunctionTests(entry_point="f", base_inputs=[[1]], expected_base=[1])
        ),
    )
    slow = "import time\ndef f(x):\n    time.sleep(2.0)\n    return x\n"
    async with CodeVerifier(workers=1, cache_dir=tmp_path, test_timeout_s=6) as verifier:
        # one runner: the fast sample waits for the slow one before it runs
        results = await verifier.check_many(
            [(problem, slow), (problem, HONEST)], progress=False, concurrency=2
        )
    assert all(r.passed for r in results), [r.details for r in results]
    slow_result, fast_result = results
    assert slow_result.elapsed_s >= 2.0
    assert fast_result.elapsed_s < slow_result.elapsed_s / 2


async def test_check_code_takes_bare_tests_and_responses(tmp_path: Path) -> None:
    tests = CodeTests(asserts=["assert f(2) == 4"])
    response = "Here you go:\n```python\ndef f(x):\n    return x * 2\n```\nDone."
    async with CodeVerifier(workers=1, cache_dir=tmp_path) as verifier:
        assert verifier.backend in ("bubblewrap", "fork")
        program = await verifier.check_code(tests, "def f(x):\n    return x * 2\n")
        from_response = await verifier.check_code(tests, response)
        wrong = await verifier.check_code(tests, "def f(x):\n    return x\n")
        work_dir = verifier.work_dir
        assert work_dir is not None and work_dir.is_dir()
    assert program.passed and program.details["extraction"] == "given"
    assert from_response.passed and from_response.details["extraction"] == "fenced"
    assert wrong.reason is VerdictReason.TEST_FAILED
    assert verifier.work_dir is None and not work_dir.exists()  # removed on close
    assert os.path.basename(str(work_dir)).startswith("tracedistill-sandbox-")
