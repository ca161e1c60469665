"""The code sandbox: run untrusted Python in a locked-down child process.

A *runner* (a small worker process of a :class:`~tracedistill.verifiers.pool.WorkerPool`,
started with a scrubbed environment) forks one child per sample. The child, before any
untrusted byte runs:

- enters new network, PID, IPC and UTS namespaces (plus a user namespace when not root)
  where the kernel allows: no network at all, no view of other processes;
- gets a fresh temporary working directory, an environment with no secrets, and no open file
  descriptors but its result pipe;
- sets its own resource limits (CPU time, address space, open files, file size, no core
  files) -- they are set in the child, not inherited from a large parent;
- restricts its filesystem with Landlock (read only the Python installation and system
  libraries, write only its working directory) where the kernel supports it;
- installs a seccomp filter: no sockets but AF_UNIX, no new processes (unless allowed), no
  signals to other processes, no ptrace, mount, io_uring, bpf, keyrings. A forbidden call
  kills the child with SIGSYS, which the verdict reports as a sandbox violation.

The runner kills the whole child (and its namespace) when one test overruns its time limit, or
at the wall-time limit. The layers themselves are applied by :mod:`._isolation`. See
``docs/sandbox.md`` for what is and is not isolated.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import select
import shutil
import signal
import sys
import tempfile
import time
from typing import Any

import attrs

from tracedistill.verifiers import _harness
from tracedistill.verifiers._isolation import (
    PR_SET_PDEATHSIG,
    enter_sample_namespaces,
    enter_shared_namespaces,
    fresh_proc,
    install_landlock,
    install_seccomp,
    landlock_abi,
    lib,
)
from tracedistill.verifiers._protocol import Job, Limits, Record, step_budgets

__all__ = ["SYSTEM_PATHS", "SandboxLimits", "handle", "probe", "warm_up"]


@attrs.frozen(slots=True, kw_only=True)
class SandboxLimits:
    """Resource limits of one sandboxed sample run.

    Args:
        memory_mb: address-space limit of the child.
        max_processes: extra processes the code may start (0: none; > 0 needs a PID
            namespace and a non-root user so that RLIMIT_NPROC holds).
        max_open_files: RLIMIT_NOFILE of the child.
        max_output_bytes: largest file (stdout capture included) the child may write.
        max_result_bytes: most result data read back from a child (its encoded outputs).
        load_timeout_s: time allowed to define the code (module-level statements).
        startup_s: wall-time slack added for the child's start and result transfer.
    """

    memory_mb: int = 4096
    max_processes: int = 0
    max_open_files: int = 64
    max_output_bytes: int = 16 * 1024 * 1024
    max_result_bytes: int = 512 * 1024 * 1024
    load_timeout_s: float = 10.0
    startup_s: float = 2.0


#: System files a Python process needs (those that exist): read-only for every sample.
SYSTEM_PATHS = (
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/bin",
    "/sbin",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/os-release",
)


_READ_PATHS: list[str] | None = None


def _read_paths() -> list[str]:
    """What the child may read: the Python installation, its import path, system libraries.

    Found once per runner (its import path does not change), not once per sample.
    """
    global _READ_PATHS
    if _READ_PATHS is None:
        paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
        paths.update(p for p in sys.path if p and os.path.isabs(p))
        paths.update(SYSTEM_PATHS)
        paths.update(["/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"])
        _READ_PATHS = sorted(p for p in paths if os.path.exists(p))
    return _READ_PATHS


def _wants_sample_namespaces(job: Job) -> bool:
    """Whether a sample needs its own PID and mount namespaces.

    They cost ~10 ms a sample and add nothing when Landlock hides /proc and seccomp forbids new
    processes and signals to others; they are used when either is missing, when the sample
    may start processes (so that all of them die with it), or when asked for.
    """
    mode = job.get("sample_namespaces", "auto")
    if mode != "auto":
        return bool(mode)
    landlock = job.get("landlock", True) and int(probe()["landlock_abi"]) > 0
    return not landlock or job["limits"]["max_processes"] > 0 or not probe()["seccomp"]


_RUNNER_NAMESPACES: list[str] | None = None


def _runner_namespaces() -> list[str]:
    global _RUNNER_NAMESPACES
    if _RUNNER_NAMESPACES is None:
        _RUNNER_NAMESPACES = enter_shared_namespaces()
    return _RUNNER_NAMESPACES


_CAPABILITIES: dict[str, Any] | None = None


def probe() -> dict[str, Any]:
    """Find out (in a throwaway child) which isolation layers this machine allows."""
    global _CAPABILITIES
    if _CAPABILITIES is not None:
        return _CAPABILITIES
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(read_fd)
            names = enter_shared_namespaces() + enter_sample_namespaces()
            found: dict[str, Any] = {"namespaces": names}
            found["landlock_abi"] = landlock_abi()
            found["seccomp"] = install_seccomp(allow_processes=True, restrict_signals=False)
            os.write(write_fd, json.dumps(found).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    caps: dict[str, Any] = json.loads(data or b"{}")
    caps.setdefault("namespaces", [])
    caps.setdefault("landlock_abi", 0)
    caps.setdefault("seccomp", False)
    caps["root"] = os.getuid() == 0
    caps["platform"] = f"{sys.platform}-{platform.machine()}"
    _CAPABILITIES = caps
    return caps


def warm_up() -> None:
    """Runner start-up: probe the platform once, before any sample runs."""
    probe()


# --- the child ---------------------------------------------------------------------------------


def _die_with_parent(parent: int | None) -> None:
    lib().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The init of a new PID namespace sees its parent as pid 0, so it cannot check.
    if parent is not None and os.getppid() != parent:
        os._exit(111)


def _set_limits(limits: Limits, cpu_s: float) -> None:
    def cap(which: int, value: int) -> None:
        _, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))

    cap(resource.RLIMIT_CPU, max(1, int(cpu_s) + 1))
    cap(resource.RLIMIT_AS, int(limits["memory_mb"]) * 1024 * 1024)
    cap(resource.RLIMIT_NOFILE, int(limits["max_open_files"]))
    cap(resource.RLIMIT_FSIZE, int(limits["max_output_bytes"]))
    cap(resource.RLIMIT_CORE, 0)
    if limits["max_processes"] > 0:
        cap(resource.RLIMIT_NPROC, _user_process_count() + int(limits["max_processes"]))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG


def _user_process_count() -> int:
    uid = os.getuid()
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    count += 1
            except OSError:
                continue
    return count


_LANDLOCKED = False


def _isolate(job: Job, workdir: str, *, untrusted_here: bool) -> list[str]:
    """Lock down the current process: filesystem, syscalls. Return the layers applied."""
    global _LANDLOCKED
    layers = []
    caps = probe()
    abi = int(caps["landlock_abi"]) if job.get("landlock", True) else 0
    if install_landlock(abi, job["read_paths"], [workdir, "/dev/null"]):
        _LANDLOCKED = True
        layers.append("landlock")
    processes = job["limits"]["max_processes"] > 0 or not untrusted_here
    # Without Landlock, writes cannot be confined to the working directory: forbid them all.
    deny_writes = untrusted_here and not _LANDLOCKED
    if install_seccomp(
        allow_processes=processes, restrict_signals=untrusted_here, deny_writes=deny_writes
    ):
        layers.append("seccomp-readonly" if deny_writes else "seccomp")
    return layers


def _clean_process(workdir: str, keep_fd: int) -> None:
    """Fresh cwd, no secrets in the environment, no inherited descriptors but ``keep_fd``."""
    os.dup2(keep_fd, 3)
    os.closerange(4, 65536)
    devnull = os.open("/dev/null", os.O_RDWR)
    os.dup2(devnull, 0)
    output = os.open(os.path.join(workdir, ".output"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.close(output)
    os.close(devnull)
    os.chdir(workdir)
    os.environ.clear()
    os.environ.update(
        {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": workdir,
            "TMPDIR": workdir,
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
        }
    )
    tempfile.tempdir = workdir
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - lives as long as the process
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115


def _run_sample(job: Job, workdir: str, result_fd: int) -> None:
    """The sandboxed process: lock down, then run the tests (never returns)."""
    with contextlib.suppress(OSError):
        os.setsid()
    _clean_process(workdir, result_fd)
    if job["mode"] == "stdio":
        layers = _isolate(job, workdir, untrusted_here=False)
        os.write(3, (json.dumps({"event": "layers", "layers": layers}) + "\n").encode())
        _run_stdio(job, workdir)
    _set_limits(job["limits"], job["wall_s"])
    layers = _isolate(job, workdir, untrusted_here=True)
    os.write(3, (json.dumps({"event": "layers", "layers": layers}) + "\n").encode())
    _harness.run_in_child(job, 3)


def _run_stdio(job: Job, workdir: str) -> None:
    """Run the program once per stdin case, each in its own locked-down grandchild."""
    send = _harness._Channel(3)
    send.send({"event": "start"})
    try:
        compiled = compile(job["code"], "<solution>", "exec")
    except (SyntaxError, ValueError) as exc:
        send.send({"event": "syntax-error", "error": f"{type(exc).__name__}: {exc}"[:1000]})
        os._exit(0)
    for index, stdin in enumerate(job["stdin"]):
        in_path = os.path.join(workdir, f".stdin{index}")
        out_path = os.path.join(workdir, f".stdout{index}")
        with open(in_path, "w") as fh:
            fh.write(stdin)
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the grandchild
            try:
                fd_in = os.open(in_path, os.O_RDONLY)
                fd_out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.dup2(fd_in, 0)
                os.dup2(fd_out, 1)
                os.close(fd_in)
                os.close(fd_out)
                os.close(3)
                sys.stdin = open(0, closefd=False)  # noqa: SIM115
                sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
                _set_limits(job["limits"], job["test_timeout"])
                install_seccomp(
                    allow_processes=job["limits"]["max_processes"] > 0,
                    restrict_signals=True,
                    deny_writes=not _LANDLOCKED,
                )
                exec(compiled, {"__name__": "__main__", "__builtins__": __builtins__})
                sys.stdout.flush()
            except SystemExit as exc:
                try:
                    sys.stdout.flush()
                except BaseException:
                    os._exit(1)
                os._exit(exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1))
            except BaseException as exc:
                with contextlib.suppress(BaseException):
                    os.write(2, f"{type(exc).__name__}: {exc}"[:1000].encode())
                os._exit(75 if isinstance(exc, MemoryError) else 1)
            os._exit(0)
        status, timed_out = _wait(pid, float(job["test_timeout"]))
        elapsed = time.perf_counter() - start
        record: Record = {"test": index, "time": elapsed}
        if timed_out:
            record.update({"status": "timeout", "error": f"over {job['test_timeout']}s"})
        elif os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            record.update({"status": "signal", "signal": sig, "error": f"killed by signal {sig}"})
        else:
            code = os.WEXITSTATUS(status)
            size = os.path.getsize(out_path) if os.path.exists(out_path) else 0
            if size >= job["limits"]["max_output_bytes"]:
                record.update({"status": "output", "error": f"printed {size} bytes or more"})
            elif code != 0:
                kind = "memory" if code == 75 else "error"
                record.update({"status": kind, "error": f"exit code {code}"})
            else:
                with open(out_path, "rb") as fh:
                    record.update({"status": "ok", "stdout": fh.read().decode("utf-8", "replace")})
        send.send(record)
        if record["status"] != "ok":
            os._exit(0)
    send.send({"event": "done"})
    os._exit(0)


def _wait(pid: int, timeout: float) -> tuple[int, bool]:
    """Wait for ``pid`` up to ``timeout`` seconds; kill it past that."""
    deadline = time.monotonic() + timeout
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = -1
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status, False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                os.kill(pid, signal.SIGKILL)
                return os.waitpid(pid, 0)[1], True
            if pidfd >= 0:
                select.select([pidfd], [], [], remaining)
            else:
                time.sleep(min(remaining, 0.002))
    finally:
        if pidfd >= 0:
            os.close(pidfd)


# --- the runner side ---------------------------------------------------------------------------


def _fork_sample(job: Job, workdir: str, write_fd: int) -> int:
    """Fork the child that enters the namespaces; return its pid."""
    runner = os.getpid()
    pid = os.fork()
    if pid != 0:
        return pid
    # pragma: no cover - everything below runs in the forked child
    try:
        _die_with_parent(runner)
        namespaces = list(job["shared_namespaces"])
        if job["namespaces"] and _wants_sample_namespaces(job):
            namespaces += enter_sample_namespaces()
        os.write(write_fd, (json.dumps({"event": "ns", "namespaces": namespaces}) + "\n").encode())
        if "pid" not in namespaces:
            _run_sample(job, workdir, write_fd)
        # In a new PID namespace the next child is its init (pid 1); that one forks the
        # sample, reaps whatever it leaves and dies with this process, taking the whole
        # namespace with it.
        init = os.fork()
        if init == 0:
            _die_with_parent(None)
            if "mnt" in namespaces and not fresh_proc():
                os._exit(114)
            sample = os.fork()
            if sample == 0:
                _run_sample(job, workdir, write_fd)
            os.close(write_fd)
            while True:
                try:
                    done, status = os.wait()
                except ChildProcessError:
                    os._exit(112)
                if done == sample:
                    os._exit(_status_code(status))
        os.close(write_fd)
        _, status = os.waitpid(init, 0)
        os._exit(_status_code(status))
    except BaseException:
        os._exit(113)


def _status_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


#: Time a step may overrun its budget before the runner kills the child: the child's own timer
#: (SIGALRM, at the budget) normally ends the test first and reports it.
STEP_MARGIN_S = 0.5
STEP_MARGIN_FACTOR = 0.1


def handle(job: Job) -> dict[str, Any]:
    """Run one sample in a fresh sandboxed child; return its raw report for the parent.

    The report: ``status`` (``eof``: the child finished; ``timeout``: the whole run's wall
    limit; ``step-timeout``: one test (or the loading) overran its own limit and the runner
    killed the child; ``result-limit``), ``exit`` (the child's exit code, 128 + signal when
    killed), ``data`` (its record lines, unparsed), ``wall_s``, ``output_tail``.
    """
    if job.get("mode") == "probe":
        return probe()
    limits = job["limits"]
    shared = _runner_namespaces() if job["namespaces"] else (_RUNNER_NAMESPACES or [])
    if job.get("bwrap"):  # the runner itself lives in a bubblewrap container
        shared = ["bwrap", *shared]
    job = job.copy()
    job["read_paths"], job["shared_namespaces"] = _read_paths(), shared
    # Inside the verifier's own temporary root, which it removes on close: a sample whose
    # runner was killed mid-run (timeout, cancellation) leaves nothing behind.
    workdir = tempfile.mkdtemp(prefix="sample-", dir=job.get("tmp_root"))
    read_fd, write_fd = os.pipe()
    start = time.monotonic()
    try:
        pid = _fork_sample(job, workdir, write_fd)
        os.close(write_fd)
        write_fd = -1
        watch = _Watch(step_budgets(job), start + float(job["wall_s"]) + float(limits["startup_s"]))
        data, status = _collect(read_fd, watch, int(limits["max_result_bytes"]))
        if status != "eof":
            _kill_sample(pid)
        # After EOF the child only exits; one that closed its pipe and kept running (or left
        # a process holding it) is held to the step it was in.
        remaining = max(watch.deadline() - time.monotonic(), 0.0) if status == "eof" else 0.0
        exit_status, waited_out = _wait(pid, remaining + 0.2)
        if waited_out and status == "eof":
            status = "step-timeout" if watch.step_bound else "timeout"
        output_tail = _tail(os.path.join(workdir, ".output"))
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "status": status,
        "exit": _status_code(exit_status),
        "data": data,
        "wall_s": time.monotonic() - start,
        "output_tail": output_tail,
        "capabilities": probe(),
    }


def _kill_sample(pid: int) -> None:
    """Kill the child and, without a PID namespace of its own, its process group."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # the sample is a session leader (setsid)


