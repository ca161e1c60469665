"""Names kept one release under an old spelling: each use warns, naming its replacement.

Every alias below resolves to the very object of its replacement and emits a
``DeprecationWarning`` that points at the caller's line, on every use (not only the first).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

#: (module, old name, the replacement's dotted path)
ALIASES = [
    (
        "tracedistill.experiment",
        "SamplerFactory",
        "tracedistill.experiment.config.ExperimentSamplerFactory",
    ),
    (
        "tracedistill.experiment.config",
        "SamplerFactory",
        "tracedistill.experiment.config.ExperimentSamplerFactory",
    ),
    ("tracedistill.teachers.engine", "Generation", "tracedistill.teachers.engine.GenerationRun"),
    ("tracedistill.teachers", "Completion", "tracedistill.teachers.base.TeacherCompletion"),
    ("tracedistill.teachers.base", "Completion", "tracedistill.teachers.base.TeacherCompletion"),
    (
        "tracedistill.evaluation.evaluator",
        "SamplerFactory",
        "tracedistill.evaluation.evaluator.CheckpointSamplerFactory",
    ),
    (
        "tracedistill.evaluation.evaluator",
        "request_key_of",
        "tracedistill.records.messages.evaluation_request_key",
    ),
    *(
        ("tracedistill.evaluation.base", name, f"tracedistill.clients.base.{name}")
        for name in (
            "Completion",
            "ModelClient",
            "Prompt",
            "Sampler",
            "SamplerError",
            "greedy",
            "prompt_text",
        )
    ),
    (
        "tracedistill.evaluation.samplers",
        "AnthropicClient",
        "tracedistill.clients.anthropic.AnthropicClient",
    ),
    (
        "tracedistill.evaluation.samplers",
        "OpenAICompatibleSampler",
        "tracedistill.clients.openai_compat.OpenAICompatibleSampler",
    ),
    (
        "tracedistill.evaluation.samplers.openai_compat",
        "OpenAICompatibleSampler",
        "tracedistill.clients.openai_compat.OpenAICompatibleSampler",
    ),
    (
        "tracedistill.evaluation.samplers.local",
        "LocalSampler",
        "tracedistill.clients.local.LocalSampler",
    ),
    *(
        ("tracedistill.evaluation.samplers.tinker", name, f"tracedistill.clients.tinker.{name}")
        for name in ("DEFAULT_LIVE_SAMPLERS", "LiveSamplerLimit", "TinkerSampler")
    ),
]


def _resolve(dotted: str) -> object:
    home, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(home), name)


@pytest.mark.parametrize(("module", "old", "new"), ALIASES)
def test_an_alias_warns_naming_its_replacement_and_is_the_same_object(
    module: str, old: str, new: str
) -> None:
    package = importlib.import_module(module)
    for _ in range(2):  # every use warns, not only the first (the value is not cached)
        with pytest.warns(
            DeprecationWarning, match=rf"{module}\.{old} is deprecated; use {new}$"
        ) as caught:
            value = getattr(package, old)
        assert value is _resolve(new)
        assert [Path(w.filename).name for w in caught] == [Path(__file__).name]
    assert old not in getattr(package, "__all__", ())  # `import *` stays quiet


@pytest.mark.parametrize(("module", "old", "new"), ALIASES)
def test_from_import_of_an_alias_warns_at_the_importing_line(
    module: str, old: str, new: str
) -> None:
    code = (
        "import warnings\n"
        "warnings.simplefilter('error', DeprecationWarning)\n"
        f"try:\n    from {module} import {old}\n"
        "except DeprecationWarning as e:\n    print(e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip() == f"{module}.{old} is deprecated; use {new}"


def test_an_unknown_name_still_raises_attribute_error() -> None:
    from tracedistill.experiment import config

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AttributeError, match="Nonesuch"):
            _ = config.Nonesuch  # type: ignore[attr-defined]


def test_the_current_names_import_quietly() -> None:
    # What the package itself uses (and exports from the top level) never warns.
    code = (
        "import warnings\n"
        "warnings.simplefilter('error', DeprecationWarning)\n"
        "import tracedistill, tracedistill.evaluation as e, tracedistill.experiment as x\n"
        "for m in (tracedistill, e, x):\n"
        "    [getattr(m, n) for n in m.__all__]\n"
        "from tracedistill.teachers import *\n"
        "from tracedistill.evaluation.evaluator import *\n"
        "from tracedistill.evaluation.samplers import *\n"
        "from tracedistill.evaluation.base import *\n"
        "print('quiet')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip() == "quiet"
