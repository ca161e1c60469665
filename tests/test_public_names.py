"""Top-level names: every backend and preset imports from `tracedistill`; heavy ones lazily."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import tracedistill


def test_every_exported_name_resolves() -> None:
    for name in tracedistill.__all__:
        assert getattr(tracedistill, name) is not None, name


def test_import_pulls_in_neither_torch_nor_tinker_until_a_backend_is_used() -> None:
    code = (
        "import sys, tracedistill\n"
        "assert 'torch' not in sys.modules and 'tinker' not in sys.modules\n"
        "from tracedistill import LocalTrainer\n"
        "assert LocalTrainer.__module__ == 'tracedistill.training.local'\n"
        "from tracedistill.training.local import LocalTrainer as direct\n"
        "assert direct is LocalTrainer\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_readme_study_imports_from_tracedistill_alone() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    study = [b for b in blocks if "Experiment(" in b]
    assert study, "the README's study example is gone"
    for block in study:
        imports = [
            n for n in ast.walk(ast.parse(block)) if isinstance(n, ast.Import | ast.ImportFrom)
        ]
        assert imports
        for node in imports:
            assert isinstance(node, ast.ImportFrom) and node.module == "tracedistill", ast.unparse(
                node
            )
            assert {a.name for a in node.names} <= set(tracedistill.__all__)
