"""evalplus's output comparison, applied in the verifier's process to decoded plain data.

evalplus 0.3.1 compares in the process that ran the program (``evalplus.eval.unsafe_execute``);
here the sandboxed child only reports what the program returned, rebuilt in this process as
real objects from plain data (:mod:`._codec`), and :class:`EvalplusComparator` applies
evalplus's rules to them statement by statement: exact ``==`` first, the MBPP special oracles
(Mbpp/164 accepts anything, Mbpp/295 also 0, Mbpp/581 and Mbpp/558 custom checks, set equality
for the tasks in ``MBPP_OUTPUT_SET_EQ_TASKS``, "output is not None" for
``MBPP_OUTPUT_NOT_NONE_TASKS``), then for floats ``np.allclose`` with ``atol`` raised to 1e-6
(and kept for the rest of the group), where the types and lengths agree.
"""

from __future__ import annotations

import importlib.metadata
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import anyio

from tracedistill.records import FunctionTests
from tracedistill.verifiers._codec import Digest, NotNone, Opaque, Yielded
from tracedistill.verifiers._protocol import OutputMode

__all__ = [
    "EvalplusComparator",
    "FunctionInputs",
    "evalplus_loaded",
    "evalplus_version",
    "load_evalplus",
    "output_mode",
]

_LOCK = threading.Lock()
_LOADED: dict[str, Any] = {}


def load_evalplus() -> dict[str, Any]:
    """Import what is reused from evalplus, once, from one thread at a time.

    evalplus pulls in numpy and ``datasets``; two threads importing that graph at once can
    see half-initialized modules, so every use goes through this function first.
    """
    with _LOCK:
        if not _LOADED:
            import numpy
            from evalplus.data.mbpp import mbpp_deserialize_inputs
            from evalplus.eval import _special_oracle, is_floats

            _LOADED.update(
                numpy=numpy,
                deserialize=mbpp_deserialize_inputs,
                oracle=_special_oracle,
                is_floats=is_floats,
            )
        return _LOADED


def evalplus_loaded() -> bool:
    """Whether :func:`load_evalplus` has run (then calling it again costs nothing)."""
    return bool(_LOADED)


def evalplus_version() -> str:
    """The installed evalplus version (part of the verifier's version: its rules may change)."""
    try:
        return importlib.metadata.version("evalplus")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        return "none"


def output_mode(dataset: str, entry_point: str, *, reference: bool) -> OutputMode:
    """How the child encodes the outputs of a function-test problem (see ``OutputMode``)."""
    if dataset != "mbpp":
        return "plain"
    oracle = load_evalplus()["oracle"]
    if entry_point in oracle.MBPP_OUTPUT_NOT_NONE_TASKS:
        return "reference-not-none" if reference else "not-none"
    if entry_point in oracle.MBPP_OUTPUT_SET_EQ_TASKS:
        return "set"
    return "plain"


_NEVER_EQUAL = (Opaque, NotNone)


def _equal(out: Any, exp: Any) -> Any:
    """``out == exp`` as evalplus computes it (unencodable outputs never equal anything)."""
    if isinstance(out, _NEVER_EQUAL) or isinstance(exp, _NEVER_EQUAL):
        return False
    if isinstance(out, Digest) is not isinstance(exp, Digest):
        return False
    return out == exp


class EvalplusComparator:
    """evalplus 0.3.1's output check (``unsafe_execute``) for one group of tests.

    Call it with each test's output, expected output and input, in order; :meth:`reset`
    between groups (evalplus checks base and plus in separate processes, so a raised ``atol``
    does not carry over).
    """

    def __init__(self, entry_point: str, atol: float, dataset: str) -> None:
        evalplus = load_evalplus()
        self._oracle = evalplus["oracle"]
        self._is_floats: Callable[[Any], bool] = evalplus["is_floats"]
        self._np = evalplus["numpy"]
        self.entry_point = entry_point
        self.initial_atol = atol
        self.atol = atol
        self.dataset = dataset

    def reset(self) -> None:
        """Start a new group."""
        self.atol = self.initial_atol

    def __call__(self, out: Any, exp: Any, inp: Any) -> bool:
        """Whether evalplus would accept ``out`` for this test (any exception: it would not)."""
        try:
            exact_match = _equal(out, exp)
            if self.dataset == "mbpp":
                exact_match = self._special(out, exp, inp, exact_match)
            if self.atol == 0 and self._is_floats(exp):
                self.atol = 1e-6  # evalplus keeps this for the rest of the group
            if not exact_match and self.atol != 0:
                if type(out) is not type(exp):
                    return False
                if isinstance(exp, list | tuple) and len(out) != len(exp):
                    return False
                return bool(self._np.allclose(out, exp, rtol=1e-07, atol=self.atol))
            return bool(exact_match)
        except Exception:
            return False

    def _special(self, out: Any, exp: Any, inp: Any, exact_match: Any) -> Any:
        """Apply evalplus's MBPP special oracles, in its order."""
        name, oracle = self.entry_point, self._oracle
        if name == "are_equivalent":  # Mbpp/164
            return True
        if name == "sum_div":  # Mbpp/295
            return exact_match or _equal(out, 0)
        if name == "surface_Area":  # Mbpp/581
            return exact_match or abs(out - oracle._surface_Area(*inp)) <= self.atol
        if name == "digit_distance_nums":  # Mbpp/558
            return exact_match or _equal(out, oracle._digit_distance_nums(*inp))
        if name in oracle.MBPP_OUTPUT_SET_EQ_TASKS:
            if isinstance(out, Opaque | Digest):
                return False
            # a cached expected value is reused: never consume it
            return set(out) == set(exp.items if isinstance(exp, Yielded) else exp)
        if name in oracle.MBPP_OUTPUT_NOT_NONE_TASKS:
            if isinstance(out, bool):
                return out == exp
            return isinstance(out, NotNone) and exp == out.flag
        return exact_match


class FunctionInputs:
    """Function tests' inputs as Python values: an evalplus problem's through evalplus's own
    ``mbpp_deserialize_inputs`` (tuples, sets, complex numbers), cached per tests object.
    """

    #: Test objects whose inputs stay cached.
    CACHED = 1024

    def __init__(self) -> None:
        # Per FunctionTests object (held, so that its id is not reused): its inputs.
        self._cache: OrderedDict[int, tuple[FunctionTests, list[Any], list[Any]]] = OrderedDict()

    async def get(self, fn: FunctionTests, meta: dict[str, Any]) -> tuple[list[Any], list[Any]]:
        """Base and plus inputs of ``fn``; ``meta`` is the problem's evalplus metadata."""
        cached = self._cache.get(id(fn))
        if cached is not None:
            self._cache.move_to_end(id(fn))
            return cached[1], cached[2]
        base, plus = list(fn.base_inputs), list(fn.plus_inputs)
        if meta.get("dataset") == "mbpp" and meta.get("task_id"):
            task_id = str(meta["task_id"])

            def convert() -> tuple[list[Any], list[Any]]:
                deserialize = load_evalplus()["deserialize"]
                return list(deserialize(task_id, base)), list(deserialize(task_id, plus))

            base, plus = await anyio.to_thread.run_sync(convert)
        self._cache[id(fn)] = (fn, base, plus)
        if len(self._cache) > self.CACHED:
            self._cache.popitem(last=False)
        return base, plus
