"""Top-level names: every backend and preset imports from `tracedistill`; heavy ones lazily."""

import subprocess
import sys

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
