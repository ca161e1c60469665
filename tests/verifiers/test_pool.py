from __future__ import annotations

import os
import time

import anyio
import pytest

from tracedistill.verifiers.pool import WorkerPool, scrubbed_env

pytestmark = pytest.mark.anyio


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it must have been reaped too
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


async def test_jobs_run_and_workers_are_reused() -> None:
    async with WorkerPool("math:factorial", size=2, timeout_s=10) as pool:
        pids = set(pool.pids)
        outcomes = [await pool.run(n) for n in (5, 10, 20)]
        assert [o.value for o in outcomes] == [120, 3628800, 2432902008176640000]
        assert set(pool.pids) == pids
    assert not any(_alive(pid) for pid in pids)


async def test_overrun_kills_only_that_worker_and_others_continue() -> None:
    # factorial of 10**8 runs in C holding the GIL: only killing the process stops it.
    async with WorkerPool("math:factorial", size=2, timeout_s=1.0) as pool:
        results: dict[str, object] = {}
        quick_done: list[float] = []

        async def slow() -> None:
            start = time.monotonic()
            outcome = await pool.run(10**8)
            results["slow"] = (outcome.status, time.monotonic() - start)

        async def quick() -> None:
            for _ in range(20):
                outcome = await pool.run(50)
                assert outcome.ok
                quick_done.append(time.monotonic())

        start = time.monotonic()
        async with anyio.create_task_group() as tg:
            tg.start_soon(slow)
            await anyio.sleep(0.05)
            tg.start_soon(quick)
        status, took = results["slow"]  # type: ignore[misc]
        assert status == "timeout"
        assert took < 2.0  # timeout + 1 s
        assert len(quick_done) == 20 and quick_done[-1] - start < 2.5
        assert pool.replaced == 1
        outcome = await pool.run(6)  # a replacement worker serves the next job
        assert outcome.value == 720


async def test_memory_limit_per_worker() -> None:
    async with WorkerPool("builtins:bytearray", size=1, timeout_s=10, memory_mb=512) as pool:
        outcome = await pool.run(2 * 1024**3)
        assert outcome.status == "memory"
        assert (await pool.run(10)).value == bytearray(10)


async def test_cancellation_kills_the_busy_worker() -> None:
    pool = WorkerPool("time:sleep", size=1, timeout_s=30)
    await pool.start()
    pid = pool.pids[0]
    with anyio.move_on_after(0.3):
        await pool.run(20)
    await anyio.sleep(0.1)
    assert not _alive(pid)
    await pool.aclose()
    assert pool.pids == []


async def test_lazy_start_and_restart_after_close() -> None:
    pool = WorkerPool("math:factorial", size=1, timeout_s=10)
    assert pool.pids == []
    assert (await pool.run(3)).value == 6
    first = pool.pids
    await pool.aclose()
    assert not any(_alive(pid) for pid in first)
    assert (await pool.run(4)).value == 24
    await pool.aclose()


async def test_handler_errors_are_reported_not_raised() -> None:
    async with WorkerPool("math:factorial", size=1, timeout_s=10) as pool:
        outcome = await pool.run(-1)
        assert outcome.status == "error" and "ValueError" in outcome.error


def test_scrubbed_env_drops_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    env = scrubbed_env()
    assert "OPENROUTER_API_KEY" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert "PATH" in env
