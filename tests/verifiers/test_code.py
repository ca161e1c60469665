from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from tracedistill.records import CodeTests, FunctionTests, Problem, TaskKind, VerdictReason
from tracedistill.verifiers import CodeVerifier, _codec, stdout_matches
from tracedistill.verifiers._asserts import bound_names, plan_assert
from tracedistill.verifiers._checks import parse_records
from tracedistill.verifiers._evalplus import EvalplusComparator

pytestmark = pytest.mark.anyio

ADD = Problem(
    id="add",
    kind=TaskKind.CODE,
    prompt="Write add(a, b).",
    tests=CodeTests(
        function=FunctionTests(
            entry_point="add",
            base_inputs=[[1, 2], [3, 4]],
            plus_inputs=[[10**30, 1], [-5, 5]],
            reference_solution="def add(a, b):\n    return a + b\n",
        )
    ),
)

STDIO = Problem(
    kind=TaskKind.CODE,
    prompt="Read two ints, print their sum.",
    tests=CodeTests(stdio=[{"stdin": "1 2\n", "stdout": "3\n"}, {"stdin": "5 5", "stdout": "10"}]),
)

ASSERTS = Problem(
    kind=TaskKind.CODE,
    prompt="Write sq(x).",
    tests=CodeTests(
        asserts=["assert sq(3) == 9", "assert sq(-2) == 4", "assert abs(sq(0.5) - 0.25) < 1e-9"],
        setup="import math",
    ),
)


@pytest.mark.parametrize(
    ("response", "reason", "extra"),
    [
        ("```python\ndef add(a, b):\n    return a + b\n```", VerdictReason.PASSED, {}),
        (
            "def add(a, b):\n    return a - b\n",
            VerdictReason.TEST_FAILED,
            {"group": "base", "test": 0},
        ),
        (
            "def add(a, b):\n    return a + b if a < 10**20 else 0\n",
            VerdictReason.TEST_FAILED,
            {"group": "plus", "test": 0},
        ),
        ("def add(a, b):\n    while True:\n        pass\n", VerdictReason.TIMEOUT, {}),
        ("def add(a, b):\n    return a / 0\n", VerdictReason.RUNTIME_ERROR, {}),
        ("def add(a, b) return", VerdictReason.SYNTAX_ERROR, {}),
        ("def plus(a, b):\n    return a + b\n", VerdictReason.RUNTIME_ERROR, {}),
        ("", VerdictReason.NO_ANSWER, {}),
        ("def add(a, b):\n    return [0] * (10**10)\n", VerdictReason.MEMORY_LIMIT, {}),
    ],
)
async def test_function_tests(
    code_verifier: CodeVerifier, response: str, reason: VerdictReason, extra: dict[str, object]
) -> None:
    result = await code_verifier.check(ADD, response)
    assert result.reason is reason, result.details
    assert result.passed is (reason is VerdictReason.PASSED)
    for key, value in extra.items():
        assert result.details[key] == value


async def test_reference_outputs_cached_on_disk(tmp_path: Path) -> None:
    problem = Problem(
        id="mul",
        kind=TaskKind.CODE,
        prompt="mul",
        tests=CodeTests(
            function=FunctionTests(
                entry_point="mul",
                base_inputs=[[2, 3]],
                reference_solution="def mul(a, b):\n    return a * b\n",
            )
        ),
    )
    async with CodeVerifier(workers=1, cache_dir=tmp_path) as v:
        assert (await v.check(problem, "def mul(a, b): return b * a")).passed
    files = [Path(p) async for p in anyio.Path(tmp_path).glob("*.json")]
    assert len(files) == 1
    # A fresh verifier reads the cache instead of running the reference again: doctor the
    # cached output and the verdicts follow it.
    raw = json.loads(await anyio.Path(files[0]).read_text())
    assert raw["base"] == [6]
    raw["base"] = [7]
    await anyio.Path(files[0]).write_text(json.dumps(raw))
    async with CodeVerifier(workers=1, cache_dir=tmp_path) as v:
        assert (await v.check(problem, "def mul(a, b): return 7")).passed
        assert not (await v.check(problem, "def mul(a, b): return a * b")).passed
        assert v.pool.jobs_run == 2 + 1  # the capability probe and two samples: no reference run


