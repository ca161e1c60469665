"""A pool of worker processes that runs blocking jobs off the event loop with hard timeouts.

Each worker is a separate Python process (``tracedistill.verifiers._worker``) started with a
scrubbed environment and an address-space limit. A job that overruns its timeout gets its worker
killed (SIGKILL) and replaced, while the other workers keep going. Closing the pool, or
cancelling the task that waits on a job, kills and reaps the workers it owns, so no process is
left behind; a worker also dies with its parent (``PR_SET_PDEATHSIG``) and stops itself once it
has burnt its per-job CPU budget.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import attrs

from tracedistill.errors import VerifierError

__all__ = ["JobOutcome", "WorkerPool", "scrubbed_env"]

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!Q")

#: Environment variables a worker may keep (everything else, API keys included, is dropped).
_KEEP_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "SYSTEMROOT")


def scrubbed_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return a minimal environment without secrets: locale and PATH only, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k in _KEEP_ENV}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(
        {
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
    )
    env.update(extra or {})
    return env


@attrs.frozen(slots=True)
class JobOutcome:
    """What became of one job: ``status`` is ok, error, memory, timeout or crashed."""

    status: str
    value: Any = None
    error: str = ""
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether the handler returned a value."""
        return self.status == "ok"


class _Worker:
    """One worker process and its blocking channel (used from one thread at a time)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        assert proc.stdin is not None and proc.stdout is not None
        self._out = proc.stdin
        self._in = proc.stdout
        self._lock = threading.Lock()

    def wait_ready(self, timeout_s: float) -> None:
        """Wait for the worker's hello (its imports done); raise VerifierError otherwise."""
        reply = self._receive(time.monotonic() + timeout_s)
        if reply is None or reply[0] != "ready":
            self.kill()
            raise VerifierError(
                f"a verifier worker process did not start within {timeout_s:.0f}s "
                f"(exit code {self.proc.poll()})"
            )

    def call(self, job: Any, timeout_s: float) -> JobOutcome:
        """Run one job; on overrun kill the worker and report a timeout."""
        start = time.monotonic()
        deadline = start + timeout_s
        payload = pickle.dumps((job, timeout_s), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self._out.write(_HEADER.pack(len(payload)) + payload)
            self._out.flush()
        except (BrokenPipeError, OSError, ValueError):
            self.kill()
            return JobOutcome("crashed", error="worker process died", elapsed_s=0.0)
        reply = self._receive(deadline)
        elapsed = time.monotonic() - start
        if reply is None:
            timed_out = time.monotonic() >= deadline
            self.kill()
            if timed_out:
                return JobOutcome("timeout", error=f"over {timeout_s:g}s", elapsed_s=elapsed)
            return JobOutcome(
                "crashed",
                error=f"worker died (exit code {self.proc.returncode})",
                elapsed_s=elapsed,
            )
        status, value = reply
        if status == "ok":
            return JobOutcome("ok", value=value, elapsed_s=elapsed)
        return JobOutcome(str(status), error=str(value), elapsed_s=elapsed)

    def _receive(self, deadline: float) -> Any:
        header = self._read(_HEADER.size, deadline)
        if header is None:
            return None
        body = self._read(_HEADER.unpack(header)[0], deadline)
        return None if body is None else pickle.loads(body)

    def _read(self, size: int, deadline: float) -> bytes | None:
        fd = self._in.fileno()
        chunks: list[bytes] = []
        while size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                ready, _, _ = select.select([fd], [], [], remaining)
            except (OSError, ValueError):
                return None
            if not ready:
                return None
            chunk = os.read(fd, min(size, 1 << 20))
            if not chunk:
                return None
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """Kill and reap the process (idempotent)."""
        with self._lock:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(signal.SIGKILL)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - a kernel-level hang
                log.warning("worker %d did not die after SIGKILL", self.proc.pid)
            for stream in (self._out, self._in):
                with contextlib.suppress(OSError):
                    stream.close()

    def stop(self) -> None:
        """Ask the worker to exit (stdin closed), then make sure it did."""
        with contextlib.suppress(OSError):
            self._out.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=2)
        self.kill()


