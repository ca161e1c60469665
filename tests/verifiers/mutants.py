"""Semantic mutants of MBPP+ canonical solutions, for grading by tracedistill and by evalplus.

Each mutant changes one thing in the canonical solution's syntax tree (an operator, a
comparison, a constant, an off-by-one in a bound) or wraps what the entry point returns
(an iterator, a generator, ``filter``/``map`` objects, dict views, other containers, numeric
conversions and perturbations, or the function turned into a generator function). Some change
the answer, some do not (``iter(x)`` on a task evalplus compares as sets); the point is that
both graders reach the same verdict on each. Deterministic: the same rows give the same
mutants, in the same order. Used by ``test_fidelity.py`` and ``benchmarks/bench_verifiers.py``.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import hashlib
import json
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

__all__ = [
    "WRAPPERS",
    "Mutant",
    "evalplus_pool",
    "evalplus_verdict_cache",
    "grade_with_evalplus",
    "mutants",
    "program_key",
    "read_verdicts",
    "selection",
]

Mutant = tuple[str, str]  # (kind, full program)

_BINOP_SWAP: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Add,
    ast.Div: ast.FloorDiv,
    ast.FloorDiv: ast.Div,
    ast.Mod: ast.FloorDiv,
    ast.Pow: ast.Mult,
    ast.BitAnd: ast.BitOr,
    ast.BitOr: ast.BitAnd,
    ast.BitXor: ast.BitOr,
}
_COMPARE_SWAP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}

#: What ``return X`` becomes, by name (``{}`` is X's source).
WRAPPERS: dict[str, str] = {
    "iter": "iter({})",
    "generator": "(_v for _v in {})",
    "filter": "filter(lambda _v: True, {})",
    "filter-none": "filter(None, {})",
    "map": "map(lambda _v: _v, {})",
    "dict-keys": "dict.fromkeys({}).keys()",
    "dict-values": "{{_i: _v for _i, _v in enumerate({})}}.values()",
    "reversed": "reversed(list({}))",
    "set": "set({})",
    "tuple": "tuple({})",
    "list": "list({})",
    "sorted": "sorted({})",
    "deque": "__import__('collections').deque({})",
    "range-len": "range(len({}))",
    "float": "float({})",
    "int": "int({})",
    "round-2": "round({}, 2)",
    "tiny-add": "({}) + 1e-9",
    "small-add": "({}) + 1e-5",
    "relative": "({}) * (1 + 1e-8)",
    "negate": "not ({})",
    "str": "str({})",
    "none": "(None if {} is not None else 0)",
    "numpy": "__import__('numpy').array({})",
}


def _entry(tree: ast.Module, entry_point: str) -> ast.FunctionDef | None:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == entry_point:
            return node
    return None


def _own_nodes(fn: ast.FunctionDef) -> Iterator[ast.AST]:
    """Nodes of ``fn``'s body, not of functions or lambdas nested in it."""
    stack: list[ast.AST] = list(reversed(fn.body))
    while stack:
        node = stack.pop()
        yield node
        for child in reversed(list(ast.iter_child_nodes(node))):
            if not isinstance(child, ast.FunctionDef | ast.Lambda | ast.AsyncFunctionDef):
                stack.append(child)


def _sites(tree: ast.Module, entry_point: str, pick: Callable[[ast.AST], bool]) -> list[int]:
    fn = _entry(tree, entry_point)
    if fn is None:
        return []
    nodes = list(_own_nodes(fn))
    return [i for i, node in enumerate(nodes) if pick(node)]


def _mutate_at(
    source: str, entry_point: str, index: int, change: Callable[[ast.AST], bool]
) -> str | None:
    tree = ast.parse(source)
    fn = _entry(tree, entry_point)
    assert fn is not None
    node = list(_own_nodes(fn))[index]
    if not change(node):
        return None
    return ast.unparse(ast.fix_missing_locations(tree))