class _Watch:
    """Deadlines of a run: one per step (each line the child writes ends one) and the whole.

    Lines are counted, never parsed: a child that writes extra lines only moves on to later
    steps' budgets, never past the whole run's wall limit.
    """

    def __init__(self, budgets: list[float], wall_deadline: float) -> None:
        self._budgets = budgets
        self._wall = wall_deadline
        self._step = 0
        self._step_deadline = time.monotonic() + self._allowance(0)
        self.step_bound = False  # whether the last deadline returned was a step's

    def _allowance(self, step: int) -> float:
        budget = self._budgets[step] if step < len(self._budgets) else self._budgets[-1]
        return budget * (1 + STEP_MARGIN_FACTOR) + STEP_MARGIN_S

    def lines(self, count: int) -> None:
        """``count`` more lines arrived: the step now running began just now."""
        if count:
            self._step += count
            self._step_deadline = time.monotonic() + self._allowance(self._step)

    def deadline(self) -> float:
        """When the run must be stopped, as things stand."""
        self.step_bound = self._step_deadline < self._wall
        return min(self._step_deadline, self._wall)


def _collect(fd: int, watch: _Watch, cap: int) -> tuple[bytes, str]:
    """Read the child's lines until EOF, a deadline (``timeout``, ``step-timeout``) or ``cap``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        deadline = watch.deadline()
        remaining = deadline - time.monotonic()
        ready = select.select([fd], [], [], remaining)[0] if remaining > 0 else []
        if not ready:
            return b"".join(chunks), "step-timeout" if watch.step_bound else "timeout"
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks), "eof"
        size += len(chunk)
        if size > cap:
            return b"".join(chunks), "result-limit"
        chunks.append(chunk)
        watch.lines(chunk.count(b"\n"))


def _tail(path: str, size: int = 2000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            length = fh.tell()
            fh.seek(max(length - size, 0))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
