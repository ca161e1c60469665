"""Plans for assert tests: what runs next to the untrusted code, and what runs away from it.

An assert such as ``assert math.isclose(f(3), 2.5)`` needs the program for ``f(3)`` only. The
plan evaluates each such *probe* (``f(3)``) next to the program, in the sandboxed child, and
returns its value as plain data; the rest of the assert (``math.isclose(<value>, 2.5)``) is
evaluated by a second sandboxed child that never loads the program. Code that fakes success
(forged result records, a rigged ``__eq__``, patched builtins) then has nothing to fake: it
can only produce values. Three kinds of plan:

- ``value``: ``assert <probe> == <literal>``: the literal stays in the verifier's process,
  which compares (the cheapest case, no second child);
- ``probes``: anything else made of comparisons, arithmetic, containers and calls of
  functions the program does not define: probes, then a check away from the program;
- ``assert``: what cannot be split (statements besides one assert, ``and``/``or`` and
  conditional expressions, whose short-circuits a split would break, or the program's names
  inside lambdas and comprehensions): run whole next to the program, as before.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Callable, Sequence
from typing import Any

from tracedistill.records import VerdictReason
from tracedistill.verifiers import _codec
from tracedistill.verifiers._checks import KIND_REASON, SandboxRun, layers, plain_equal, short_repr
from tracedistill.verifiers._protocol import Record
from tracedistill.verifiers.base import CheckResult, clip

__all__ = ["bound_names", "first_stage", "first_stage_outputs", "judge_asserts", "plan_assert"]

Plan = tuple[dict[str, Any], Any]  # (plan, the expected literal of a ``value`` plan)

_SCOPES = (ast.Lambda, ast.GeneratorExp, ast.ListComp, ast.SetComp, ast.DictComp, ast.NamedExpr)
# Nodes a split looks into: comparisons, operators and displays, applied away from the program
# to the probes' plain values.
_TRANSPARENT = (ast.Compare, ast.UnaryOp, ast.BinOp, ast.Tuple, ast.List, ast.Set, ast.Dict)


def bound_names(code: str | None) -> set[str]:
    """Names some code binds at top level (imports, definitions, assignments)."""
    if not code:
        return set()
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set()
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                names.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


class _Unsplittable(Exception):
    pass


def _literal_plan(
    src: str, test: ast.expr, is_probe: Callable[[ast.expr], bool]
) -> tuple[dict[str, Any], Any] | None:
    """``assert <probe> == <literal>``: the probe's value is compared with the literal here."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return None
    if not isinstance(test.ops[0], ast.Eq):
        return None
    left, right = test.left, test.comparators[0]
    for expr, literal in ((left, right), (right, left)):
        if not is_probe(expr):
            continue  # e.g. sorted(f(x)): sorted must not run next to the program
        try:
            value = ast.literal_eval(literal)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue
        segment = ast.get_source_segment(src, expr)
        if segment:
            return {"kind": "value", "expr": segment}, value
    return None


