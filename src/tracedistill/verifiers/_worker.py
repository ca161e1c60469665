"""Entry point of one pool worker process (``python -I -m tracedistill.verifiers._worker``).

The worker reads length-prefixed pickled jobs from its stdin, runs the handler named on the
command line and writes length-prefixed pickled replies to a private copy of its stdout (fd 1
itself is pointed at stderr so a stray ``print`` in a library cannot corrupt the channel). It
exits when its stdin closes or its parent dies.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import pickle
import resource
import signal
import struct
import sys
from collections.abc import Callable
from typing import Any, BinaryIO

_HEADER = struct.Struct("!Q")
_PR_SET_PDEATHSIG = 1


def _read_exact(stream: BinaryIO, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = stream.read(size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _write_frame(stream: BinaryIO, payload: bytes) -> None:
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # parent 0: started through a launcher (bubblewrap) whose own process is the parent; the
    # launcher dies with the pool and takes this process with it.
    if parent and os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(0)


def _cpu_used() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    """Serve jobs until stdin closes."""
    handler_spec, parent, memory_mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    module_name, _, func_name = handler_spec.partition(":")
    module = importlib.import_module(module_name)
    handler: Callable[[Any], Any] = getattr(module, func_name)
    warm: Callable[[], None] | None = getattr(module, "warm_up", None)
    if warm is not None:
        warm()
    if memory_mb > 0:
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    _, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)
    _write_frame(channel, pickle.dumps(("ready", os.getpid())))
    while True:
        header = _read_exact(requests, _HEADER.size)
        if header is None:
            return
        body = _read_exact(requests, _HEADER.unpack(header)[0])
        if body is None:
            return
        job, timeout_s = pickle.loads(body)
        # A CPU budget per job: if the parent is gone and nobody kills an endless job, the
        # kernel does (SIGXCPU), so a stuck worker never outlives its parent for long.
        budget = int(_cpu_used() + timeout_s + 5)
        if cpu_hard == resource.RLIM_INFINITY or budget < cpu_hard:
            resource.setrlimit(resource.RLIMIT_CPU, (budget, cpu_hard))
        try:
            reply = ("ok", handler(job))
        except MemoryError:
            reply = ("memory", "MemoryError")
        except BaseException as exc:
            reply = ("error", f"{type(exc).__name__}: {exc}"[:2000])
        _write_frame(channel, pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))


if __name__ == "__main__":
    main()
