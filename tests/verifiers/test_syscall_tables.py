"""The seccomp filter's syscall numbers, checked against the kernel's own headers.

The aarch64 filter cannot run here; its numbers are checked by name instead: both tables must
name the same calls, except the legacy calls aarch64 never had (open, fork, mkdir ...).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tracedistill.verifiers._isolation import ARCHES

HEADERS = {
    "x86_64": Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h"),
    "aarch64": Path("/usr/include/asm-generic/unistd.h"),
}
needs_headers = pytest.mark.skipif(
    not all(path.exists() for path in HEADERS.values()),
    reason="kernel headers not found (Debian: linux-libc-dev)",
)
# Calls newer than some distributions' headers: number -> name (the same on both).
NEWER = {452: "fchmodat2"}
# x86_64's legacy calls; aarch64 has only their *at forms, which both tables list.
X86_ONLY = {
    "open", "fork", "vfork", "creat", "unlink", "rename", "mkdir", "rmdir", "link", "symlink",
    "chmod", "chown", "lchown", "mknod", "utime", "utimes", "futimesat",
}  # fmt: skip


def _names(arch: str) -> dict[int, set[str]]:
    text = HEADERS[arch].read_text()
    defs = dict(re.findall(r"#define (__NR3264_\w+|__NR_\w+)\s+(\S+)", text))

    def value(name: str, depth: int = 0) -> int | None:
        raw = defs.get(name)
        if raw is None or depth > 5:
            return None
        return int(raw) if raw.isdigit() else value(raw, depth + 1)

    table: dict[int, set[str]] = {number: {name} for number, name in NEWER.items()}
    for name in defs:
        number = value(name) if name.startswith("__NR_") else None
        if number is not None:
            table.setdefault(number, set()).add(name.removeprefix("__NR_"))
    return table


def _named(arch: str) -> dict[str, set[str]]:
    names, spec = _names(arch), ARCHES[arch]

    def of(number: int) -> str:
        found = names.get(number)
        assert found, f"{arch}: no syscall numbered {number}"
        return min(found, key=len)  # truncate, not truncate64

    named = {key: {of(n) for n in spec[key]} for key in ("deny", "write")}
    named["open"] = {of(n) for n in spec["open"]}
    for key in ("socket", "clone", "fork", "vfork", "clone3", "kill", "tkill", "tgkill", "openat2"):
        if spec[key] is not None:
            named[key] = {of(spec[key])}
            assert named[key] == {key}, f"{arch}: {key} is numbered {spec[key]}: {named[key]}"
    return named


@needs_headers
def test_both_filters_name_the_same_calls() -> None:
    x86, arm = _named("x86_64"), _named("aarch64")
    assert x86["deny"] == arm["deny"]
    assert x86["write"] - X86_ONLY == arm["write"]
    assert x86["open"] - X86_ONLY == arm["open"] == {"openat"}
    assert {"fork", "vfork"} <= set(x86) and "fork" not in arm
