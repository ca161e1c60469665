"""The examples as a user meets them: a valid self-contained notebook, the same study in the
notebook and the script, a plan offline that names what is unavailable, and a notebook runner
that fails on any cell error. (`nox -s notebook`, run by `.ci/run`, executes the notebook.)"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
NOTEBOOK = EXAMPLES / "reproduce_qwen3_study.ipynb"
SCRIPT = EXAMPLES / "reproduce_qwen3_study.py"
SHARED_DATA = ROOT / ".." / "shared" / "data"


def _cells(kind: str = "code") -> list[dict[str, Any]]:
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    return [c for c in nb["cells"] if c["cell_type"] == kind]


def _source(cell: dict[str, Any]) -> str:
    src = cell["source"]
    return src if isinstance(src, str) else "".join(src)


def _cell(cell_id: str) -> str:
    (found,) = [c for c in _cells() if c["id"] == cell_id]
    return _source(found)


def test_notebook_is_nbformat_45_with_ids_and_no_stored_outputs() -> None:
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)  # raises on any schema problem
    assert (nb.nbformat, nb.nbformat_minor) >= (4, 5)
    ids = [c.get("id") for c in nb.cells]
    assert all(ids) and len(set(ids)) == len(ids)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.id


def test_notebook_needs_nothing_beside_it_nor_outside_the_repository() -> None:
    siblings = {p.stem for p in EXAMPLES.glob("*.py")}
    for cell in _cells():
        source = _source(cell)
        assert "sys.path" not in source, cell["id"]
        assert "../" not in source and "shared" not in source, cell["id"]
        tree = ast.parse(source.replace("await ", ""))  # top-level await is a notebook feature
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [(node.module or "").split(".")[0]]
            else:
                continue
            assert not set(names) & siblings, f"cell {cell['id']} imports {names}"
    setup = _cell("setup")
    assert 'os.environ["TRACEDISTILL_DATA"]' in setup and "TRACEDISTILL_RUNS" in setup
    awaited = [c["id"] for c in _cells() if "await small.run(" in _source(c)]
    assert awaited == ["small-generate", "small-train"]
    assert "plot_steps()" in _cell("small-steps") and "plot_pareto()" in _cell("small-pareto")
    assert _cell("full-build").rstrip().endswith("plan")  # the plan is the cell's (HTML) value


def _script() -> Any:
    spec = importlib.util.spec_from_file_location("reproduce_qwen3_study_under_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _describe(experiment: Any) -> Any:
    return (
        [r.describe() for r in experiment.runs],
        [b.name for b in experiment.benchmarks],
        experiment.trainer.name if hasattr(experiment.trainer, "name") else None,
        str(experiment.baseline),
    )


@pytest.mark.parametrize("with_data", [False, True])
def test_notebook_and_script_define_the_same_study(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_data: bool
) -> None:
    if with_data and not (SHARED_DATA / "math500_test.jsonl").is_file():
        pytest.skip(f"no benchmark files at {SHARED_DATA}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline: the R1 runs are unavailable
    monkeypatch.delenv("TRACEDISTILL_DATA", raising=False)
    monkeypatch.setenv("TRACEDISTILL_RUNS", str(tmp_path / "runs"))
    if with_data:
        monkeypatch.setenv("TRACEDISTILL_DATA", str(SHARED_DATA))
    namespace: dict[str, Any] = {}
    exec(_cell("setup"), namespace)
    exec(_cell("full-build"), namespace)
    script = _script()
    experiment, missing = script.build(tmp_path / "runs" / "qwen3-study", script.data_dir())
    assert _describe(namespace["study"]) == _describe(experiment)
    assert sorted(namespace["unavailable"]) == sorted(missing)
    expected_missing = {"r1-math", "r1-code"} | (set() if with_data else {"MATH-500", "MBPP+"})
    assert set(missing) == expected_missing
    plan = namespace["plan"]
    assert [r.run for r in plan.rows] == ["sonnet-math", "sonnet-code"]
    assert plan.base_eval_requests == (878 if with_data else 0)
    markup = plan._repr_html_()
    assert "<table>" in markup and "Not available" in markup
    assert not (tmp_path / "runs").exists()  # a plan writes nothing


def test_script_prints_the_plan_offline_without_data(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TRACEDISTILL_DATA", "OPENROUTER_API_KEY", "TINKER_API_KEY")
    }
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT / "src"))
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--dir", str(tmp_path / "study")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=240,
        check=True,
    ).stdout
    assert "Experiment plan (dry run" in out and "| sonnet-math |" in out
    assert "- MATH-500: no data (pass --data or set TRACEDISTILL_DATA) and no network" in out
    assert "- r1-code:" in out
    assert not (tmp_path / "study").exists()


def _runner() -> Any:
    spec = importlib.util.spec_from_file_location("run_notebook", ROOT / ".ci" / "run_notebook.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_notebook_runner_fails_on_a_cell_error_and_keeps_outputs(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    folder = tmp_path / "examples"
    folder.mkdir()
    good = nbformat.v4.new_notebook()
    good.cells = [
        nbformat.v4.new_code_cell("import anyio, os\nawait anyio.sleep(0)", id="a"),
        nbformat.v4.new_code_cell(
            "print(os.environ.get('HF_HUB_OFFLINE'), 'OPENROUTER_API_KEY' in os.environ)", id="b"
        ),
    ]
    nbformat.write(good, folder / "good.ipynb")
    bad = nbformat.v4.new_notebook()
    bad.cells = [nbformat.v4.new_code_cell("raise ValueError('boom')", id="c")]
    nbformat.write(bad, folder / "bad.ipynb")
    runner = _runner()
    out = tmp_path / "out" / "good.ipynb"
    os.environ["OPENROUTER_API_KEY"] = "sk-or-test-not-a-key"
    try:
        runner.execute(folder / "good.ipynb", out, timeout=120)
    finally:
        del os.environ["OPENROUTER_API_KEY"]
    executed = nbformat.read(out, as_version=4)
    assert executed.cells[1].outputs[0]["text"] == "1 False\n"  # offline, no keys
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="boom"):
        runner.execute(folder / "bad.ipynb", None, timeout=120)
