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

The runner kills the whole child (and its namespace) at the wall-time limit. See
``docs/sandbox.md`` for what is and is not isolated.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import platform
import resource
import select
import shutil
import signal
import struct
import sys
import tempfile
import time
from typing import Any

import attrs

from tracedistill.verifiers import _harness
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


# --- platform constants ---------------------------------------------------------------------

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUTS = 0x04000000
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_CLONE_THREAD = 0x00010000

_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2

_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000

_AF_UNIX = 1

# Syscall numbers of the calls the filter looks at, per architecture. "deny": ptrace,
# process_vm_readv/writev, mount, umount2, pivot_root, chroot, unshare, setns, bpf,
# perf_event_open, keyctl, add_key, request_key, userfaultfd, io_uring_setup/enter/register,
# pidfd_send_signal, pidfd_getfd, kexec_load, kexec_file_load, init_module, finit_module,
# delete_module, reboot, swapon, swapoff, acct, settimeofday, clock_settime, the setuid/setgid
# family, and the creation of SysV IPC objects and POSIX message queues (they would outlive a
# sample in the IPC namespace its runner shares). "write": calls that create, change or remove
# files (used when Landlock is unavailable, so writes cannot be confined to the working
# directory). "open": the open calls and the index of their flags argument.
# fmt: off
_ARCHES: dict[str, dict[str, Any]] = {
    "x86_64": {
        "audit": 0xC000003E, "socket": 41, "clone": 56, "fork": 57, "vfork": 58, "clone3": 435,
        "kill": 62, "tkill": 200, "tgkill": 234, "openat2": 437,
        "deny": [101, 310, 311, 165, 166, 155, 161, 272, 308, 321, 298, 250, 248, 249, 323,
                 425, 426, 427, 424, 438, 246, 320, 175, 313, 176, 169, 167, 168, 163, 164,
                 227, 105, 106, 113, 114, 117, 119, 29, 64, 68, 240],
        "write": [85, 87, 263, 82, 264, 316, 83, 258, 84, 86, 265, 88, 266, 90, 91, 268, 452,
                  92, 93, 94, 260, 76, 77, 133, 259, 132, 235, 280, 261, 188, 189, 190, 197,
                  198, 199],
        "open": {2: 1, 257: 2},
    },
    "aarch64": {
        "audit": 0xC00000B7, "socket": 198, "clone": 220, "fork": None, "vfork": None,
        "clone3": 435, "kill": 129, "tkill": 130, "tgkill": 131, "openat2": 437,
        "deny": [117, 270, 271, 40, 39, 41, 51, 97, 268, 280, 241, 219, 217, 218, 282, 425,
                 426, 427, 424, 438, 104, 294, 105, 273, 106, 142, 224, 225, 89, 170, 112,
                 146, 144, 145, 143, 147, 149, 194, 190, 186, 180],
        "write": [35, 38, 276, 34, 37, 36, 52, 53, 452, 54, 55, 45, 46, 33, 88, 5, 6, 7, 14,
                  15, 16],
        "open": {56: 2},
    },
}
# fmt: on
_OPEN_WRITE_FLAGS = 0o1 | 0o2 | 0o100 | 0o1000 | 0o2000  # O_WRONLY O_RDWR O_CREAT O_TRUNC O_APPEND

_libc: Any = None


def _lib() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


# --- seccomp -----------------------------------------------------------------------------------


def _bpf(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JSET_K = 0x45
_RET_K = 0x06


class _Program:
    """A tiny BPF assembler with forward labels."""

    def __init__(self) -> None:
        self.ops: list[tuple[int, int | str, int | str, int]] = []
        self.labels: dict[str, int] = {}

    def op(self, code: int, k: int, jt: int | str = 0, jf: int | str = 0) -> None:
        self.ops.append((code, jt, jf, k))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.ops)

    def assemble(self) -> bytes:
        out = []
        for index, (code, jt, jf, k) in enumerate(self.ops):

            def target(jump: int | str, index: int = index) -> int:
                if isinstance(jump, str):
                    offset = self.labels[jump] - index - 1
                    if not 0 <= offset < 256:
                        raise ValueError("BPF jump out of range")
                    return offset
                return jump

            out.append(_bpf(code, target(jt), target(jf), k))
        return b"".join(out)