async def test_expected_outputs_given_directly(code_verifier: CodeVerifier) -> None:
    problem = Problem(
        kind=TaskKind.CODE,
        prompt="neg",
        tests=CodeTests(
            function=FunctionTests(
                entry_point="neg", base_inputs=[[1], [2.5]], expected_base=[-1, -2.5]
            )
        ),
    )
    assert (await code_verifier.check(problem, "def neg(x): return -x")).passed
    assert not (await code_verifier.check(problem, "def neg(x): return x")).passed


async def test_stdio(tmp_path: Path) -> None:
    async with CodeVerifier(workers=2, test_timeout_s=1.5, cache_dir=tmp_path) as v:
        await _stdio_cases(v)


async def _stdio_cases(code_verifier: CodeVerifier) -> None:
    good = "a, b = map(int, input().split())\nprint(a + b)\n"
    assert (await code_verifier.check(STDIO, good)).passed
    also_good = "import sys\nprint(sum(map(int, sys.stdin.read().split())), end='  \\n\\n')"
    assert (await code_verifier.check(STDIO, also_good)).passed
    wrong = await code_verifier.check(STDIO, "print(3)")
    assert wrong.reason is VerdictReason.TEST_FAILED and wrong.details["test"] == 1
    slow = await code_verifier.check(STDIO, "while True: pass")
    assert slow.reason is VerdictReason.TIMEOUT
    crash = await code_verifier.check(STDIO, "raise SystemExit(3)")
    assert crash.reason is VerdictReason.RUNTIME_ERROR


async def test_asserts(code_verifier: CodeVerifier) -> None:
    assert (await code_verifier.check(ASSERTS, "def sq(x):\n    return x * x\n")).passed
    result = await code_verifier.check(ASSERTS, "def sq(x):\n    return 9\n")
    assert result.reason is VerdictReason.TEST_FAILED and result.details["test"] == 1
    result = await code_verifier.check(ASSERTS, "def sq(x):\n    return x * x if x != 0.5 else 1\n")
    assert result.reason is VerdictReason.TEST_FAILED


def test_assert_plans_keep_literals_in_the_parent() -> None:
    plan, expected = plan_assert("assert f(1, 2) == (4, 5)")
    assert plan == {"kind": "value", "expr": "f(1, 2)"} and expected == (4, 5)
    plan, expected = plan_assert("assert [1] == g()")
    assert plan == {"kind": "value", "expr": "g()"} and expected == [1]
    plan, expected = plan_assert("assert Sol().run(3)[0] == -4")
    assert plan == {"kind": "value", "expr": "Sol().run(3)[0]"} and expected == -4


def test_assert_plans_keep_the_assert_away_from_the_program() -> None:
    trusted = bound_names("import math\nfrom collections import Counter as C\nX = 3")
    assert trusted == {"math", "C", "X"}
    cases = {
        "assert math.isclose(f(1), 2.0)": (["f(1)"], "math.isclose(__probe_0, 2.0)"),
        # sorted() must not run next to the program (it could be patched there)
        "assert sorted(f(x)) == [1, 2]": (["f(x)"], "sorted(__probe_0) == [1, 2]"),
        "assert abs(sq(0.5) - 0.25) < 1e-9": (["sq(0.5)"], "abs(__probe_0 - 0.25) < 1e-09"),
        "assert not f(3)": (["f(3)"], "not __probe_0"),
        "assert f(X) == C(a=1)": (["f(X)"], "__probe_0 == C(a=1)"),
        "assert f(1) <= g(2) < 5": (["f(1)", "g(2)"], "__probe_0 <= __probe_1 < 5"),
        "assert set(f(*[1, 2])) == {1}": (["f(*[1, 2])"], "set(__probe_0) == {1}"),
    }
    for src, (probes, check) in cases.items():
        plan, _ = plan_assert(src, trusted)
        assert plan == {"kind": "probes", "probes": probes, "check": check}, src
    # what a split would change runs whole: short-circuits, scopes, statements, no program
    for src in [
        "assert f(1) and g()",
        "assert f(1) if X else g()",
        "assert all(f(x) for x in range(3))",
        "assert (lambda: f(1))()",
        "x = f(1)\nassert x",
        "assert math.pi > 3",
        "assert f(1",
    ]:
        assert plan_assert(src, trusted)[0]["kind"] == "assert", src
    # builtins stay trusted: a task function called sum makes its asserts run whole
    assert plan_assert("assert sum(10, 15) == 6")[0]["kind"] == "assert"


