"""Execute the example notebook headless, offline and without keys; fail on any cell error.

The notebook runs from a fresh copy of ``examples/`` alone (a temporary folder), as a user who
downloaded only that folder would run it, with the Hugging Face Hub switched off and every
provider key removed from its environment. ``--output`` keeps the executed notebook (outputs
included) for the docs site.

    python .ci/run_notebook.py [NOTEBOOK] [--output docs/reproduce_qwen3_study.ipynb]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "reproduce_qwen3_study.ipynb"
KEYS = ("OPENROUTER_API_KEY", "TINKER_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_API_KEY", "HF_TOKEN")


def offline_env(runs: Path) -> dict[str, str]:
    """The kernel's environment: no keys, no Hub, runs in ``runs``, the repository importable."""
    env = {k: v for k, v in os.environ.items() if k not in KEYS}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TRACEDISTILL_RUNS=str(runs),
        MPLBACKEND="module://matplotlib_inline.backend_inline",
    )
    env.pop("TRACEDISTILL_DATA", None)
    src = str(ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    return env


def execute(
    notebook: Path,
    output: Path | None = None,
    timeout: int = 1800,
    runs: Path | None = None,
    kernel: str = "python3",
) -> float:
    """Run ``notebook`` in a copy of its folder alone; returns the seconds it took.

    ``runs`` keeps the run directories there (a second execution resumes from them); by
    default they live and die with the temporary folder.

    Raises:
        nbclient.exceptions.CellExecutionError: a cell failed (its source and traceback said).
    """
    import nbformat
    from nbclient import NotebookClient

    with tempfile.TemporaryDirectory(prefix="tracedistill-notebook-") as tmp:
        folder = Path(tmp) / notebook.parent.name
        shutil.copytree(notebook.parent, folder, ignore=shutil.ignore_patterns("runs"))
        nb = nbformat.read(folder / notebook.name, as_version=4)
        nbformat.validate(nb)
        env = offline_env(runs.resolve() if runs else Path(tmp) / "runs")
        started = time.monotonic()
        client = NotebookClient(
            nb,
            timeout=timeout,
            kernel_name=kernel,
            coalesce_streams=True,  # progress bars' carriage returns collapse to final lines
            resources={"metadata": {"path": str(folder)}},
        )
        client.execute(env=env)  # raises CellExecutionError naming the failing cell
        seconds = time.monotonic() - started
        if output is not None:
            output.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, output)
    return seconds


def main() -> None:
    """Execute the notebook given (default: the example) and say how long it took."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebook", type=Path, nargs="?", default=ROOT / "examples" / NOTEBOOK)
    parser.add_argument("--output", type=Path, help="write the executed notebook here")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    parser.add_argument("--runs", type=Path, help="keep the run directories here (resumable)")
    parser.add_argument("--kernel", default="python3", help="the Jupyter kernel to run it in")
    args = parser.parse_args()
    seconds = execute(args.notebook, args.output, args.timeout, args.runs, args.kernel)
    print(f"{args.notebook.name}: every cell ran ({seconds:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
