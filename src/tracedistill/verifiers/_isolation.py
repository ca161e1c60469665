"""The kernel's isolation layers, driven through ctypes: seccomp, Landlock, namespaces.

Each function applies one layer to the calling process and says whether the kernel allowed it;
:mod:`tracedistill.verifiers.sandbox` decides which ones a sample gets.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
import sys
from typing import Any

__all__ = [
    "ARCHES",
    "PR_SET_PDEATHSIG",
    "enter_sample_namespaces",
    "enter_shared_namespaces",
    "fresh_proc",
    "install_landlock",
    "install_seccomp",
    "landlock_abi",
    "lib",
]

# --- platform constants ---------------------------------------------------------------------

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUTS = 0x04000000
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_CLONE_THREAD = 0x00010000

PR_SET_PDEATHSIG = 1
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
ARCHES: dict[str, dict[str, Any]] = {
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


def lib() -> Any:
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


def install_seccomp(
    *, allow_processes: bool, restrict_signals: bool, deny_writes: bool = False
) -> bool:
    arch = ARCHES.get(platform.machine())
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
    libc = lib()
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return False
    return bool(libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) == 0)


# --- Landlock ----------------------------------------------------------------------------------

_LL_CREATE, _LL_ADD_RULE, _LL_RESTRICT = 444, 445, 446
_LL_RULE_PATH_BENEATH = 1
_LL_READ = (1 << 0) | (1 << 2) | (1 << 3)  # execute, read_file, read_dir
_LL_FILE_ONLY = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 14) | (1 << 15)


def landlock_abi() -> int:
    if not sys.platform.startswith("linux"):
        return 0
    value = lib().syscall(_LL_CREATE, None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
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


def install_landlock(abi: int, read_paths: list[str], write_paths: list[str]) -> bool:
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
    libc = lib()
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


# --- namespaces --------------------------------------------------------------------------------


def _unshare(flags: int) -> bool:
    return bool(lib().unshare(flags) == 0)


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


def enter_shared_namespaces() -> list[str]:
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


def enter_sample_namespaces() -> list[str]:
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


_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REC, _MS_PRIVATE = 2, 4, 8, 0x4000, 0x40000


def fresh_proc() -> bool:
    """In new mount and PID namespaces: a /proc that shows only this namespace's processes."""
    libc = lib()
    if libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        return False
    flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    return bool(libc.mount(b"proc", b"/proc", b"proc", flags, None) == 0)