def test_codec_round_trip_keeps_types() -> None:
    value = [
        1,
        2**80,
        -(2**70),
        1.5,
        float("inf"),
        "s",
        b"\x00\xff",
        (1, [2]),
        {1: {2}},
        frozenset({3}),
        1 + 2j,
        None,
        True,
    ]
    decoded = _codec.decode(_codec.encode(value))
    assert decoded == value
    assert type(decoded[7]) is tuple and type(decoded[9]) is frozenset

    class Rigged:
        def __eq__(self, other: object) -> bool:
            return True

    assert _codec.decode(_codec.encode(Rigged())) != 1
    big = list(range(100_000))
    digest = _codec.decode(_codec.encode_output(big))
    assert isinstance(digest, _codec.Digest)
    assert digest == _codec.decode(_codec.encode_output(list(range(100_000))))
    assert digest != _codec.decode(_codec.encode_output(list(range(1, 100_001))))


def test_records_read_exactly_as_json_reads_them() -> None:
    # The parent reads the child's lines with orjson where it agrees with json.loads; what
    # orjson refuses or reads otherwise (huge integers as floats, lone surrogates, NaN, a BOM)
    # still reads as json.loads reads it, and a torn last line ends the records.
    lines = [
        b'{"test":0,"status":"ok","out":["l",[1,2.5,"x",null,true]],"time":0.001}',
        b'{"test":1,"out":18446744073709551616}',
        b'{"test":2,"out":-9223372036854775809}',
        b'{"test":3,"out":"\\ud800"}',
        b'{"test":4,"out":NaN,"time":Infinity}',
        b'\xef\xbb\xbf{"test":5}',
        b'{"test":6,"out":1e400}',
        b'{"a":1,"a":2}',
        b'{"test":7,"out":"\\u00e9\xc3\xa9"}',
    ]
    records = parse_records(b"\n".join([*lines, b'{"test":8,"st']))
    expected = [json.loads(line) for line in lines]
    assert len(records) == len(expected)
    for got, want in zip(records, expected, strict=True):
        assert repr(got) == repr(want)  # repr: NaN != NaN, and int 2**64 == float 2**64
    assert type(records[1]["out"]) is int and type(records[2]["out"]) is int
    assert parse_records(b'{"test":0}\n[1,2]\n\xff\n{"test":1}') == [{"test": 0}]


def test_decoding_fast_paths_keep_the_rules() -> None:
    value = [[1, (2, [3.5, "t"])], (), [], ("l", "t"), ["t", [1]], {"k": (1,)}]
    assert _codec.decode(_codec.encode(value)) == value
    assert type(_codec.decode(_codec.encode(((1,),)))[0]) is tuple
    with pytest.raises(ValueError):
        _codec.decode(["l", [1], 2])  # not a (tag, body) pair
    with pytest.raises(ValueError):
        _codec.decode([1, [2]])  # a tag that is not a string
    with pytest.raises(ValueError):
        _codec.decode(["l", [{"a": 1}]])  # a JSON object where a value should be
    with pytest.raises(ValueError):
        _codec.decode(["?", []])


