"""What an import costs: ``import tracedistill`` and a verifier's runner process stay light.

Package ``__init__`` files export their names lazily (``tracedistill._lazy``): each lists its
names with their modules and imports the same names under ``if TYPE_CHECKING:``. These tests
check that the two lists agree, that every public name still resolves, and, in fresh
processes, which modules an import or a sandbox runner actually loads.
"""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import tracedistill
from tracedistill.records import CodeTests, Problem, TaskKind, VerdictReason

SRC = Path(__file__).resolve().parents[1] / "src"

#: Never loaded by ``import tracedistill`` nor by a verifier's runner process.
HEAVY = ("torch", "transformers", "tinker", "numpy")
#: Library parts a runner never uses (the sandbox needs none of the client stack).
NOT_IN_RUNNER = (
    *HEAVY,
    "httpx",
    "anyio",
    "tracedistill.clients",
    "tracedistill.tokenizer",
    "tracedistill.teachers",
    "tracedistill.evaluation",
    "tracedistill.training",
    "tracedistill.experiment",
    "tracedistill.problems",
    "tracedistill.records",
)


def _lazy_packages() -> dict[str, Path]:
    """Every package whose ``__init__`` exports lazily, by module name."""
    found = {}
    for init in sorted((SRC / "tracedistill").rglob("__init__.py")):
        if "_lazy.attach(" in init.read_text(encoding="utf-8"):
            parts = init.parent.relative_to(SRC).parts
            found[".".join(parts)] = init
    return found


LAZY = _lazy_packages()


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120
    )
    return done.stdout


def test_the_lazy_packages_are_found() -> None:
    # A rule over no packages passes vacuously.
    assert {"tracedistill", "tracedistill.verifiers", "tracedistill.training"} <= set(LAZY)


@pytest.mark.parametrize("package", sorted(LAZY))
def test_the_lazy_table_matches_the_type_checking_imports(package: str) -> None:
    # What type checkers see (the imports) is what runs (the table), name by name.
    # A deprecated alias is either imported as ``X as X`` (re-exported for type checkers, left
    # out of ``__all__``, resolved through the package's ``_RENAMED`` table) or written
    # ``Old = New`` beside the imports (resolved by the package's fallback); both warn.
    tree = ast.parse(LAZY[package].read_text(encoding="utf-8"))
    imported: dict[str, str] = {}
    moved: dict[str, str] = {}  # `X as X`: old name -> the module it is imported from
    aliases: dict[str, str] = {}  # `Old = New`: old name -> new name
    eager: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tracedistill."):
            eager.update(alias.asname or alias.name for alias in node.names)
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for stmt in node.body:
                if isinstance(stmt, ast.Assign):
                    (target,) = stmt.targets
                    assert isinstance(target, ast.Name) and isinstance(stmt.value, ast.Name)
                    aliases[target.id] = stmt.value.id
                    continue
                assert isinstance(stmt, ast.ImportFrom) and stmt.module, ast.dump(stmt)
                for alias in stmt.names:
                    assert alias.asname in {None, alias.name}, alias.name
                    table = imported if alias.asname is None else moved
                    table[alias.name] = stmt.module
    module = importlib.import_module(package)
    assert imported == module._EXPORTS
    renamed = getattr(module, "_RENAMED", {})
    assert moved == {old: new.rpartition(".")[0] for old, new in renamed.items()}
    assert set(module.__all__) == set(imported) | eager
    assert set(module.__all__) <= set(dir(module))
    for old in moved:
        assert old not in module.__all__, old
        with pytest.warns(DeprecationWarning, match=renamed[old]):
            getattr(module, old)
    # An `Old = New` alias names an exported object, is not exported itself and warns.
    for old, new in aliases.items():
        assert new in imported and old not in module.__all__, old
        with pytest.warns(DeprecationWarning, match=new):
            assert getattr(module, old) is getattr(module, new), old


@pytest.mark.parametrize("package", sorted(LAZY))
def test_no_lazy_name_is_also_a_submodule(package: str) -> None:
    # Importing a submodule binds it on its package: a lazy name of the same spelling would
    # then resolve to the module (``problems.dedup``: the function is imported eagerly).
    module = importlib.import_module(package)
    submodules = {info.name for info in pkgutil.iter_modules(module.__path__)}
    assert not set(module._EXPORTS) & submodules