def _point_mutations() -> dict[str, tuple[Callable[[ast.AST], bool], Callable[[ast.AST], bool]]]:
    def swap_binop(node: ast.AST) -> bool:
        assert isinstance(node, ast.BinOp)
        node.op = _BINOP_SWAP[type(node.op)]()
        return True

    def swap_compare(node: ast.AST) -> bool:
        assert isinstance(node, ast.Compare)
        node.ops[0] = _COMPARE_SWAP[type(node.ops[0])]()
        return True

    def swap_boolop(node: ast.AST) -> bool:
        assert isinstance(node, ast.BoolOp)
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        return True

    def off_by_one(node: ast.AST) -> bool:
        assert isinstance(node, ast.Call)
        last = node.args[-1] if len(node.args) < 3 else node.args[1]
        node.args[node.args.index(last)] = ast.BinOp(last, ast.Add(), ast.Constant(1))
        return True

    def change_constant(node: ast.AST) -> bool:
        assert isinstance(node, ast.Constant)
        value = node.value
        if isinstance(value, bool) or value is None:
            return False
        if isinstance(value, int | float):
            node.value = value + 1 if value not in (0, 1) else value + 2
        elif isinstance(value, str):
            node.value = value + "x" if value else "x"
        else:
            return False
        return True

    def is_range(node: ast.AST) -> bool:
        return (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "range"
            and 1 <= len(node.args) <= 3
        )

    return {
        "binop": (lambda n: isinstance(n, ast.BinOp) and type(n.op) in _BINOP_SWAP, swap_binop),
        "compare": (
            lambda n: isinstance(n, ast.Compare) and type(n.ops[0]) in _COMPARE_SWAP,
            swap_compare,
        ),
        "boolop": (lambda n: isinstance(n, ast.BoolOp), swap_boolop),
        "off-by-one": (is_range, off_by_one),
        "constant": (
            lambda n: (
                isinstance(n, ast.Constant)
                and not isinstance(n.value, bool)
                and isinstance(n.value, int | float | str)
            ),
            change_constant,
        ),
    }


def _wrap_returns(source: str, entry_point: str, template: str) -> str | None:
    tree = ast.parse(source)
    fn = _entry(tree, entry_point)
    if fn is None:
        return None
    changed = False
    for node in list(_own_nodes(fn)):
        if isinstance(node, ast.Return) and node.value is not None:
            wrapped = ast.parse(template.format(ast.unparse(node.value)), mode="eval").body
            node.value = wrapped
            changed = True
    return ast.unparse(ast.fix_missing_locations(tree)) if changed else None


def _as_generator_function(source: str, entry_point: str) -> str | None:
    """``return X`` becomes ``yield from X; return``: the function returns a generator."""
    tree = ast.parse(source)
    fn = _entry(tree, entry_point)
    if fn is None:
        return None

    class Rewrite(ast.NodeTransformer):
        def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
            return node if node is not fn else self.generic_visit(node)

        def visit_Lambda(self, node: ast.Lambda) -> ast.AST:
            return node

        def visit_Return(self, node: ast.Return) -> Any:
            if node.value is None:
                return node
            return [ast.Expr(ast.YieldFrom(node.value)), ast.Return(None)]

    fn.body = [Rewrite().visit(statement) for statement in fn.body]
    flat: list[ast.stmt] = []
    for statement in fn.body:
        flat.extend(statement if isinstance(statement, list) else [statement])
    fn.body = flat
    return ast.unparse(ast.fix_missing_locations(Rewrite().visit(tree)))


