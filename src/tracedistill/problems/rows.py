"""Row readers: local JSON/JSONL/Parquet files, saved datasets and Hugging Face Hub datasets.

Every reader yields plain ``dict`` rows lazily and can be iterated more than once. Nothing here
knows about problems; the sources in this package turn rows into problems.
"""

from __future__ import annotations

import gzip
import importlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Protocol, cast

import orjson

from tracedistill.errors import DatasetUnavailableError, ProblemSourceError

__all__ = ["FileRows", "HubRows", "RowReader", "iter_jsonl", "open_rows"]

log = logging.getLogger(__name__)

_INT64 = 2.0**63
_BATCH = 1024
_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".json", ".json.gz", ".parquet", ".arrow")


class RowReader(Protocol):
    """Anything that yields dict rows, again on every iteration, and describes itself."""

    @property
    def description(self) -> str:
        """Where the rows come from, for messages."""
        ...

    def __iter__(self) -> Iterator[dict[str, Any]]: ...


def _may_have_lost_int(value: Any) -> bool:
    # orjson turns integers beyond 64 bits into floats; such a float is integral and huge.
    if isinstance(value, float):
        return abs(value) >= _INT64 and value.is_integer()
    if isinstance(value, dict):
        return any(_may_have_lost_int(v) for v in value.values())
    if isinstance(value, list):
        return any(_may_have_lost_int(v) for v in value)
    return False


def _loads_line(line: bytes) -> Any:
    # orjson is fast but rounds integers beyond 64 bits and refuses NaN/Infinity (MBPP+ holds
    # both): such lines are parsed again by json, which keeps Python ints and reads NaN.
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)
    if _may_have_lost_int(value):
        return json.loads(line)
    return value


def _open_binary(path: Path) -> IO[bytes]:
    if path.name.endswith(".gz"):
        return cast(IO[bytes], gzip.open(path, "rb"))
    return path.open("rb")


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the JSON objects of a JSON Lines file (optionally gzipped), integers kept exact."""
    path = Path(path)
    with _open_binary(path) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = _loads_line(line)
            except ValueError as exc:
                raise ProblemSourceError(f"{path}:{number}: not valid JSON ({exc})") from exc
            if not isinstance(row, dict):
                raise ProblemSourceError(f"{path}:{number}: expected a JSON object per line")
            yield row


def _iter_json(path: Path, split: str | None) -> Iterator[dict[str, Any]]:
    with _open_binary(path) as handle:
        raw = handle.read()
    try:
        data = json.loads(raw)
    except ValueError:
        # Many ".json" files on the Hub are JSON Lines in disguise.
        yield from iter_jsonl(path)
        return
    if isinstance(data, dict):
        if split and isinstance(data.get(split), list):
            data = data[split]
        else:
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise ProblemSourceError(
                    f"{path}: a JSON object file must hold exactly one list of rows (or one per "
                    f"split, selected with split=...); found keys {sorted(data)[:10]}"
                )
            data = lists[0]
    if not isinstance(data, list):
        raise ProblemSourceError(f"{path}: expected a list of row objects")
    for number, row in enumerate(data):
        if not isinstance(row, dict):
            raise ProblemSourceError(f"{path}: row {number} is not an object")
        yield row


def _iter_parquet(path: Path, columns: Sequence[str] | None) -> Iterator[dict[str, Any]]:
    # pyarrow ships no type information; datasets depends on it, so it is always installed.
    pq: Any = importlib.import_module("pyarrow.parquet")
    parquet = pq.ParquetFile(path)
    names = set(parquet.schema_arrow.names)
    wanted = None if columns is None else [c for c in columns if c in names]
    for batch in parquet.iter_batches(batch_size=_BATCH, columns=wanted):
        yield from batch.to_pylist()


def _is_saved_dataset(path: Path) -> bool:
    return (path / "state.json").exists() or (path / "dataset_dict.json").exists()


def _iter_arrow(path: Path, columns: Sequence[str] | None) -> Iterator[dict[str, Any]]:
    import datasets

    # Memory-mapped: the file's rows are read batch by batch, never all at once.
    yield from _iter_dataset(datasets.Dataset.from_file(str(path)), columns)


def _split_matches(path: Path, root: Path, split: str) -> bool:
    parts = path.relative_to(root).parts
    stem = parts[-1].split(".")[0]
    return split in parts[:-1] or stem == split or stem.startswith((f"{split}-", f"{split}_"))


class FileRows:
    """Rows of local files: one JSON/JSONL/Parquet file, a folder of them, or a saved dataset.

    A folder is read as a dataset saved with ``save_to_disk`` when it holds one, otherwise as
    every supported file below it in name order; when ``split`` is given and some files are
    named after it (``train.jsonl``, ``train-00000-of-00002.parquet``, ``train/...``), only
    those are read. ``columns`` limits what is read from Parquet (other columns are skipped on
    disk, which matters for datasets that carry long traces beside the problem).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        split: str | None = None,
        columns: Sequence[str] | None = None,
    ) -> None:
        self.path = Path(path).expanduser()
        self.split = split
        self.columns = None if columns is None else tuple(columns)
        if not self.path.exists():
            raise ProblemSourceError(f"{self.path}: no such file or folder")

    @property
    def description(self) -> str:
        """Where the rows come from."""
        return str(self.path) + (f" (split {self.split})" if self.split else "")

    def files(self) -> list[Path]:
        """The files this reader reads, in order."""
        if self.path.is_file():
            return [self.path]
        found = sorted(
            p for p in self.path.rglob("*") if p.is_file() and p.name.endswith(_SUFFIXES)
        )
        if self.split:
            matching = [p for p in found if _split_matches(p, self.path, self.split)]
            found = matching or found
        if not found:
            raise ProblemSourceError(
                f"{self.path}: holds no .jsonl, .json or .parquet file and no saved dataset"
            )
        return found

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.path.is_dir():
            if _is_saved_dataset(self.path):
                yield from _iter_saved(self.path, self.split, self.columns)
                return
            if self.split and _is_saved_dataset(self.path / self.split):
                yield from _iter_saved(self.path / self.split, None, self.columns)
                return
        for path in self.files():
            name = path.name
            if name.endswith(".parquet"):
                yield from _iter_parquet(path, self.columns)
            elif name.endswith(".arrow"):
                yield from _iter_arrow(path, self.columns)
            elif name.endswith((".json", ".json.gz")):
                yield from _iter_json(path, self.split)
            else:
                yield from iter_jsonl(path)


