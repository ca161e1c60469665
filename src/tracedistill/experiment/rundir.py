"""The run directory: where an experiment keeps every piece of its state (layout in the package
docstring), and the small files that say what finished.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from tracedistill import _json
from tracedistill._jsonl import write_atomic, write_json_atomic
from tracedistill._version import __version__
from tracedistill.evaluation.benchmarks import Benchmark
from tracedistill.experiment.config import STAGES, Run
from tracedistill.records import Problem, content_hash
from tracedistill.store.jsonl import JsonlTraceStore
from tracedistill.training.base import TrainingDirectory

__all__ = ["ExperimentDirectory", "StageLog", "read_problems", "write_json", "write_problems"]

logger = logging.getLogger(__name__)


def write_json(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data`` as indented JSON, atomically (its folder created)."""
    write_json_atomic(path, data)


def write_problems(path: Path, problems: Sequence[Problem]) -> None:
    """Replace ``path`` with one JSON line per problem, atomically."""
    write_atomic(path, (_json.dumps(p.to_dict(), newline=True) for p in problems))


def read_problems(path: Path) -> list[Problem]:
    """The problems of a file written by :func:`write_problems`."""
    with path.open("rb") as fh:
        return [Problem.from_dict(_json.loads(line)) for line in fh if line.strip()]


class ExperimentDirectory:
    """The folder an :class:`~tracedistill.Experiment` keeps all its state in."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def run_dir(self, run: Run) -> Path:
        """The folder of one run."""
        return self.path / "runs" / run.name

    def training_dir(self, run: Run) -> Path:
        """The trainer's run directory of one run (config, metrics, checkpoints)."""
        return self.run_dir(run) / "training"

    def pool_file(self, run: Run) -> Path:
        """The run's problem pool (sampled once, then reused)."""
        return self.run_dir(run) / "pool.jsonl"

    def train_set_file(self, run: Run) -> Path:
        """The request keys selected for training, and why the rest were not."""
        return self.run_dir(run) / "train_set.json"

    def store_dir(self, run: Run) -> Path:
        """The trace store of a run's teacher and task (shared by runs with the same ones)."""
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", run.teacher.name).strip("_") or "teacher"
        return self.path / "traces" / f"{slug}-{run.task}"

    def stages(self, run: Run) -> StageLog:
        """The run's ``stages.json`` (its folder created)."""
        folder = self.run_dir(run)
        folder.mkdir(parents=True, exist_ok=True)
        return StageLog(folder / "stages.json", content_hash(run.describe()))

    @contextlib.contextmanager
    def log_to_file(self) -> Iterator[None]:
        """Copy the library's log (INFO and above) to ``experiment.log`` while the block runs."""
        handler = logging.FileHandler(self.path / "experiment.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.INFO)
        root = logging.getLogger("tracedistill")
        previous = root.level
        if root.level == logging.NOTSET or root.level > logging.INFO:
            root.setLevel(logging.INFO)
        root.addHandler(handler)
        try:
            yield
        finally:
            root.removeHandler(handler)
            root.setLevel(previous)
            handler.close()

    def write_provenance(
        self,
        runs: Sequence[Run],
        benchmarks: Sequence[Benchmark],
        baseline: object,
        open_stores: Mapping[Path, JsonlTraceStore],
    ) -> None:
        """Rewrite ``experiment.json``: version, configuration hashes, benchmarks, spend."""
        described = {run.name: self._run_provenance(run) for run in runs}
        spend = self._spend(runs, open_stores)
        data = {
            "tracedistill_version": __version__,
            "config_hash": content_hash([r["config_hash"] for r in described.values()]),
            "benchmarks": [
                {
                    "name": b.name,
                    "kind": str(b.kind),
                    "problems": len(b.problems),
                    "source": b.source,
                    "sha256": b.sha256,
                    "notes": list(b.notes),
                }
                for b in benchmarks
            ],
            "baseline": None if baseline is None else str(baseline),
            "runs": described,
            "spend_usd": spend,
            "total_spend_usd": sum(spend.values()),
        }
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.path / "experiment.json", data)

    def _run_provenance(self, run: Run) -> dict[str, Any]:
        stages_file = self.run_dir(run) / "stages.json"
        ckpts = TrainingDirectory(self.training_dir(run)).checkpoints()
        tinker_ids = sorted(
            {
                str(c.sampler.path).removeprefix("tinker://").split("/")[0]
                for c in ckpts
                if c.sampler is not None and c.sampler.is_tinker
            }
        )
        return {
            "config": run.describe(),
            "config_hash": content_hash(run.describe()),
            "stages": orjson.loads(stages_file.read_bytes()) if stages_file.is_file() else {},
            "tinker_run_ids": tinker_ids,
        }

    def _spend(
        self, runs: Sequence[Run], open_stores: Mapping[Path, JsonlTraceStore]
    ) -> dict[str, float]:
        spend: dict[str, float] = {}
        for path in sorted({self.store_dir(r) for r in runs}):
            if not (path / "traces.jsonl").is_file():
                continue
            store = open_stores.get(path)
            if store is not None:
                spend[path.name] = store.spend_usd()
            else:
                with JsonlTraceStore(path, readonly=True) as ro:
                    spend[path.name] = ro.spend_usd()
        return spend


class StageLog:
    """``stages.json``: which stages of a run finished, under which configuration."""

    def __init__(self, path: Path, config_hash: str) -> None:
        self.path = path
        self.config_hash = config_hash
        self.data: dict[str, Any] = {"config_hash": config_hash, "stages": {}}
        if path.is_file():
            found = orjson.loads(path.read_bytes())
            if found.get("config_hash") == config_hash:
                self.data = found
            else:
                logger.warning(
                    "%s: the run's configuration changed; every stage runs again (each resumes "
                    "from what is stored, so nothing paid for is bought twice)",
                    path.parent.name,
                )

    def done(self, stage: str) -> bool:
        """Whether ``stage`` finished under the current configuration."""
        return stage in self.data["stages"]

    def finish(self, stage: str, info: Mapping[str, Any]) -> None:
        """Record that ``stage`` finished (with what it reports) and forget the later stages."""
        stages = self.data["stages"]
        # A later stage's result depends on this one: finishing it (again) means the later
        # stages must run again too (each resumes from what is stored).
        if stage != "evaluate":
            for name in STAGES[STAGES.index(stage) + 1 :]:
                stages.pop(name, None)
        stages[stage] = dict(info)
        write_json(self.path, self.data)