def test_evalplus_comparison_rules() -> None:
    compare = EvalplusComparator("f", 0.0, "")
    assert compare(1.0000001, 1.0, ())  # floats get atol 1e-6 ...
    assert compare([1.0000001, 2], [1.0, 2], ())  # ... and keep it for the rest of the group
    compare.reset()
    assert not compare([1.0000001, 2], [1.0, 2], ())
    assert not compare([1.0], (1.0,), ())  # allclose only between the same types
    assert not compare((1, 2), [1, 2], ())
    sets = EvalplusComparator("similar_elements", 0.0, "mbpp")
    assert sets((5, 4), (4, 5), ())
    not_none = EvalplusComparator("text_match_three", 0.0, "mbpp")
    assert not_none(_codec.NotNone(True), True, ())
    assert not not_none(_codec.NotNone(False), True, ())


def test_stdout_matching() -> None:
    assert stdout_matches("3 \n\n", "3")
    assert stdout_matches("1 2\n3", "1 2 3")
    assert stdout_matches("0.3333333", "0.33333333")
    assert not stdout_matches("4", "3")
    assert not stdout_matches("1 2", "1 2 3")


async def test_passing_verdicts_name_the_sandbox(code_verifier: CodeVerifier) -> None:
    result = await code_verifier.check(ADD, "def add(a, b):\n    return a + b\n")
    assert result.passed and "seccomp" in result.details["sandbox"]


async def test_per_sample_namespaces_on_request(tmp_path: Path) -> None:
    async with CodeVerifier(workers=1, sample_namespaces=True, cache_dir=tmp_path) as v:
        result = await v.check(ADD, "def add(a, b):\n    return a + b\n")
        assert result.passed
        if "pid" in (await v.capabilities())["namespaces"]:
            assert "pid" in result.details["sandbox"]
            if not (await v.capabilities())["bubblewrap"]:  # bwrap's /proc is private already
                assert "mnt" in result.details["sandbox"]
        hostile = await v.check(ADD, "import os\nos.kill(1, 9)\n")
        assert hostile.reason is VerdictReason.SANDBOX_VIOLATION


async def test_missing_isolation_is_refused(tmp_path: Path) -> None:
    from tracedistill.errors import SandboxError

    verifier = CodeVerifier(workers=1, require=("seccomp", "teleportation"), cache_dir=tmp_path)
    with pytest.raises(SandboxError, match="teleportation"):
        await verifier.start()
    await verifier.aclose()


def _runner_trees(pids: Sequence[int]) -> set[int]:
    """The runners' own processes: each pid, the bubblewrap processes below it (when the
    bubblewrap backend wraps a runner) and the runner process they start; never a sample,
    which is a child of that runner process."""
    from tests.verifiers.test_adversarial import _children

    found: set[int] = set()
    for pid in pids:
        found.add(pid)
        layer = [pid]
        while layer:
            below = [c for p in layer for c in _children(p)]
            found.update(below)
            layer = [c for c in below if _is_bwrap(c)]
    return found


