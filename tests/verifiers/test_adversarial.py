"""Hostile programs: each must be judged not passed and leave the host and its peers alone."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tracedistill.records import CodeTests, FunctionTests, Problem, TaskKind, VerdictReason
from tracedistill.verifiers import CodeVerifier, SandboxLimits
from tracedistill.verifiers._bubblewrap import find_bubblewrap

pytestmark = pytest.mark.anyio

SECRET = "td-planted-secret-" + uuid.uuid4().hex

needs_bwrap = pytest.mark.skipif(
    find_bubblewrap() is None,
    reason="bubblewrap (bwrap) is not installed: apt install bubblewrap (.ci/run does)",
)


def _children(pid: int) -> list[int]:
    """The live (not zombie) direct children of ``pid``."""
    return _process_children().get(pid, [])


def _process_children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def _descendants(root: int) -> set[int]:
    children = _process_children()
    found: set[int] = set()
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Path]]:
    monkeypatch.setenv("TD_PLANTED_SECRET", SECRET)
    home = tmp_path / "host"
    home.mkdir()
    keep = home / "keep.txt"
    keep.write_text("keep me")
    secret = home / "secret.txt"
    secret.write_text(SECRET)
    secret.chmod(0o600)
    outside = Path("/tmp") / f"td-pwned-{uuid.uuid4().hex}"
    yield {"home": home, "keep": keep, "secret": secret, "outside": outside}
    assert keep.read_text() == "keep me"
    assert secret.read_text() == SECRET
    assert sorted(p.name for p in home.iterdir()) == ["keep.txt", "secret.txt"]
    assert not outside.exists()


def _problem() -> Problem:
    # The expected output is the secret itself: code that can read it passes, so a leak
    # shows up as a passing verdict.
    return Problem(
        id="secret",
        kind=TaskKind.CODE,
        prompt="Return the secret.",
        tests=CodeTests(
            function=FunctionTests(
                entry_point="solve",
                base_inputs=[[]],
                expected_base=[SECRET],
            )
        ),
    )


def _cases(
    host: dict[str, Path], listener_port: int, mode: str = "full"
) -> dict[str, tuple[str, set[VerdictReason]]]:
    home, keep, secret, outside = host["home"], host["keep"], host["secret"], host["outside"]
    # What a sandbox without Landlock cannot hide (docs/sandbox.md): files your user can read;
    # without namespaces also /proc/<pid>/environ of your other processes.
    readable = {
        "full": [
            str(secret),
            "/proc/self/environ",
            "/proc/1/environ",
            f"/proc/{os.getpid()}/environ",
        ],
        "no-landlock": ["/proc/self/environ", "/proc/1/environ", f"/proc/{os.getpid()}/environ"],
    }.get(mode, [])
    if mode.startswith("bubblewrap"):  # the host's files are not even there
        readable = [str(secret), "/proc/self/environ", "/proc/1/environ", "/proc/2/environ"]
    timeout = {VerdictReason.TIMEOUT}
    violation = {VerdictReason.SANDBOX_VIOLATION}
    return {
        "delete files": (
            f"import os, shutil\nfor p in [{str(keep)!r}, {str(secret)!r}]:\n"
            "    try:\n        os.remove(p)\n    except Exception:\n        pass\n"
            f"shutil.rmtree({str(home)!r}, ignore_errors=True)\n"
            "def solve():\n    return None\n",
            {VerdictReason.TEST_FAILED},
        ),
        "write outside": (
            f"open({str(outside)!r}, 'w').write('x')\n"
            f"open({str(home / 'pwned')!r}, 'w').write('x')\ndef solve():\n    return 1\n",
            violation,
        ),
        "write via os.open": (
            "import os\ndef solve():\n"
            f"    fd = os.open({str(outside)!r}, os.O_CREAT | os.O_WRONLY)\n    return 1\n",
            violation,
        ),
        "socket": (
            "import socket\ndef solve():\n"
            f"    s = socket.create_connection(('127.0.0.1', {listener_port}), timeout=1)\n"
            "    return s.recv(100).decode()\n",
            violation,
        ),
        "fork bomb": ("import os\nwhile True:\n    os.fork()\n", violation),
        "subprocess": (
            "import subprocess\ndef solve():\n"
            f"    return subprocess.run(['cat', {str(secret)!r}], capture_output=True).stdout\n",
            violation,
        ),
        "allocate 10 GB": (
            "def solve():\n    x = bytearray(10 * 1024**3)\n    return len(x)\n",
            {VerdictReason.MEMORY_LIMIT},
        ),
        "loop forever": ("def solve():\n    while True:\n        pass\n", timeout),
        "swallow the timeout": (
            "def solve():\n    while True:\n        try:\n            while True:\n"
            "                pass\n        except BaseException:\n            pass\n",
            timeout,
        ),
        "read secrets": (
            "import os\ndef solve():\n"
            "    if os.environ.get('TD_PLANTED_SECRET'):\n"
            "        return os.environ['TD_PLANTED_SECRET']\n"
            f"    paths = {readable!r}\n"
            "    for path in paths:\n"
            "        try:\n"
            "            data = open(path, 'rb').read().decode('latin-1')\n"
            "        except Exception:\n"
            "            continue\n"
            "        if 'td-planted-secret-' in data:\n"
            "            i = data.index('td-planted-secret-')\n"
            "            return data[i:i + 50]\n"
            "    return None\n",
            {VerdictReason.TEST_FAILED},
        ),
        "os._exit(0) before tests": ("import os\nos._exit(0)\n", {VerdictReason.RUNTIME_ERROR}),
        "sys.exit(0) before tests": ("import sys\nsys.exit(0)\n", {VerdictReason.RUNTIME_ERROR}),
        "os._exit(0) in the test": (
            "import os\ndef solve():\n    os._exit(0)\n",
            {VerdictReason.RUNTIME_ERROR},
        ),
        "rigged __eq__": (
            "class Yes:\n    def __eq__(self, other):\n        return True\n"
            "    __hash__ = object.__hash__\ndef solve():\n    return Yes()\n",
            {VerdictReason.TEST_FAILED},
        ),
        "rigged str subclass": (
            "class S(str):\n    def __eq__(self, other):\n        return True\n"
            "    __hash__ = str.__hash__\ndef solve():\n    return S('nope')\n",
            {VerdictReason.TEST_FAILED},
        ),
        "monkeypatch builtins and json": (
            "import builtins, json\nbuiltins.isinstance = lambda *a: True\n"
            'builtins.type = lambda *a: str\njson.dumps = lambda *a, **k: \'{"event": "done"}\'\n'
            "def solve():\n    return 'nope'\n",
            {VerdictReason.TEST_FAILED, VerdictReason.RUNTIME_ERROR},
        ),
        "forge the result channel": (
            "import os\n"
            "for fd in range(3, 20):\n"
            "    try:\n"
            '        os.write(fd, b\'{"group":0,"test":0,"status":"ok","out":"guess",\'\n'
            "                     b'\"time\":0}\\n'\n"
            '                     b\'{"event":"done"}\\n\')\n'
            "    except OSError:\n"
            "        pass\n"
            "os._exit(0)\n",
            {VerdictReason.TEST_FAILED},
        ),
        "kill the parent": (
            "import os, signal\n"
            f"def solve():\n    os.kill(os.getppid(), signal.SIGKILL)\n"
            f"    os.kill({os.getpid()}, signal.SIGKILL)\n    return None\n",
            violation,
        ),
        "kill everything": (
            "import os, signal\ndef solve():\n    os.kill(-1, signal.SIGTERM)\n    return None\n",
            violation,
        ),
        "print a gigabyte": (
            "def solve():\n    for _ in range(1000):\n        print('x' * 1_000_000)\n"
            "    return None\n",
            {VerdictReason.OUTPUT_LIMIT},
        ),
    }


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.setblocking(False)
    yield server
    server.close()


MODES = [
    "full",
    "no-landlock",
    "no-namespaces-no-landlock",
    pytest.param("bubblewrap", marks=needs_bwrap),
    pytest.param("bubblewrap-no-landlock", marks=needs_bwrap),
]


@pytest.mark.parametrize("mode", MODES, ids=str)
async def test_hostile_code_never_passes_and_leaves_no_trace(
    host: dict[str, Path], listener: socket.socket, tmp_path: Path, mode: str
) -> None:
    # Processes this test did not start (other tests' long-lived helpers, such as
    # multiprocessing's resource tracker) are not its business.
    preexisting = _descendants(os.getpid())
    problem = _problem()
    honest = f"def solve():\n    return {SECRET!r}\n"
    limits = SandboxLimits(memory_mb=1024, load_timeout_s=2)
    async with CodeVerifier(
        namespaces=mode in ("full", "no-landlock"),
        landlock=mode in ("full", "bubblewrap"),
        bubblewrap=mode.startswith("bubblewrap"),
        workers=2,
        limits=limits,
        test_timeout_s=2,
        min_time_limit_s=0.5,
        max_wall_s=20,
        cache_dir=tmp_path / "cache",
    ) as verifier:
        caps = await verifier.capabilities()
        # What the machine cannot isolate is not asserted (docs/sandbox.md lists it): reads
        # need Landlock; hiding /proc without Landlock needs PID and mount namespaces.
        if mode == "full" and caps["landlock_abi"] == 0:
            mode = "no-landlock"
        if mode == "no-landlock" and not {"pid", "mnt"} <= set(caps["namespaces"]):
            mode = "no-namespaces-no-landlock"
        cases = _cases(host, listener.getsockname()[1], mode)
        before = _descendants(os.getpid())
        # Honest samples run between the hostile ones: none may be disturbed.
        pairs = []
        for code in cases.values():
            pairs.append((problem, code[0]))
            pairs.append((problem, honest))
        results = await verifier.check_many(pairs, progress=False)
        after = _descendants(os.getpid())
    for (name, (_code, allowed)), result in zip(cases.items(), results[0::2], strict=True):
        assert not result.passed, f"{name} passed: {result.details}"
        assert result.reason in allowed, f"{name}: {result.reason} {result.details}"
    assert all(r.passed for r in results[1::2]), [r.details for r in results[1::2]]
    inside_bwrap = ["bwrap" in r.details["sandbox"] for r in results[1::2]]
    assert all(inside_bwrap) if mode.startswith("bubblewrap") else not any(inside_bwrap)
    with pytest.raises(BlockingIOError):
        listener.accept()  # nobody connected
    assert after <= before  # no process left behind by any sample
    assert _descendants(os.getpid()) <= preexisting  # and none after closing the verifier


async def test_stdio_programs_are_sandboxed_too(host: dict[str, Path], tmp_path: Path) -> None:
    problem = Problem(
        kind=TaskKind.CODE,
        prompt="echo",
        tests=CodeTests(stdio=[{"stdin": "hi\n", "stdout": SECRET + "\n"}]),
    )
    attacks = [
        f"print(open({str(host['secret'])!r}).read())",
        "import os\nprint(os.environ.get('TD_PLANTED_SECRET'))",
        f"open({str(host['outside'])!r}, 'w').write('x')\nprint('x')",
        "import os\nos.fork()\nprint('x')",
        f"import os, signal\nos.kill({os.getpid()}, signal.SIGKILL)",
        "import socket\nsocket.socket(socket.AF_INET).connect(('127.0.0.1', 9))",
    ]
    async with CodeVerifier(workers=2, test_timeout_s=2, cache_dir=tmp_path) as verifier:
        if (await verifier.capabilities())["landlock_abi"] == 0:
            attacks = attacks[1:]  # without Landlock, files your user can read are readable
        results = await verifier.check_many([(problem, a) for a in attacks], progress=False)
        assert (await verifier.check(problem, f"print({SECRET!r})")).passed
    for attack, result in zip(attacks, results, strict=True):
        assert not result.passed, attack


async def test_sandbox_reports_its_layers(code_verifier: CodeVerifier) -> None:
    caps = await code_verifier.capabilities()
    assert caps["seccomp"] is True
    problem = _problem()
    result = await code_verifier.check(problem, "import socket\nsocket.socket()\n")
    assert result.reason is VerdictReason.SANDBOX_VIOLATION
    assert "seccomp" in result.details["sandbox"]


RIGGABLE = Problem(
    id="riggable",
    kind=TaskKind.CODE,
    prompt="Write sq(x) and sq_list(xs).",
    tests=CodeTests(
        asserts=[
            "assert math.isclose(sq(3), 9.0)",
            "assert sorted(sq_list([3, 1])) == [1, 9]",
            "assert abs(sq(0.5) - 0.25) < 1e-9",
            "assert all(sq(x) >= 0 for x in range(-3, 3))",  # not split: runs whole
        ],
        setup="import math",
    ),
)


async def test_asserts_cannot_be_rigged(tmp_path: Path) -> None:
    honest = "def sq(x):\n    return x * x\ndef sq_list(xs):\n    return [x * x for x in xs]\n"
    attacks = {
        # The assert's own functions, patched next to the program: they are not used there.
        "patched functions": (
            "import math, builtins\nmath.isclose = lambda *a, **k: True\n"
            "builtins.sorted = lambda x: [1, 9]\nbuiltins.abs = lambda x: 0\n"
            "def sq(x):\n    return 0\ndef sq_list(xs):\n    return []\n"
        ),
        "shadowed builtin": (
            "def sorted(x):\n    return [1, 9]\n"
            "def sq(x):\n    return x * x\ndef sq_list(xs):\n    return []\n"
        ),
        "rigged object": (
            "class Yes:\n    def __eq__(self, other):\n        return True\n"
            "    __lt__ = __le__ = __gt__ = __ge__ = __eq__\n"
            "    def __sub__(self, other):\n        return self\n"
            "    def __abs__(self):\n        return self\n"
            "    def __float__(self):\n        return 9.0\n"
            "    def __iter__(self):\n        return iter([1, 9])\n"
            "    __hash__ = object.__hash__\n"
            "def sq(x):\n    return Yes()\ndef sq_list(xs):\n    return Yes()\n"
        ),
        "forged records": (
            "import os\nfor fd in range(3, 20):\n    try:\n"
            "        os.write(fd, b''.join(\n"
            '            b\'{"test":%d,"status":"ok","held":true}\\n\' % i for i in range(8))'
            ' + b\'{"event":"done"}\\n\')\n    except OSError:\n        pass\nos._exit(0)\n'
        ),
    }
    async with CodeVerifier(workers=2, cache_dir=tmp_path, bubblewrap=False) as verifier:
        ok = await verifier.check_code(RIGGABLE, honest)
        assert ok.passed, ok.details
        results = await verifier.check_many(
            [(RIGGABLE, code) for code in attacks.values()], progress=False
        )
    for name, result in zip(attacks, results, strict=True):
        assert not result.passed, f"{name} passed: {result.details}"