class WorkerPool:
    """Up to ``size`` worker processes that run ``handler`` (``"module:function"``) on jobs.

    Args:
        handler: the function each worker calls with a job; its module may define
            ``warm_up()``, called once when a worker starts (imports, caches).
        size: how many workers (and so jobs) at most at once.
        timeout_s: default hard timeout of one job, in seconds.
        memory_mb: address-space limit of each worker (0 for none).
        startup_timeout_s: how long a worker may take to start.
        name: a label for logs.
        launcher: turns a worker's command line into the one to run (e.g. wrapped in
            bubblewrap); called for every worker started, so each may get its own resources.

    Workers start lazily on first use (or with :meth:`start`) and a killed worker is replaced on
    the next job. The pool is an async context manager; :meth:`aclose` kills what is left.
    """

    def __init__(
        self,
        handler: str,
        *,
        size: int,
        timeout_s: float,
        memory_mb: int = 0,
        startup_timeout_s: float = 120.0,
        name: str = "pool",
        launcher: Callable[[list[str]], list[str]] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"pool size must be >= 1, got {size}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.handler = handler
        self.size = size
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.startup_timeout_s = startup_timeout_s
        self.name = name
        self.launcher = launcher
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._slots: anyio.Semaphore | None = None
        self._limiter: anyio.CapacityLimiter | None = None
        self._closed = False
        self.replaced = 0  # workers killed for overrunning, for tests and logs
        self.jobs_run = 0  # jobs sent to workers

    @property
    def pids(self) -> list[int]:
        """Process ids of the live workers."""
        return [w.proc.pid for w in self._all if w.alive]

    def _ensure(self) -> tuple[anyio.Semaphore, anyio.CapacityLimiter]:
        if self._slots is None or self._limiter is None:
            self._slots = anyio.Semaphore(self.size)
            # One thread per worker blocks on its channel; leave anyio's shared limiter alone.
            self._limiter = anyio.CapacityLimiter(self.size + 1)
        self._closed = False
        return self._slots, self._limiter

    async def start(self) -> None:
        """Start all workers now (they otherwise start on first use)."""
        _, limiter = self._ensure()
        missing = self.size - len(self._all)
        if missing <= 0:
            return
        workers = [self._spawn() for _ in range(missing)]
        try:
            for worker in workers:
                await anyio.to_thread.run_sync(
                    worker.wait_ready, self.startup_timeout_s, limiter=limiter
                )
        except BaseException:
            for worker in workers:
                self._discard(worker)
            raise
        self._idle.extend(workers)

    def _spawn(self) -> _Worker:
        # Spawned from the event-loop thread: PR_SET_PDEATHSIG follows the spawning thread, and
        # that one lives as long as the loop. Popen uses vfork+exec here, so this is quick.
        command = [
            sys.executable,
            "-I",
            "-c",
            _BOOT,
            self.handler,
            "0" if self.launcher is not None else str(os.getpid()),
            str(self.memory_mb),
        ]
        proc = subprocess.Popen(
            self.launcher(command) if self.launcher is not None else command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=scrubbed_env(),
            close_fds=True,
            start_new_session=True,  # a Ctrl-C in the terminal is for the parent only
        )
        worker = _Worker(proc)
        self._all.add(worker)
        return worker

    def _discard(self, worker: _Worker) -> None:
        worker.kill()
        self._all.discard(worker)
        if worker in self._idle:
            self._idle.remove(worker)

    async def run(self, job: Any, *, timeout_s: float | None = None) -> JobOutcome:
        """Run one job on a worker and return its outcome (never raises for job failures).

        Raises:
            VerifierError: the pool is closed or a worker could not start.
        """
        slots, limiter = self._ensure()
        timeout = self.timeout_s if timeout_s is None else timeout_s
        async with slots:
            if self._idle:
                worker = self._idle.pop()
            else:
                worker = self._spawn()
                try:
                    await anyio.to_thread.run_sync(
                        worker.wait_ready,
                        self.startup_timeout_s,
                        limiter=limiter,
                        abandon_on_cancel=True,
                    )
                except BaseException:
                    self._discard(worker)
                    raise
            self.jobs_run += 1
            try:
                outcome = await anyio.to_thread.run_sync(
                    worker.call, job, timeout, limiter=limiter, abandon_on_cancel=True
                )
            except BaseException:
                # Cancelled (or the loop is going away) while the job ran: the worker's state
                # is unknown, so it goes; its thread then returns on the closed pipe.
                self._discard(worker)
                raise
            if worker.alive and not self._closed:
                self._idle.append(worker)
            else:
                if outcome.status == "timeout":
                    self.replaced += 1
                    log.info(
                        "%s: killed worker %d after %s", self.name, worker.proc.pid, outcome.error
                    )
                self._discard(worker)
            return outcome

    async def aclose(self) -> None:
        """Stop every worker, waiting for them to exit (idempotent; the pool can restart)."""
        self._closed = True
        workers = list(self._all)
        self._all.clear()
        self._idle.clear()
        self._slots = None
        self._limiter = None

        def stop_all() -> None:
            for worker in workers:
                worker.stop()

        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(stop_all)

    async def __aenter__(self) -> WorkerPool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _import_root() -> str:
    """The directory that holds the ``tracedistill`` package, for the workers' import path."""
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.dirname(os.path.dirname(here))


# ``-I`` (isolated mode) ignores PYTHONPATH and the user's site directory, so the worker finds
# this very copy of tracedistill through an explicit path entry.
_BOOT = (
    f"import sys; sys.path.insert(0, {_import_root()!r}); "
    "from tracedistill.verifiers._worker import main; main()"
)
