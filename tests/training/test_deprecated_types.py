"""Deprecated names type-check: mypy --strict sees each as the object it stands for.

At run time the old names warn (``test_loop.py``, ``tests/test_imports.py``); a type checker
must see them too, or a user's code that still runs fails CI at its ``mypy --strict`` step.
PEP 702's ``@deprecated`` marks functions and classes but not aliases, so mypy flags none of
them, even with the ``deprecated`` error code enabled: the run-time warning is the signal.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

USES = """\
from tracedistill import TrainingRun as TopRun
from tracedistill.evaluation.evaluator import request_key_of
from tracedistill.records import Message, SamplingParams
from tracedistill.training import RunDirectory, TrainingResult, TrainingRun
from tracedistill.training.base import TrainingRun as BaseRun


def keep(result: TrainingResult) -> tuple[TrainingRun, TopRun, BaseRun]:
    return result, result, result


def folder(directory: RunDirectory) -> None:
    reveal_type(directory)


reveal_type(keep)
key: str = request_key_of("m", [Message("user", "hi")], SamplingParams(max_tokens=16))
"""


@pytest.mark.slow  # mypy analyses the whole package: about a minute without its cache
def test_deprecated_names_type_check_as_what_they_stand_for(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    uses = tmp_path / "uses.py"
    uses.write_text(USES, encoding="utf-8")
    store = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
    cache = store.mkdir("mypy") if store is not None else tmp_path / "cache"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--enable-error-code=deprecated",
            "--no-error-summary",
            f"--cache-dir={cache}",
            str(uses),
        ],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    lines = done.stdout.splitlines()
    errors = [line for line in lines if ": error:" in line]
    # No error: every old name resolved to what it stands for.
    assert errors == [], done.stdout + done.stderr
    revealed = "\n".join(line for line in lines if "Revealed type" in line)
    assert '"tracedistill.training.directory.TrainingDirectory"' in revealed, revealed
    assert (
        "tuple[tracedistill.training.directory.TrainingResult, "
        "tracedistill.training.directory.TrainingResult, "
        "tracedistill.training.directory.TrainingResult]" in revealed
    ), revealed
