"""The bubblewrap backend: start each sandbox runner inside its own ``bwrap`` container.

With it, a runner (and so every sample it forks) sees a filesystem made only of read-only
binds of the Python installation, the import path of tracedistill and the system libraries, a
private ``/dev`` and ``/proc``, and a ``/tmp`` that is a fresh directory of its own; every
namespace bubblewrap supports is new (user, mount, PID, network, IPC, UTS, cgroup) and every
capability is dropped. The in-process layers (Landlock, seccomp, resource limits) still apply
to each sample on top of it.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import site
import subprocess
import sys
import tempfile
from collections.abc import Sequence

from tracedistill.verifiers.sandbox import SYSTEM_PATHS

__all__ = ["bubblewrap_command", "bubblewrap_problem", "find_bubblewrap"]

log = logging.getLogger(__name__)


def find_bubblewrap() -> str | None:
    """The path of the ``bwrap`` executable, or None when it is not installed."""
    return shutil.which("bwrap")


def _import_root() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.dirname(os.path.dirname(here))


def _visible_paths() -> list[str]:
    """What the runner must see: the interpreter, its packages, tracedistill, system files."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, _import_root()}
    paths.update(site.getsitepackages())
    paths.update(SYSTEM_PATHS)
    existing = sorted(p for p in paths if os.path.lexists(p))
    # A path inside another bound path comes with it (binding it again would be harmless but
    # makes the command longer).
    kept: list[str] = []
    for path in existing:
        if not any(path.startswith(parent.rstrip("/") + "/") for parent in kept):
            kept.append(path)
    return kept


def bubblewrap_command(bwrap: str, command: Sequence[str], *, tmp_dir: str) -> list[str]:
    """``command`` wrapped in bubblewrap, with ``tmp_dir`` (on the host) as its ``/tmp``."""
    args = [
        bwrap,
        "--die-with-parent",
        "--new-session",
        "--unshare-all",
        "--cap-drop",
        "ALL",
        "--hostname",
        "sandbox",
    ]
    # /tmp first: the Python installation may itself live under /tmp (a CI checkout's venv),
    # and a bind made later covers it.
    args += ["--dev", "/dev", "--proc", "/proc", "--bind", tmp_dir, "/tmp"]
    for path in _visible_paths():
        if os.path.islink(path) and path in SYSTEM_PATHS:
            # merged /usr: /lib -> usr/lib and the like stay symlinks inside
            args += ["--symlink", os.readlink(path), path]
        else:
            args += ["--ro-bind", path, path]
    return [*args, "--chdir", "/tmp", "--", *command]


@functools.lru_cache(maxsize=4)
def bubblewrap_problem(bwrap: str) -> str | None:
    """Why bubblewrap cannot run a sandbox here (None when it can), from one trial run."""
    with tempfile.TemporaryDirectory(prefix="tracedistill-bwrap-probe-") as tmp:
        command = bubblewrap_command(
            bwrap, [sys.executable, "-I", "-c", "import os; os.listdir('/tmp')"], tmp_dir=tmp
        )
        try:
            done = subprocess.run(command, capture_output=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{type(exc).__name__}: {exc}"
    if done.returncode != 0:
        text = done.stderr.decode("utf-8", "replace").strip()[-500:]
        return f"exit code {done.returncode}: {text or 'no message'}"
    return None
