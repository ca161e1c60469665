"""Lazy package exports (PEP 562): a package names its public objects without importing them.

A package ``__init__`` lists each public name with the module that defines it, imports the same
names under ``if TYPE_CHECKING:`` (so type checkers, IDEs and the import-rule tests see every
edge) and hands the table to :func:`attach`. A name's module is imported on first access and the
value cached in the package, so ``import tracedistill`` costs almost nothing and a sandbox
runner that needs one verifier module does not load the rest of the library (numpy, httpx, ...).
``tests/test_imports.py`` checks that each table agrees with its ``TYPE_CHECKING`` imports.

A renamed or moved public name is kept one release as a deprecated alias: a module (or a
package, through :func:`attach`) resolves it with :func:`deprecated`, which warns on every use
and names the replacement, while type checkers see the alias under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any


def attach(
    package: str,
    exports: Mapping[str, str],
    namespace: dict[str, Any],
    fallback: Callable[[str], Any] | None = None,
    *,
    renamed: Mapping[str, str] | None = None,
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return a package's ``__getattr__`` and ``__dir__`` for names loaded on first use.

    Args:
        package: the package's ``__name__`` (for error messages).
        exports: public name -> the module defining it.
        namespace: the package's ``globals()``; a loaded value is stored there, so later
            look-ups are plain attribute reads.
        fallback: resolves any other name (deprecated aliases, which warn on each use) or
            raises ``AttributeError``; without one, other names raise ``AttributeError``.
        renamed: deprecated alias -> its replacement's dotted path (see :func:`deprecated`).
    """
    old_names = renamed or {}

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is not None:
            value = getattr(importlib.import_module(module), name)
            namespace[name] = value
            return value
        if name in old_names:
            return _renamed_value(package, name, old_names[name])
        if fallback is not None:
            return fallback(name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__


def deprecated(
    module: str,
    renamed: Mapping[str, str],
    fallback: Callable[[str], Any] | None = None,
) -> Callable[[str], Any]:
    """Return a module's ``__getattr__`` for names kept one release under an old spelling.

    Each use of an old name warns (``DeprecationWarning``, pointing at the caller's line) with
    the replacement's dotted path, and returns the replacement itself (the same object).

    Args:
        module: the module's ``__name__`` (for messages).
        renamed: old name -> the replacement's dotted path, ``"package.module.Name"``.
        fallback: resolves any other name, or raises ``AttributeError``; without one, other
            names raise ``AttributeError``.
    """

    def __getattr__(name: str) -> Any:
        if name in renamed:
            return _renamed_value(module, name, renamed[name])
        if fallback is not None:
            return fallback(name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__


def _renamed_value(module: str, name: str, target: str) -> Any:
    # Called from a module's __getattr__: stacklevel 3 is the line that used the old name.
    warnings.warn(f"{module}.{name} is deprecated; use {target}", DeprecationWarning, stacklevel=3)
    home, _, new = target.rpartition(".")
    return getattr(importlib.import_module(home), new)