def mutants(
    row: dict[str, Any], *, wrappers: list[str] | None = None, per_kind: int = 1
) -> list[Mutant]:
    """Mutants of one MBPP+ row's canonical solution: ``(kind, prompt + mutated code)``.

    ``per_kind`` point mutations of each kind (at evenly spread sites), then each wrapper in
    ``wrappers`` (default all) applied to every ``return`` of the entry point, then the
    generator-function rewrite. Mutants identical to the original or to each other are dropped.
    """
    source = row["canonical_solution"]
    entry = row["entry_point"]
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    original = ast.unparse(tree)
    found: dict[str, str] = {}
    for kind, (pick, change) in _point_mutations().items():
        sites = _sites(copy.deepcopy(tree), entry, pick)
        chosen = sites[:: max(1, len(sites) // per_kind)][:per_kind] if sites and per_kind else []
        for site in chosen:
            code = _mutate_at(source, entry, site, change)
            if code is not None:
                found.setdefault(code, kind)
    for name in wrappers if wrappers is not None else list(WRAPPERS):
        code = _wrap_returns(source, entry, WRAPPERS[name])
        if code is not None:
            found.setdefault(code, name)
    code = _as_generator_function(source, entry)
    if code is not None:
        found.setdefault(code, "generator-function")
    found.pop(original, None)
    return [(kind, row["prompt"] + "\n" + code + "\n") for code, kind in found.items()]


#: The wrappers every task gets; the others rotate over the tasks (see :func:`selection`).
CORE_WRAPPERS = ["iter", "generator", "tuple"]
_ROTATING = [name for name in WRAPPERS if name not in CORE_WRAPPERS]


def selection(
    rows: list[dict[str, Any]], *, rotating: int = 3
) -> list[tuple[dict[str, Any], Mutant]]:
    """A mutant set over many rows: every point mutation, the generator-function rewrite, the
    core wrappers, ``rotating`` more wrappers per task in turn, and on the tasks evalplus
    compares as sets (where iterators matter) every wrapper."""
    from evalplus.eval._special_oracle import MBPP_OUTPUT_SET_EQ_TASKS

    chosen: list[tuple[dict[str, Any], Mutant]] = []
    for index, row in enumerate(rows):
        if row["entry_point"] in MBPP_OUTPUT_SET_EQ_TASKS:
            names = list(WRAPPERS)
        else:
            start = index * rotating
            names = CORE_WRAPPERS + [
                _ROTATING[(start + k) % len(_ROTATING)] for k in range(rotating)
            ]
        chosen.extend((row, mutant) for mutant in mutants(row, wrappers=names))
    return chosen


# --- evalplus's side ---------------------------------------------------------------------------


def evalplus_task(row: dict[str, Any]) -> dict[str, Any]:
    """A row with its inputs deserialized as evalplus does."""
    from evalplus.data.mbpp import mbpp_deserialize_inputs

    task = dict(row)
    task["base_input"] = mbpp_deserialize_inputs(row["task_id"], row["base_input"])
    task["plus_input"] = mbpp_deserialize_inputs(row["task_id"], row["plus_input"])
    return task


def evalplus_ground_truth(task: dict[str, Any]) -> dict[str, Any]:
    """evalplus's expected outputs and times for a task (its ``trusted_exec``, in process)."""
    from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS
    from evalplus.gen.util import trusted_exec

    code = task["prompt"] + task["canonical_solution"]
    not_none = task["entry_point"] in MBPP_OUTPUT_NOT_NONE_TASKS
    oracle: dict[str, Any] = {}
    for name in ("base", "plus"):
        oracle[name], oracle[f"{name}_time"] = trusted_exec(
            code,
            task[f"{name}_input"],
            task["entry_point"],
            record_time=True,
            output_not_none=not_none,
        )
    return oracle


def evalplus_passes(task: dict[str, Any], code: str, truth: dict[str, Any]) -> tuple[bool, str]:
    """evalplus 0.3.1's verdict on one program (``check_correctness``, fail-fast as
    ``evalplus.evaluate`` runs it): (passed, "base-status/plus-status")."""
    from evalplus.evaluate import check_correctness

    result = check_correctness("mbpp", 0, task, code, truth, False, True)
    base, plus = result["base"][0], result["plus"][0]
    return base == "pass" and plus == "pass", f"{base}/{plus}"


def evalplus_verdict_cache() -> Path:
    """Where evalplus's verdicts on programs are kept between runs (one file per evalplus
    version): ``~/.cache/tracedistill/evalplus-verdicts/<version>.jsonl``."""
    from importlib.metadata import version

    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "tracedistill" / "evalplus-verdicts" / f"{version('evalplus')}.jsonl"


def program_key(row: dict[str, Any], code: str) -> str:
    """A verdict's key: the task, its tests and the program (all of what evalplus sees)."""
    digest = hashlib.sha256()
    for part in (row["task_id"], row["canonical_solution"], row["base_input"], row["plus_input"]):
        digest.update(json.dumps(part, sort_keys=True).encode() + b"\0")
    digest.update(code.encode())
    return f"{row['task_id']}:{digest.hexdigest()[:24]}"


def read_verdicts(path: Path) -> dict[str, tuple[bool, str]]:
    """The verdicts cached in ``path`` by key (none if it does not exist)."""
    if not path.exists():
        return {}
    found: dict[str, tuple[bool, str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            found[row["key"]] = (bool(row["passed"]), str(row["status"]))
        except (ValueError, KeyError, TypeError):  # a line cut by a killed run
            continue
    return found


def _fork_inside() -> None:
    """In a spawned worker: evalplus's own child processes fork again, as in evalplus."""
    multiprocessing.set_start_method("fork", force=True)


def evalplus_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes to run evalplus's checker in.

    The workers are spawned, not forked: the calling process has threads (the event loop's
    workers), and a child forked while one of them holds a lock can hang forever (it did, in
    CI). A spawned worker inherits the spawn start method, under which evalplus's per-program
    process would start a fresh interpreter (seconds, past its time limit: every program
    "timed out"); the workers themselves have one thread, so they fork it as evalplus does.
    """
    context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_fork_inside)


def grade_with_evalplus(
    items: list[tuple[dict[str, Any], str]], workers: int, *, cache: Path | None = None
) -> list[tuple[bool, str]]:
    """evalplus's verdicts on ``(row, program)`` pairs, on ``workers`` spawned processes.

    ``cache``: a JSONL file of verdicts already known (see :func:`evalplus_verdict_cache`);
    each new verdict is appended as soon as it comes, so an interrupted run keeps its work.
    """
    keys = [program_key(row, code) for row, code in items]
    known = read_verdicts(cache) if cache is not None else {}
    todo = [i for i, key in enumerate(keys) if key not in known]
    tasks: dict[str, dict[str, Any]] = {}
    truth: dict[str, dict[str, Any]] = {}
    for i in todo:  # ground truth only for the tasks with something left to grade
        row = items[i][0]
        if row["task_id"] not in tasks:
            tasks[row["task_id"]] = evalplus_task(row)
            truth[row["task_id"]] = evalplus_ground_truth(tasks[row["task_id"]])
    if todo:
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            sink = stack.enter_context(cache.open("a", encoding="utf-8")) if cache else None
            for _ in range(3):  # a pool whose worker hangs is replaced, the rest graded again
                todo = [i for i in todo if keys[i] not in known]
                if not todo:
                    break
                _grade_on_a_pool(items, todo, keys, known, tasks, truth, workers, sink)
    return [known[key] for key in keys]


#: no verdict from any worker for this long: a worker hangs (evalplus's checker forks inside
#: it; once, in CI, a worker sat with two threads in futex waits and the test hit its limit)
POOL_STALL_S = 180.0


def _grade_on_a_pool(
    items: list[tuple[dict[str, Any], str]],
    todo: list[int],
    keys: list[str],
    known: dict[str, tuple[bool, str]],
    tasks: dict[str, dict[str, Any]],
    truth: dict[str, dict[str, Any]],
    workers: int,
    sink: Any,
) -> None:
    """Grade ``todo`` on a fresh pool into ``known``; give the pool up when it stalls."""
    from concurrent.futures import FIRST_COMPLETED, wait

    pool = evalplus_pool(workers)
    try:
        futures = {
            pool.submit(
                evalplus_passes,
                tasks[items[i][0]["task_id"]],
                items[i][1],
                truth[items[i][0]["task_id"]],
            ): i
            for i in todo
        }
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=POOL_STALL_S, return_when=FIRST_COMPLETED)
            if not done:
                return  # stalled: the caller grades what is left on a new pool
            for future in done:
                i = futures[future]
                known[keys[i]] = future.result()
                if sink is not None:
                    passed, status = known[keys[i]]
                    record = {"key": keys[i], "passed": passed, "status": status}
                    sink.write(json.dumps(record) + "\n")
                    sink.flush()
    finally:
        for process in list(getattr(pool, "_processes", {}).values()):
            process.kill()  # a hung worker would keep shutdown waiting forever
        pool.shutdown(wait=False, cancel_futures=True)
