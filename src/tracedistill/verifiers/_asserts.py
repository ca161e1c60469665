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
from collections.abc import Callable
from typing import Any

__all__ = ["bound_names", "plan_assert"]

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
