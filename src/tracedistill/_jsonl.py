"""Append-only JSONL files that survive a writer killed mid-write, and atomic whole-file writes.

A record is one line of JSON ending in a newline, appended with a single ``write``. A crash (power
loss, a full disk, a killed process) can leave at most the last line incomplete. Such a torn
line was never acknowledged to anyone, so it is cut off before the next append (its bytes are
kept in ``<file>.torn``): otherwise the next record would be glued onto it and one corrupt line
would sit in the middle of the file. A last line that is valid JSON but lost its newline is kept
and completed. Readers skip a torn last line without changing the file.

A corrupt line anywhere else is not a torn write: it raises
:class:`~tracedistill.errors.StoreCorruptError` naming the file and line, unless the caller asks
to ``salvage`` lines that an older writer glued onto a torn one.

One writer per file at a time (callers that need it hold their own lock); readers may run
alongside a writer and see every complete line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import orjson

from tracedistill import _json
from tracedistill.errors import StoreCorruptError

__all__ = [
    "JsonlFile",
    "JsonlLine",
    "TornTail",
    "atomic_path",
    "scan",
    "write_atomic",
    "write_json_atomic",
]

log = logging.getLogger(__name__)

_TAIL_CHUNK = 1 << 16


@attrs.frozen(slots=True)
class JsonlLine:
    """One parsed line: its 1-based number, the byte offset where it starts, and the record."""

    number: int
    offset: int
    record: dict[str, Any]


@attrs.frozen(slots=True)
class TornTail:
    """An incomplete last line: where it starts, its 1-based number (0: not counted) and bytes."""

    offset: int
    number: int
    data: bytes


def _parse(raw: bytes, loads: Callable[[bytes], Any]) -> dict[str, Any] | None:
    try:
        value = loads(raw)
    except ValueError:  # orjson's and json's decode errors are ValueErrors
        return None
    return value if isinstance(value, dict) else None


def _salvage(raw: bytes, loads: Callable[[bytes], Any]) -> dict[str, Any] | None:
    """The record at the end of a line an older writer glued onto a torn one, if any."""
    start = raw.rfind(b"{")
    while start > 0:
        record = _parse(raw[start:], loads)
        if record is not None:
            return record
        start = raw.rfind(b"{", 0, start)
    return None


def scan(
    data: bytes,
    path: Path,
    *,
    loads: Callable[[bytes], Any] = _json.loads,
    salvage: bool = False,
) -> tuple[list[JsonlLine], TornTail | None]:
    """Parse the whole content of a JSONL file: its records and its torn last line, if any.

    Blank lines are skipped. The last line (terminated or not) that is not a JSON object is the
    torn tail. ``salvage`` keeps the record at the end of a corrupt earlier line (what a writer
    that did not cut a torn line leaves) instead of raising.

    Raises:
        StoreCorruptError: a line other than the last is not a JSON object.
    """
    lines: list[JsonlLine] = []
    pos, number, size = 0, 0, len(data)
    while pos < size:
        end = data.find(b"\n", pos)
        stop = size if end == -1 else end
        number += 1
        raw = data[pos:stop]
        if raw.strip():
            record = _parse(raw, loads)
            if record is None:
                if stop + 1 >= size:
                    return lines, TornTail(pos, number, data[pos:])
                record = _salvage(raw, loads) if salvage else None
                if record is None:
                    raise StoreCorruptError(path, number, "not a JSON object")
                log.warning("%s:%d: kept the record glued onto a torn line", path, number)
            lines.append(JsonlLine(number, pos, record))
        pos = stop + 1
    return lines, None


def _last_line_start(fd: int, size: int) -> int:
    """Offset of the last line of a file of ``size`` bytes (not counting a final newline)."""
    end = size - 1  # a final newline ends the last line; it does not start a new one
    while end > 0:
        start = max(end - _TAIL_CHUNK, 0)
        chunk = os.pread(fd, end - start, start)
        found = chunk.rfind(b"\n")
        if found != -1:
            return start + found + 1
        end = start
    return 0


class JsonlFile:
    """One append-only JSONL file (see the module docstring).

    Appending opens the file on first use and keeps it open until :meth:`close` (or the end of a
    ``with`` block); before the first append the torn last line, if any, is cut.

    Args:
        path: the file (created on first append, with its parent directories).
        loads: parses one line (default: exact integers of any size, as the store writes them).
        dumps: encodes one record without its newline.
        keep_torn: keep cut bytes in ``<file>.torn`` (False: drop them).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        loads: Callable[[bytes], Any] = _json.loads,
        dumps: Callable[[Any], bytes] = _json.dumps,
        keep_torn: bool = True,
    ) -> None:
        self.path = Path(path)
        self._loads = loads
        self._dumps = dumps
        self.keep_torn = keep_torn
        self._fd: int | None = None

    def __repr__(self) -> str:
        return f"JsonlFile({str(self.path)!r})"

    def __enter__(self) -> JsonlFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, *, salvage: bool = False) -> tuple[list[JsonlLine], TornTail | None]:
        """Every complete record and the torn last line, if any (the file is not changed)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return [], None
        lines, torn = scan(data, self.path, loads=self._loads, salvage=salvage)
        if torn is not None:
            log.warning(
                "%s:%d: ignoring an incomplete last line (%d bytes), left by a writer killed "
                "mid-write",
                self.path,
                torn.number,
                len(torn.data),
            )
        return lines, torn

    def records(self, *, salvage: bool = False) -> list[dict[str, Any]]:
        """Every complete record, oldest first."""
        return [line.record for line in self.read(salvage=salvage)[0]]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records())

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                self._repair(fd)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
        return self._fd

    def repair(self) -> TornTail | None:
        """Cut a torn last line (or complete a valid one missing its newline) now."""
        if self._fd is not None:
            return None  # repaired when it was opened; only this object has appended since
        if not self.path.exists():
            return None
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        try:
            return self._repair(fd)
        finally:
            os.close(fd)

    def _repair(self, fd: int) -> TornTail | None:
        size = os.fstat(fd).st_size
        if size == 0:
            return None
        start = _last_line_start(fd, size)
        raw = os.pread(fd, size - start, start)
        if raw.strip() and _parse(raw, self._loads) is None:
            number = 0  # unknown without reading the whole file; only logged
            torn = TornTail(start, number, raw)
            self._set_aside(fd, torn)
            return torn
        if not raw.endswith(b"\n"):
            # Valid JSON whose newline was lost: keep the record, finish its line.
            os.write(fd, b"\n")
        return None

    def _set_aside(self, fd: int, torn: TornTail) -> None:
        where = "dropped"
        if self.keep_torn:
            aside = self.path.with_name(self.path.name + ".torn")
            with aside.open("ab") as fh:
                fh.write(torn.data.rstrip(b"\n") + b"\n")
            where = f"moved to {aside}"
        os.ftruncate(fd, torn.offset)
        os.fsync(fd)
        log.warning(
            "%s: cut an incomplete last line (%d bytes at offset %d) left by a writer killed "
            "mid-write; its bytes were %s",
            self.path,
            len(torn.data),
            torn.offset,
            where,
        )

    def append(self, record: Mapping[str, Any], *, sync: bool = False) -> int:
        """Append one record; return the byte offset where its line starts.

        ``sync`` forces it to disk (fsync) before returning.
        """
        return self.append_bytes(self._dumps(record) + b"\n", sync=sync)

    def append_many(self, records: Iterable[Mapping[str, Any]], *, sync: bool = False) -> int:
        """Append records in one write; return the offset where the first starts."""
        return self.append_bytes(b"".join(self._dumps(r) + b"\n" for r in records), sync=sync)

    def append_bytes(self, payload: bytes, *, sync: bool = False) -> int:
        """Append whole lines already encoded (``payload`` ends in a newline)."""
        if payload and not payload.endswith(b"\n"):
            raise ValueError("a JSONL payload must end in a newline")
        fd = self._open()
        offset = os.lseek(fd, 0, os.SEEK_END)
        view = memoryview(payload)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if sync:
            os.fsync(fd)
        return offset

    def sync(self) -> None:
        """Force appended records to disk."""
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        """Close the file (appending again reopens it). Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


