from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tracedistill.errors import ProblemSourceError
from tracedistill.problems import MathSource, openr1_math
from tracedistill.problems._io import FileRows

from .conftest import write_jsonl, write_parquet

ROWS = [{"problem": f"p{i}", "answer": str(i), "extra": "x" * 10} for i in range(5)]


def test_jsonl_json_parquet_and_gzip_read_the_same(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", ROWS)
    (tmp_path / "b.json").write_text(json.dumps({"data": ROWS}))
    (tmp_path / "c.json").write_text(json.dumps(ROWS))
    write_parquet(tmp_path / "d.parquet", ROWS)
    with gzip.open(tmp_path / "e.jsonl.gz", "wt") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in ROWS))
    for name in ("a.jsonl", "b.json", "c.json", "d.parquet", "e.jsonl.gz"):
        assert list(FileRows(tmp_path / name)) == ROWS, name


def test_parquet_reads_only_requested_columns(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "d.parquet", ROWS)
    rows = list(FileRows(path, columns=["problem", "answer", "not-there"]))
    assert rows[0] == {"problem": "p0", "answer": "0"}


def test_folder_picks_split_files(tmp_path: Path) -> None:
    write_parquet(tmp_path / "data" / "train-00000-of-00002.parquet", ROWS[:2])
    write_parquet(tmp_path / "data" / "train-00001-of-00002.parquet", ROWS[2:4])
    write_parquet(tmp_path / "data" / "test-00000-of-00001.parquet", ROWS[4:])
    assert [r["problem"] for r in FileRows(tmp_path, split="train")] == ["p0", "p1", "p2", "p3"]
    assert [r["problem"] for r in FileRows(tmp_path, split="test")] == ["p4"]
    write_jsonl(tmp_path / "other" / "x.jsonl", ROWS[:1])
    assert len(list(FileRows(tmp_path / "other", split="train"))) == 1  # no split name: all


def test_saved_dataset_folders(tmp_path: Path) -> None:
    import datasets

    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS[:1])}
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    assert len(list(FileRows(tmp_path / "dd", split="train"))) == 5
    # a repository laid out as one saved dataset per split folder (as BAAI/TACO is)
    dd["test"].save_to_disk(str(tmp_path / "repo" / "test"))
    dd["train"].save_to_disk(str(tmp_path / "repo" / "train"))
    assert len(list(FileRows(tmp_path / "repo", split="test"))) == 1
    with pytest.raises(ProblemSourceError, match="split"):
        list(FileRows(tmp_path / "dd"))


def test_bad_local_input_is_named(tmp_path: Path) -> None:
    with pytest.raises(ProblemSourceError, match="no such file"):
        FileRows(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n{oops\n')
    with pytest.raises(ProblemSourceError, match=r"bad.jsonl:2"):
        list(FileRows(bad))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProblemSourceError, match="holds no"):
        list(FileRows(tmp_path / "empty"))


_LOAD = """
import sys
from tracedistill.errors import DatasetUnavailableError
from tracedistill.problems import openr1_math, taco
from tracedistill.problems._io import HubRows
source = {"openr1": openr1_math(), "taco": taco(), "other": HubRows("someone/some-dataset")}
try:
    next(iter(source[sys.argv[1]]))
except DatasetUnavailableError as exc:
    print("DatasetUnavailableError:", exc)
"""


def _load_in_child(which: str, env: dict[str, str], tmp_path: Path) -> str:
    # A fresh interpreter: huggingface_hub reads HF_HUB_OFFLINE and HF_ENDPOINT at import time.
    full = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    full.update(env, HF_HOME=str(tmp_path / "hf"), PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run(
        [sys.executable, "-c", _LOAD, which],
        env=full,
        capture_output=True,
        text=True,
        timeout=150,
        check=True,
    )
    return done.stdout


@pytest.mark.parametrize(
    ("which", "name"), [("openr1", "open-r1/OpenR1-Math-220k"), ("taco", "BAAI/TACO")]
)
def test_hub_offline_error_names_dataset_and_local_copy(
    which: str, name: str, tmp_path: Path
) -> None:
    out = _load_in_child(which, {"HF_HUB_OFFLINE": "1"}, tmp_path)
    assert out.startswith("DatasetUnavailableError:")
    assert name in out
    assert "path=DIR" in out and "HF_HUB_OFFLINE" in out


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_hub_unreachable_error(tmp_path: Path) -> None:
    # A Hub endpoint on loopback that refuses connections, as on a machine without internet
    # (huggingface_hub retries for about 25 s before giving up).
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    out = _load_in_child("other", {"HF_ENDPOINT": endpoint}, tmp_path)
    assert "someone/some-dataset" in out and "may be unreachable" in out
    assert "local copy" in out


def test_preset_reads_local_copy_in_hub_layout(tmp_path: Path) -> None:
    rows = [
        {"problem": "What is 1+1?", "answer": "2", "source": "amc", "uuid": "u-1"},
        {"problem": "What is 2+2?", "answer": "4", "source": "aime", "uuid": "u-2"},
    ]
    write_parquet(tmp_path / "data" / "train-00000-of-00001.parquet", rows)
    problems = list(openr1_math(tmp_path))
    assert [p.id for p in problems] == ["openr1-math/u-1", "openr1-math/u-2"]
    assert [p.source for p in problems] == ["amc", "aime"]
    assert isinstance(openr1_math(tmp_path), MathSource)
