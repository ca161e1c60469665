"""The bubblewrap backend: runners in a bwrap container that holds none of the host's files."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tracedistill.errors import SandboxError
from tracedistill.records import CodeTests, FunctionTests, Problem, TaskKind
from tracedistill.verifiers import CodeVerifier, _bubblewrap
from tracedistill.verifiers._bubblewrap import bubblewrap_command, find_bubblewrap

pytestmark = pytest.mark.anyio

needs_bwrap = pytest.mark.skipif(
    find_bubblewrap() is None,
    reason="bubblewrap (bwrap) is not installed: apt install bubblewrap (.ci/run does)",
)

LOOK = Problem(
    id="look",
    kind=TaskKind.CODE,
    prompt="What can you see?",
    tests=CodeTests(
        function=FunctionTests(entry_point="look", base_inputs=[[]], expected_base=["nothing"])
    ),
)


def test_command_binds_only_what_a_runner_needs(tmp_path: Path) -> None:
    command = bubblewrap_command("/usr/bin/bwrap", ["python", "-c", "pass"], tmp_dir=str(tmp_path))
    binds = {command[i + 1] for i, arg in enumerate(command) if arg == "--ro-bind"}
    assert sys.base_prefix in binds or any(sys.base_prefix.startswith(b + "/") for b in binds)
    assert not any(b in ("/", "/home", "/root", "/etc", os.path.expanduser("~")) for b in binds)
    assert command[command.index("--bind") + 1 : command.index("--bind") + 3] == [
        str(tmp_path),
        "/tmp",
    ]
    assert {"--unshare-all", "--die-with-parent", "--cap-drop"} <= set(command)
    assert command[-3:] == ["python", "-c", "pass"]


@needs_bwrap
async def test_runner_sees_no_host_file(tmp_path: Path) -> None:
    planted = tmp_path / "host-file.txt"
    planted.write_text("host data")
    code = (
        "import os\ndef look():\n"
        f"    seen = [p for p in ({str(planted)!r}, {str(tmp_path)!r}, "
        f"{os.path.join(os.getcwd(), 'pyproject.toml')!r}, {os.path.join(os.getcwd(), '.git')!r},"
        " '/etc/passwd', '/etc/hostname') if os.path.exists(p)]\n"
        "    return 'nothing' if not seen else repr(seen)\n"
    )
    async with CodeVerifier(workers=1, cache_dir=tmp_path / "c", bubblewrap=True) as verifier:
        caps = await verifier.capabilities()
        assert caps["bubblewrap"] and {"net", "pid", "user"} <= set(caps["namespaces"])
        result = await verifier.check_code(LOOK, code)
        assert result.passed, result.details
        assert result.details["sandbox"].startswith("bwrap")
        # the same code outside bubblewrap sees the host's root (only Landlock hides it)
    async with CodeVerifier(
        workers=1, cache_dir=tmp_path / "c", bubblewrap=False, landlock=False
    ) as verifier:
        assert not (await verifier.check_code(LOOK, code)).passed


async def test_bubblewrap_required_but_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tracedistill.verifiers.code.find_bubblewrap", lambda: None)
    verifier = CodeVerifier(workers=1, cache_dir=tmp_path, bubblewrap=True)
    with pytest.raises(SandboxError, match="bubblewrap"):
        await verifier.start()
    await verifier.aclose()
    # by default a missing bwrap only means the in-process layers alone
    async with CodeVerifier(workers=1, cache_dir=tmp_path) as verifier:
        assert (await verifier.capabilities())["bubblewrap"] is None


@needs_bwrap
async def test_bubblewrap_that_cannot_run_is_reported(tmp_path: Path) -> None:
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    problem = _bubblewrap.bubblewrap_problem(str(fake))
    assert problem is not None and "No permissions" in problem


@needs_bwrap
async def test_installed_bubblewrap_is_used_by_default(tmp_path: Path) -> None:
    # An installed bwrap that cannot run is only a warning for users; here it is a failure, so
    # that a broken backend cannot hide behind the fallback.
    found = find_bubblewrap()
    assert found is not None
    assert _bubblewrap.bubblewrap_problem(found) is None
    async with CodeVerifier(workers=1, cache_dir=tmp_path) as verifier:
        assert (await verifier.capabilities())["bubblewrap"] == found