# --- whole-file writes -------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, durable: bool = True) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; it replaces ``path`` when the block succeeds.

    Readers see the old file or the whole new one, never a part; concurrent writers each get
    their own temporary name. ``durable`` forces the new file and its directory entry to disk.
    On an error the temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if durable:
            with tmp.open("rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _sync_directory(target.parent)


def _sync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform or filesystem can open a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(
    path: str | os.PathLike[str], data: bytes | Iterable[bytes], *, durable: bool = True
) -> int:
    """Replace ``path`` with ``data`` (bytes, or chunks written in order) atomically.

    Returns the number of bytes written.
    """
    written = 0
    with atomic_path(path, durable=durable) as tmp, tmp.open("wb") as fh:
        for chunk in (data,) if isinstance(data, bytes) else data:
            fh.write(chunk)
            written += len(chunk)
    return written


def write_json_atomic(
    path: str | os.PathLike[str], value: Any, *, indent: bool = True, durable: bool = True
) -> None:
    """Replace ``path`` with ``value`` as JSON atomically (indented for people by default)."""
    if indent:
        try:
            data = orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
        except orjson.JSONEncodeError:  # integers beyond 64 bits: written exactly, compact
            data = _json.dumps(value)
    else:
        data = _json.dumps(value)
    write_atomic(path, data, durable=durable)
