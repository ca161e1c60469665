"""Lazy package exports (PEP 562): a package names its public objects without importing them.

A package ``__init__`` lists each public name with the module that defines it, imports the same
names under ``if TYPE_CHECKING:`` (so type checkers, IDEs and the import-rule tests see every
edge) and hands the table to :func:`attach`. A name's module is imported on first access and the
value cached in the package, so ``import tracedistill`` costs almost nothing and a sandbox
runner that needs one verifier module does not load the rest of the library (numpy, httpx, ...).
``tests/test_imports.py`` checks that each table agrees with its ``TYPE_CHECKING`` imports.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def attach(
    package: str,
    exports: Mapping[str, str],
    namespace: dict[str, Any],
    fallback: Callable[[str], Any] | None = None,
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return a package's ``__getattr__`` and ``__dir__`` for names loaded on first use.

    Args:
        package: the package's ``__name__`` (for error messages).
        exports: public name -> the module defining it.
        namespace: the package's ``globals()``; a loaded value is stored there, so later
            look-ups are plain attribute reads.
        fallback: resolves any other name (deprecated aliases, which warn on each use) or
            raises ``AttributeError``; without one, other names raise ``AttributeError``.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is not None:
            value = getattr(importlib.import_module(module), name)
            namespace[name] = value
            return value
        if fallback is not None:
            return fallback(name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