def _seccomp_program(
    arch: dict[str, Any], *, allow_processes: bool, own_pid: int | None, deny_writes: bool = False
) -> bytes:
    """Build the filter; ``own_pid`` set means signals may only target this process."""
    p = _Program()
    p.op(_LD_W_ABS, 4)  # seccomp_data.arch
    p.op(_JEQ_K, arch["audit"], "arch_ok", "kill")
    p.label("arch_ok")
    p.op(_LD_W_ABS, 0)  # seccomp_data.nr
    if arch["audit"] == 0xC000003E:
        p.op(0x35, 0x40000000, "kill", 0)  # JGE: x32 syscalls
    for number in arch["deny"]:
        p.op(_JEQ_K, number, "kill", 0)
    p.op(_JEQ_K, arch["socket"], "socket", 0)
    p.op(_JEQ_K, arch["clone3"], "enosys", 0)
    if deny_writes:
        for number in arch["write"]:
            p.op(_JEQ_K, number, "eacces", 0)
        p.op(_JEQ_K, arch["openat2"], "enosys", 0)  # flags hidden in a struct: refuse
        for number, flag_arg in arch["open"].items():
            p.op(_JEQ_K, number, f"open{flag_arg}", 0)
    if not allow_processes:
        for name in ("fork", "vfork"):
            if arch[name] is not None:
                p.op(_JEQ_K, arch[name], "kill", 0)
        p.op(_JEQ_K, arch["clone"], "clone", 0)
    if own_pid is not None:
        p.op(_JEQ_K, arch["kill"], "kill_call", 0)
        p.op(_JEQ_K, arch["tkill"], "own_target", 0)
        p.op(_JEQ_K, arch["tgkill"], "own_target", 0)
    p.op(_RET_K, _RET_ALLOW)
    # socket(domain, ...): only AF_UNIX
    p.label("socket")
    p.op(_LD_W_ABS, 16)  # args[0], low 32 bits
    p.op(_JEQ_K, _AF_UNIX, "allow", "kill")
    if not allow_processes:
        p.label("clone")  # threads (CLONE_THREAD) yes, processes no
        p.op(_LD_W_ABS, 16)
        p.op(_JSET_K, _CLONE_THREAD, "allow", "kill")
    if own_pid is not None:
        p.label("kill_call")  # kill(pid, sig): pid 0 (own group) or own pid
        p.op(_LD_W_ABS, 16)
        p.op(_JEQ_K, 0, "allow", 0)
        p.op(_JEQ_K, own_pid, "allow", "kill")
        p.label("own_target")
        p.op(_LD_W_ABS, 16)
        p.op(_JEQ_K, own_pid, "allow", "kill")
    if deny_writes:
        for flag_arg in sorted(set(arch["open"].values())):
            p.label(f"open{flag_arg}")  # open for reading only
            p.op(_LD_W_ABS, 16 + 8 * flag_arg)
            p.op(_JSET_K, _OPEN_WRITE_FLAGS, "eacces", "allow")
        p.label("eacces")
        p.op(_RET_K, _RET_ERRNO | errno.EACCES)
    p.label("enosys")  # glibc falls back from clone3 to clone, which the filter can inspect
    p.op(_RET_K, _RET_ERRNO | errno.ENOSYS)
    p.label("allow")
    p.op(_RET_K, _RET_ALLOW)
    p.label("kill")
    p.op(_RET_K, _RET_KILL_PROCESS)
    return p.assemble()


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _install_seccomp(
    *, allow_processes: bool, restrict_signals: bool, deny_writes: bool = False
) -> bool:
    arch = _ARCHES.get(platform.machine())
    if arch is None or not sys.platform.startswith("linux"):
        return False
    program = _seccomp_program(
        arch,
        allow_processes=allow_processes,
        own_pid=os.getpid() if restrict_signals else None,
        deny_writes=deny_writes,
    )
    buffer = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    libc = _lib()
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return False
    return bool(libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) == 0)


# --- Landlock ----------------------------------------------------------------------------------

_LL_CREATE, _LL_ADD_RULE, _LL_RESTRICT = 444, 445, 446
_LL_RULE_PATH_BENEATH = 1
_LL_READ = (1 << 0) | (1 << 2) | (1 << 3)  # execute, read_file, read_dir
_LL_FILE_ONLY = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 14) | (1 << 15)