def _iter_saved(
    path: Path, split: str | None, columns: Sequence[str] | None
) -> Iterator[dict[str, Any]]:
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if split is None or split not in loaded:
            raise ProblemSourceError(
                f"{path}: a saved DatasetDict with splits {sorted(loaded)}; pass split=..."
            )
        loaded = loaded[split]
    yield from _iter_dataset(loaded, columns)


def _iter_dataset(dataset: Any, columns: Sequence[str] | None) -> Iterator[dict[str, Any]]:
    names = getattr(dataset, "column_names", None)
    if columns is not None and names:
        keep = [c for c in columns if c in names]
        if keep:
            dataset = dataset.select_columns(keep)
    for batch in dataset.iter(batch_size=_BATCH):
        keys = list(batch)
        if not keys:
            continue
        for values in zip(*(batch[k] for k in keys), strict=True):
            yield dict(zip(keys, values, strict=True))


def _local_copy_hint(dataset: str) -> str:
    return (
        f"To use a local copy, download it where the Hub is reachable (for example "
        f"`huggingface-cli download {dataset} --repo-type dataset --local-dir DIR`, or "
        f"`datasets.load_dataset({dataset!r}).save_to_disk(DIR)`), copy DIR here and pass "
        f"path=DIR (a folder of Parquet/JSONL files, one such file, or a saved dataset). A copy "
        f"already in the Hugging Face cache is used when HF_HUB_OFFLINE=1 is set."
    )


class HubRows:
    """Rows of a Hugging Face Hub dataset, loaded through ``datasets.load_dataset``.

    With ``streaming=False`` (default) the dataset is downloaded once into the Hugging Face
    cache and read from memory-mapped Arrow files, so repeated passes cost no download and the
    rows are never all in memory. Any failure to load becomes a
    :class:`~tracedistill.errors.DatasetUnavailableError` that names the dataset and says how
    to point the source at a local copy.
    """

    def __init__(
        self,
        dataset: str,
        *,
        config: str | None = None,
        split: str = "train",
        revision: str | None = None,
        streaming: bool = False,
        columns: Sequence[str] | None = None,
    ) -> None:
        self.dataset = dataset
        self.config = config
        self.split = split
        self.revision = revision
        self.streaming = streaming
        self.columns = None if columns is None else tuple(columns)
        self._loaded: Any = None

    @property
    def description(self) -> str:
        """Where the rows come from."""
        config = f", config {self.config}" if self.config else ""
        return f"Hugging Face dataset {self.dataset} (split {self.split}{config})"

    def load(self) -> Any:
        """Load (or return the already loaded) ``datasets`` object, raising a clear error."""
        if self._loaded is not None:
            return self._loaded
        try:
            import datasets

            self._loaded = datasets.load_dataset(
                self.dataset,
                self.config,
                split=self.split,
                revision=self.revision,
                streaming=self.streaming,
            )
        except (KeyboardInterrupt, SystemExit, MemoryError):
            raise
        except Exception as exc:
            offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false")
            state = (
                "HF_HUB_OFFLINE is set and no cached copy was found"
                if offline
                else "the Hub may be unreachable"
            )
            raise DatasetUnavailableError(
                f"Could not load {self.description}: {type(exc).__name__}: {exc!s:.300} "
                f"({state}). {_local_copy_hint(self.dataset)}"
            ) from exc
        return self._loaded

    def __iter__(self) -> Iterator[dict[str, Any]]:
        yield from _iter_dataset(self.load(), self.columns)


def open_rows(
    *,
    dataset: str | None,
    path: str | os.PathLike[str] | None,
    config: str | None = None,
    split: str = "train",
    revision: str | None = None,
    streaming: bool = False,
    columns: Sequence[str] | None = None,
) -> RowReader:
    """Return a reader of a local ``path`` when given, else of the Hub ``dataset``."""
    if path is not None:
        return FileRows(path, split=split, columns=columns)
    if dataset is None:
        raise ProblemSourceError("give a local path or a Hugging Face dataset name")
    return HubRows(
        dataset,
        config=config,
        split=split,
        revision=revision,
        streaming=streaming,
        columns=columns,
    )