def _is_bwrap(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().split(b"\0", 1)[0].endswith(b"bwrap")
    except OSError:
        return False


async def test_cancelled_checks_leave_no_process(tmp_path: Path) -> None:
    from tests.verifiers.test_adversarial import _descendants

    preexisting = _descendants(os.getpid())  # other tests' long-lived helper processes
    verifier = CodeVerifier(workers=2, cache_dir=tmp_path, test_timeout_s=30)
    await verifier.start()
    forever = "def add(a, b):\n    while True:\n        pass\n"
    with anyio.move_on_after(1.0):
        await verifier.check_many([(ADD, forever)] * 4, progress=False)
    await anyio.sleep(0.2)
    workers = _runner_trees(verifier.pool.pids)
    # the busy runners were killed with their samples
    assert _descendants(os.getpid()) <= workers | preexisting
    root = verifier._tmp_root
    assert root is not None and await anyio.Path(root).is_dir()
    await verifier.aclose()
    assert _descendants(os.getpid()) <= preexisting
    assert not await anyio.Path(root).exists()  # working directories of killed samples are gone too


async def test_broken_reference_is_a_verifier_error_computed_once(tmp_path: Path) -> None:
    problem = Problem(
        kind=TaskKind.CODE,
        prompt="p",
        tests=CodeTests(
            function=FunctionTests(
                entry_point="f",
                base_inputs=[[1]],
                reference_solution="def f(x):\n    raise RuntimeError('broken reference')\n",
            )
        ),
    )
    async with CodeVerifier(workers=1, cache_dir=tmp_path) as v:
        first = await v.check(problem, "def f(x): return x")
        assert first.reason is VerdictReason.VERIFIER_ERROR and not first.passed
        assert "broken reference" in first.details["error"]
        jobs_before = v.pool.jobs_run
        second = await v.check(problem, "def f(x): return x")
        assert second.reason is VerdictReason.VERIFIER_ERROR
        assert v.pool.jobs_run == jobs_before  # neither the reference nor the sample ran again
    assert [p async for p in anyio.Path(tmp_path).glob("*.json")] == []


SLOW = Problem(
    id="slow",
    kind=TaskKind.CODE,
    prompt="Write double(n), slowly.",
    tests=CodeTests(
        function=FunctionTests(
            entry_point="double",
            base_inputs=[[n] for n in range(6)],
            plus_inputs=[[n] for n in range(100, 106)],
            reference_solution=(
                "import time\ndef double(n):\n    time.sleep(0.05)\n    return 2 * n\n"
            ),
        )
    ),
)


def test_split_keeps_every_test_once_in_order() -> None:
    verifier = CodeVerifier(workers=2, split_above_s=1.0)
    groups = [
        {"id": 0, "start": 0, "inputs": list(range(5)), "limits": [1.0] * 5},
        {"id": 1, "start": 0, "inputs": list(range(40)), "limits": [2.0] * 40},
    ]
    costs = [[0.1] * 5, [0.1] * 39 + [3.0]]
    parts = verifier._split(groups, costs)
    assert 2 <= len(parts) <= 4
    seen = [
        (g["id"], g["start"] + k, x, limit)
        for part in parts
        for g in part
        for k, (x, limit) in enumerate(zip(g["inputs"], g["limits"], strict=True))
    ]
    expected = [(0, i, i, 1.0) for i in range(5)] + [(1, i, i, 2.0) for i in range(40)]
    assert seen == expected
    # cheap work is not split, nor is work whose cost is unknown, nor with one runner
    assert verifier._split(groups, [[0.01] * 5, [0.01] * 40]) == [groups]
    assert verifier._split(groups, [[0.1] * 5, None]) == [groups]
    assert CodeVerifier(workers=1, split_above_s=1.0)._split(groups, costs) == [groups]
    assert CodeVerifier(workers=2, split_above_s=None)._split(groups, costs) == [groups]


@pytest.mark.parametrize(
    ("body", "reason", "extra"),
    [
        ("return 2 * n", VerdictReason.PASSED, {}),
        (
            "return 2 * n if n != 104 else 0",
            VerdictReason.TEST_FAILED,
            {"group": "plus", "test": 4},
        ),
        ("return 2 * n if n != 1 else 0", VerdictReason.TEST_FAILED, {"group": "base", "test": 1}),
        # fails early in the first part and late in the second: the first failure decides
        ("return 2 * n if n not in (2, 105) else 1 / 0", VerdictReason.RUNTIME_ERROR, {"test": 2}),
        ("return 1 / 0 if n == 103 else 2 * n", VerdictReason.RUNTIME_ERROR, {"group": "plus"}),
        ("while n == 105: pass\n    return 2 * n", VerdictReason.TIMEOUT, {}),
    ],
)
async def test_heavy_samples_split_across_runners(
    tmp_path: Path, body: str, reason: VerdictReason, extra: dict[str, object]
) -> None:
    async with CodeVerifier(workers=2, cache_dir=tmp_path, split_above_s=0.2) as verifier:
        response = f"import time\ndef double(n):\n    time.sleep(0.05)\n    {body}\n"
        await verifier.check(SLOW, SLOW.tests.function.reference_solution)  # type: ignore[union-attr]
        before = verifier.pool.jobs_run
        result = await verifier.check(SLOW, response)
        assert result.reason is reason, result.details
        for key, value in extra.items():
            assert result.details[key] == value, result.details
        if reason is VerdictReason.PASSED:
            assert verifier.pool.jobs_run - before == 2  # the sample ran as two parts


def test_codec_rebuilds_standard_values_as_real_objects() -> None:
    import collections
    import decimal
    import fractions

    import numpy as np

    values = [
        {1: 2}.keys(),
        {1: 2}.items(),
        collections.deque([1, 2]),
        range(2, 9, 3),
        bytearray(b"ab"),
        fractions.Fraction(1, 3),
        decimal.Decimal("0.1"),
        np.int64(3),
        np.float64(0.5),
        np.array([[1.5, 2.0]]),
        np.array(7),
    ]
    for value in values:
        decoded = _codec.decode(_codec.encode(value))
        assert type(decoded) is type(value), value
        if isinstance(value, np.ndarray):
            assert decoded.shape == value.shape and (decoded == value).all()
        elif type(value).__name__ != "dict_values":
            assert decoded == value, value
    # values views compare by identity, as in Python; they still iterate
    assert list(_codec.decode(_codec.encode({1: 2}.values()))) == [2]
    # an iterator is collected only when asked to (set-equality tasks), and equals nothing
    collected = _codec.decode(_codec.materialize(x for x in (1, 2, 2)))
    assert isinstance(collected, _codec.Yielded) and set(collected) == {1, 2}
    assert collected != [1, 2, 2]
    assert isinstance(_codec.decode(_codec.encode(iter([1]))), _codec.Opaque)
    # object arrays and malformed bodies never become anything but opaque values
    assert isinstance(_codec.decode(_codec.encode(np.array([{1}], dtype=object))), _codec.Opaque)
    assert isinstance(_codec.decode(["a", ["|O", [1], [1]]]), _codec.Opaque)
    assert isinstance(_codec.decode(["r", [1, "x", 1]]), _codec.Opaque)
    assert isinstance(_codec.decode(["I", [1]]), _codec.Opaque)


def test_evalplus_comparison_of_iterators_views_and_numpy() -> None:
    import numpy as np

    def got(value: object) -> object:
        return _codec.decode(_codec.materialize(value))

    sets = EvalplusComparator("similar_elements", 0.0, "mbpp")
    assert sets(got(iter((4, 5))), (5, 4), ())
    assert sets(got(x for x in [4, 5, 5]), (5, 4), ())
    assert sets(got(filter(None, [4, 5])), (5, 4), ())
    assert sets(got({4: 0, 5: 0}.keys()), (5, 4), ())
    assert not sets(got(iter((4,))), (5, 4), ())
    with pytest.raises(TypeError):  # a 0-d array cannot be iterated: the test fails
        got(np.array({4, 5}, dtype=object))
    plain = EvalplusComparator("f", 0.0, "mbpp")
    assert not plain(_codec.decode(_codec.encode(iter([1]))), [1], ())
    assert plain(_codec.decode(_codec.encode({1: 0}.keys())), {1}, ())  # keys == set
    assert not plain(_codec.decode(_codec.encode({1: 0}.keys())), [1], ())
    assert plain(_codec.decode(_codec.encode(np.int64(3))), 3, ())
    assert not plain(_codec.decode(_codec.encode(np.array([1, 2]))), [1, 2], ())  # ambiguous
    floats = EvalplusComparator("f", 0.0, "mbpp")
    assert floats(1.0 + 1e-9, 1.0, ())
    assert not floats(_codec.decode(_codec.encode(np.float64(1.0 + 1e-9))), 1.0, ())  # types