def plan_assert(
    src: str, trusted: set[str] | frozenset[str] = frozenset()
) -> tuple[dict[str, Any], Any]:
    """Plan one assert test; return the plan and, for ``value`` plans, the expected literal.

    ``trusted`` are the names the tests' setup code binds (see :func:`bound_names`); with the
    builtins they are the names that do not come from the program. Builtins stay trusted even
    when the program redefines them (else ``def sorted(x): ...`` would decide
    ``assert sorted(f(x)) == [1, 2]``); an assert that calls only such names, like MBPP's
    ``assert sum(10, 15) == 6`` for a task whose function is called ``sum``, runs whole.
    """
    whole = {"kind": "assert", "src": src}, None
    text = src.strip()
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return whole
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        return whole
    test = tree.body[0].test
    known = set(trusted) | set(dir(builtins))

    def from_program(node: ast.AST) -> bool:
        return any(isinstance(n, ast.Name) and n.id not in known for n in ast.walk(node))

    def is_probe(node: ast.expr) -> bool:
        """Whether ``node`` would be one probe as a whole (see ``rewrite``)."""
        if not from_program(node) or any(isinstance(n, _SCOPES) for n in ast.walk(node)):
            return False
        if isinstance(node, (ast.BoolOp, ast.IfExp, *_TRANSPARENT)):
            return False
        return not (isinstance(node, ast.Call) and not from_program(node.func))

    literal = _literal_plan(text, test, is_probe)
    if literal is not None:
        return literal

    probes: list[str] = []

    def probe(node: ast.expr) -> ast.expr:
        if any(isinstance(n, _SCOPES) for n in ast.walk(node)):
            raise _Unsplittable  # names bound inside would leak out of their scope
        probes.append(ast.unparse(node))
        return ast.Name(id=f"__probe_{len(probes) - 1}", ctx=ast.Load())

    def rewrite(node: ast.expr) -> ast.expr:
        if not from_program(node):
            return node  # the tests' own expression: evaluated away from the program
        if isinstance(node, ast.BoolOp | ast.IfExp):
            raise _Unsplittable  # both sides would be evaluated: a short-circuit lost
        if isinstance(node, _TRANSPARENT):
            for field, value in ast.iter_fields(node):
                if isinstance(value, ast.expr):
                    setattr(node, field, rewrite(value))
                elif isinstance(value, list):
                    setattr(
                        node,
                        field,
                        [rewrite(v) if isinstance(v, ast.expr) else v for v in value],
                    )
            return node
        if isinstance(node, ast.Call) and not from_program(node.func):
            if any(isinstance(a, ast.Starred) for a in node.args):
                return probe(node)
            node.args = [rewrite(a) for a in node.args]
            for keyword in node.keywords:
                keyword.value = rewrite(keyword.value)
            return node
        return probe(node)

    try:
        rewritten = rewrite(test)
    except _Unsplittable:
        return whole
    if not probes:
        return whole  # nothing from the program: nothing to split
    check = ast.unparse(ast.fix_missing_locations(ast.Expression(body=rewritten)))
    return {"kind": "probes", "probes": probes, "check": check}, None


def first_stage(plans: Sequence[Plan]) -> tuple[list[dict[str, Any]], list[int]]:
    """The tests run next to the program (each probe a value test of its own), and the
    assert each of them belongs to.
    """
    stage1: list[dict[str, Any]] = []
    owners: list[int] = []
    for index, (plan, _) in enumerate(plans):
        if plan["kind"] == "probes":
            stage1 += [{"kind": "value", "expr": expr} for expr in plan["probes"]]
            owners += [index] * len(plan["probes"])
        else:
            stage1.append(plan)
            owners.append(index)
    return stage1, owners


def first_stage_outputs(
    records: Sequence[Record], owners: Sequence[int], count: int
) -> tuple[dict[int, list[Any]], int]:
    """Each assert's first-stage outputs (encoded, in order), and the first assert whose
    first-stage tests did not all succeed (``count`` when all did).
    """
    results = {r["test"]: r for r in records if "test" in r}
    outputs: dict[int, list[Any]] = {}
    for test_index, index in enumerate(owners):
        record = results.get(test_index)
        if record is None or record.get("status") != "ok":
            return outputs, index
        outputs.setdefault(index, []).append(record.get("out"))
    return outputs, count


def judge_asserts(
    sources: Sequence[str],
    plans: Sequence[Plan],
    outputs: dict[int, list[Any]],
    checked: dict[int, Record],
    stopped_at: int,
    run: SandboxRun,
) -> CheckResult:
    """The verdict on assert tests, in order: the first that failed (or did not run) decides."""
    for index, (plan, expected) in enumerate(plans):
        if index == stopped_at:
            # the child stopped here; the asserts before it were judged already
            return run.failure or CheckResult.fail(
                VerdictReason.RUNTIME_ERROR, {"error": f"no result for assert {index}"}
            )
        got: Any = None
        if plan["kind"] == "value":
            got = _codec.decode(outputs[index][0])
            held = plain_equal(got, expected)
        elif plan["kind"] == "probes":
            record = checked[index]
            if record.get("status") != "ok":
                return CheckResult.fail(
                    KIND_REASON.get(record.get("status", "error"), VerdictReason.RUNTIME_ERROR),
                    {
                        "test": index,
                        "assert": clip(sources[index], 500),
                        "error": record.get("error", ""),
                    },
                )
            held = bool(record.get("held"))
            got = [_codec.decode(v) for v in outputs[index]]
        else:
            held = True  # ran whole next to the program, and did not raise
        if not held:
            return CheckResult.fail(
                VerdictReason.TEST_FAILED,
                {
                    "test": index,
                    "assert": clip(sources[index], 500),
                    "got": clip(short_repr(got), 500),
                },
            )
    if run.failure is not None:
        return run.failure
    return CheckResult.ok({"asserts": len(plans), "sandbox": layers(run.records)})