def _landlock_abi() -> int:
    if not sys.platform.startswith("linux"):
        return 0
    value = _lib().syscall(_LL_CREATE, None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
    return int(value) if value > 0 else 0


def _landlock_fs_rights(abi: int) -> int:
    rights = (1 << 13) - 1  # v1: execute .. make_sym
    if abi >= 2:
        rights |= 1 << 13  # refer
    if abi >= 3:
        rights |= 1 << 14  # truncate
    if abi >= 5:
        rights |= 1 << 15  # ioctl_dev
    return rights


def _install_landlock(abi: int, read_paths: list[str], write_paths: list[str]) -> bool:
    if abi <= 0:
        return False
    handled = _landlock_fs_rights(abi)
    net = 0b11 if abi >= 4 else 0  # bind_tcp, connect_tcp: handled and never allowed
    scoped = 0b11 if abi >= 6 else 0  # abstract unix sockets, signals
    if abi >= 6:
        attr = struct.pack("QQQ", handled, net, scoped)
    elif abi >= 4:
        attr = struct.pack("QQ", handled, net)
    else:
        attr = struct.pack("Q", handled)
    libc = _lib()
    buf = ctypes.create_string_buffer(attr, len(attr))
    ruleset = libc.syscall(_LL_CREATE, buf, len(attr), 0)
    if ruleset < 0:
        return False
    try:
        for path, rights in [(p, _LL_READ) for p in read_paths] + [
            (p, handled) for p in write_paths
        ]:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                allowed = rights
                if not os.path.isdir(path):
                    allowed &= _LL_FILE_ONLY
                rule = struct.pack("=Qi", allowed & handled, fd)
                rule_buf = ctypes.create_string_buffer(rule, len(rule))
                if libc.syscall(_LL_ADD_RULE, ruleset, _LL_RULE_PATH_BENEATH, rule_buf, 0) != 0:
                    return False
            finally:
                os.close(fd)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return False
        return bool(libc.syscall(_LL_RESTRICT, ruleset, 0) == 0)
    finally:
        os.close(ruleset)


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


def _read_paths() -> list[str]:
    """What the child may read: the Python installation, its import path, system libraries."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths.update(p for p in sys.path if p and os.path.isabs(p))
    paths.update(SYSTEM_PATHS)
    paths.update(["/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"])
    return sorted(p for p in paths if os.path.exists(p))


# --- namespaces --------------------------------------------------------------------------------


def _unshare(flags: int) -> bool:
    return bool(_lib().unshare(flags) == 0)


def _unshare_first(attempts: list[tuple[int, list[str]]]) -> list[str]:
    """Enter the first set of namespaces the kernel allows; return their names."""
    uid, gid = os.getuid(), os.getgid()
    for flags, entered in attempts:
        if not _unshare(flags):
            continue
        if flags & _CLONE_NEWUSER:
            try:
                with open("/proc/self/setgroups", "w") as fh:
                    fh.write("deny")
                with open("/proc/self/uid_map", "w") as fh:
                    fh.write(f"{uid} {uid} 1")
                with open("/proc/self/gid_map", "w") as fh:
                    fh.write(f"{gid} {gid} 1")
            except OSError:
                pass
        return entered
    return []


def _enter_shared_namespaces() -> list[str]:
    """Namespaces a runner enters once and its samples share: network, IPC, UTS.

    Creating a network namespace per sample is slow (the kernel serializes their teardown), and
    samples of one runner never overlap in time: each one's processes are all dead before the
    next starts, and the seccomp filter forbids the SysV/POSIX IPC that could outlive them.
    """
    if not sys.platform.startswith("linux"):
        return []
    shared = _CLONE_NEWNET | _CLONE_NEWIPC | _CLONE_NEWUTS
    if os.getuid() == 0:
        return _unshare_first([(shared, ["net", "ipc", "uts"])])
    return _unshare_first(
        [
            (shared | _CLONE_NEWUSER, ["user", "net", "ipc", "uts"]),
            (_CLONE_NEWNET | _CLONE_NEWUSER, ["user", "net"]),
        ]
    )


def _enter_sample_namespaces() -> list[str]:
    """Namespaces each sample gets for itself: PID (kill-all on exit) and mount (own /proc)."""
    if not sys.platform.startswith("linux"):
        return []
    return _unshare_first(
        [
            (_CLONE_NEWPID | _CLONE_NEWNS, ["pid", "mnt"]),
            (_CLONE_NEWPID, ["pid"]),
            # Without capabilities (inside bubblewrap) a user namespace of its own grants them.
            # No new /proc there: the kernel refuses one under bubblewrap's read-only
            # overmounts, and bubblewrap's /proc shows only the runner's own processes anyway.
            (_CLONE_NEWUSER | _CLONE_NEWPID, ["user", "pid"]),
        ]
    )


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
        _RUNNER_NAMESPACES = _enter_shared_namespaces()
    return _RUNNER_NAMESPACES


_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REC, _MS_PRIVATE = 2, 4, 8, 0x4000, 0x40000


def _fresh_proc() -> bool:
    """In new mount and PID namespaces: a /proc that shows only this namespace's processes."""
    libc = _lib()
    if libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        return False
    flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    return bool(libc.mount(b"proc", b"/proc", b"proc", flags, None) == 0)


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
            names = _enter_shared_namespaces() + _enter_sample_namespaces()
            found: dict[str, Any] = {"namespaces": names}
            found["landlock_abi"] = _landlock_abi()
            found["seccomp"] = _install_seccomp(allow_processes=True, restrict_signals=False)
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
    _lib().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
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
    if _install_landlock(abi, job["read_paths"], [workdir, "/dev/null"]):
        _LANDLOCKED = True
        layers.append("landlock")
    processes = job["limits"]["max_processes"] > 0 or not untrusted_here
    # Without Landlock, writes cannot be confined to the working directory: forbid them all.
    deny_writes = untrusted_here and not _LANDLOCKED
    if _install_seccomp(
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
                _install_seccomp(
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
            namespaces += _enter_sample_namespaces()
        os.write(write_fd, (json.dumps({"event": "ns", "namespaces": namespaces}) + "\n").encode())
        if "pid" not in namespaces:
            _run_sample(job, workdir, write_fd)
        # In a new PID namespace the next child is its init (pid 1); that one forks the
        # sample, reaps whatever it leaves and dies with this process, taking the whole
        # namespace with it.
        init = os.fork()
        if init == 0:
            _die_with_parent(None)
            if "mnt" in namespaces and not _fresh_proc():
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