@pytest.mark.parametrize("package", sorted(LAZY))
def test_every_exported_name_resolves_to_its_module_object(package: str) -> None:
    module = importlib.import_module(package)
    for name in module._EXPORTS:
        home = importlib.import_module(module._EXPORTS[name])
        assert getattr(module, name) is getattr(home, name), name


@pytest.mark.parametrize("package", sorted(LAZY))
def test_an_unknown_name_raises_attribute_error_naming_it(package: str) -> None:
    module = importlib.import_module(package)
    with pytest.raises(AttributeError, match=rf"module '{package}' has no attribute 'Nonesuch'"):
        _ = module.Nonesuch
    assert not hasattr(module, "Nonesuch")


def test_import_tracedistill_loads_nothing_heavy() -> None:
    out = _run(
        "import json, sys, tracedistill\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{(*HEAVY, 'tracedistill', 'httpx', 'anyio')!r})))\n"
    )
    assert json.loads(out) == ["tracedistill", "tracedistill._lazy"]


def test_from_tracedistill_imports_every_public_name_in_a_fresh_process() -> None:
    names = ", ".join(n for n in tracedistill.__all__)
    out = _run(
        f"import sys\nfrom tracedistill import {names}\n"
        "import tracedistill\n"
        "print(sorted(set(tracedistill.__all__) - set(dir(tracedistill))))\n"
        "print(sorted(m for m in ('torch', 'tinker') if m in sys.modules))\n"
    )
    # Even with every name resolved, the heavy backends import torch and tinker on use only.
    assert out.split("\n")[:2] == ["[]", "[]"]


@pytest.mark.parametrize(
    "handler", ["tracedistill.verifiers.sandbox", "tracedistill.verifiers._math_worker"]
)
def test_a_runner_process_imports_only_what_it_uses(handler: str) -> None:
    # As the pool starts a runner (``python -I``, the package's root on the path) and as the
    # worker loads its handler: the module, then its start-up hook.
    code = (
        f"import json, sys; sys.path.insert(0, {str(SRC)!r})\n"
        "import importlib, tracedistill.verifiers._worker\n"
        f"module = importlib.import_module({handler!r})\n"
        "getattr(module, 'warm_up', lambda: None)()\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", code], check=True, capture_output=True, text=True, timeout=120
    )
    loaded = set(json.loads(done.stdout))
    heavy = sorted(m for m in loaded if any(m == h or m.startswith(h + ".") for h in NOT_IN_RUNNER))
    assert not heavy, f"a {handler} runner loads {heavy}"


NUMPY_IN_THE_SANDBOX = Problem(
    kind=TaskKind.CODE,
    prompt="Print which heavy modules are loaded, then use numpy.",
    tests=CodeTests(stdio=[{"stdin": "", "stdout": "[]\n6\n"}]),
)


@pytest.mark.anyio
async def test_a_sandboxed_program_starts_without_numpy_and_can_import_it(
    tmp_path: Path,
) -> None:
    # The sample is forked from the runner, so what it finds loaded the runner had loaded.
    from tracedistill.verifiers import CodeVerifier

    program = (
        "```python\nimport sys\n"
        f"print([m for m in {NOT_IN_RUNNER!r} if m in sys.modules])\n"
        "import numpy\nprint(int(numpy.arange(4).sum()))\n```"
    )
    async with CodeVerifier(workers=1, cache_dir=tmp_path) as verifier:
        result = await verifier.check(NUMPY_IN_THE_SANDBOX, program)
    assert result.reason is VerdictReason.PASSED, result.details


@pytest.mark.parametrize(
    "statement",
    [
        "import tracedistill; value = tracedistill.TrainingRun",
        "from tracedistill.training import RunDirectory as value",
        "import tracedistill.training as t; value = t.TrainingRun",
    ],
)
def test_a_deprecated_alias_resolves_first_thing_in_a_fresh_process(statement: str) -> None:
    # Nothing imported beforehand: the alias's module loads through the package's fallback
    # (which once recursed when the module was not loaded yet).
    out = _run(
        "import warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        f"    {statement}\n"
        "print(value.__name__, [w.category.__name__ for w in caught])\n"
    )
    assert out.split(" ", 1)[0] in {"TrainingResult", "TrainingDirectory"}
    assert "DeprecationWarning" in out
