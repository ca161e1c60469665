"""Append-only JSONL files that survive a writer killed mid-write, and atomic whole-file writes.

A record is one line of JSON ending in a newline, appended with a single ``write``. A crash (power
loss, a full disk, a killed process) can leave at most the last line incomplete. Such a torn
line was never acknowledged to anyone, so it is cut off before the next append (its bytes are
kept in ``<file>.torn``): otherwise the next record would be glued onto it and one corrupt line
would sit in the middle of the file. A last line that is valid JSON but lost its newline is kept
and completed. Readers skip a torn last line without changing the file. Either way the torn
line is logged (and, for files that ask for it, warned about as :class:`TornWriteWarning`).

A corrupt line anywhere else is not a torn write: it raises
:class:`~tracedistill.errors.StoreCorruptError` naming the file and line, unless the caller asks
to ``salvage`` lines that an older writer glued onto a torn one.

One writer per file at a time (callers that need it hold their own lock); readers may run
alongside a writer and see every complete line. Appends are handed to the operating system before
they return (they survive the writer being killed); ``sync`` forces them to disk (fsync) when a
caller's durability policy asks for it.

Users: the trace store (``store/jsonl.py``), the evaluation log (``evaluation/results.py``) and
the training directory's metrics and checkpoints (``training/directory.py``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import orjson

from tracedistill import _json
from tracedistill.errors import StoreCorruptError, StoreError

__all__ = [
    "IndexedLine",
    "JsonlFile",
    "JsonlLine",
    "TornTail",
    "TornWriteWarning",
    "atomic_path",
    "scan",
    "write_atomic",
    "write_json_atomic",
]

log = logging.getLogger(__name__)

_TAIL_CHUNK = 1 << 16
_READ_CHUNK = 1 << 20

#: ``(line number, byte offset, record)`` from :meth:`JsonlFile.index`; a line matched by the
#: caller's header pattern gives the pattern's groups instead of a record, and line number 0.
IndexedLine = tuple[int, int, dict[str, Any] | tuple[bytes, ...]]


class TornWriteWarning(UserWarning):
    """A JSONL file's last line was incomplete (its writer was killed mid-write) and is ignored."""


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


def _lines(
    data: bytes,
    path: Path,
    pos: int,
    stop: int,
    *,
    loads: Callable[[bytes], Any],
    salvage: bool = False,
) -> Generator[tuple[int, int, dict[str, Any]], None, TornTail | None]:
    """Yield ``(number, offset, record)`` for the lines of ``data[pos:stop]``; return the torn tail.

    ``pos`` starts a line; line numbers are counted from the start of ``data``. The last line of
    ``data`` (terminated or not) that is not a JSON object is returned as the torn tail.
    """
    if pos >= stop:
        return None
    number = data.count(b"\n", 0, pos)
    size = len(data)
    while pos < stop:
        end = data.find(b"\n", pos)
        line_end = size if end == -1 else end
        number += 1
        raw = data[pos:line_end]
        if raw.strip():
            record = _parse(raw, loads)
            if record is None:
                if line_end + 1 >= size:
                    return TornTail(pos, number, data[pos:])
                record = _salvage(raw, loads) if salvage else None
                if record is None:
                    raise StoreCorruptError(path, number, _NOT_A_RECORD)
                log.warning("%s:%d: kept the record glued onto a torn line", path, number)
            yield number, pos, record
        pos = line_end + 1
    return None


_NOT_A_RECORD = "not a valid record (not JSON, or not a JSON object)"


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
    parsed = _lines(data, path, 0, len(data), loads=loads, salvage=salvage)
    while True:
        try:
            number, offset, record = next(parsed)
        except StopIteration as done:
            torn: TornTail | None = done.value
            return lines, torn
        lines.append(JsonlLine(number, offset, record))


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
        warn: also report a torn last line as a :class:`TornWriteWarning` (it is always logged).
        readonly: never change the file: appending raises StoreError and nothing is repaired.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        loads: Callable[[bytes], Any] = _json.loads,
        dumps: Callable[[Any], bytes] = _json.dumps,
        keep_torn: bool = True,
        warn: bool = False,
        readonly: bool = False,
    ) -> None:
        self.path = Path(path)
        self._loads = loads
        self._dumps = dumps
        self.keep_torn = keep_torn
        self.warn = warn
        self.readonly = readonly
        self._fd: int | None = None
        # The file's size after this object's last append (None: not known, ask the file). One
        # writer per file, so no one else moves it; anything that cuts the file resets it.
        self._end: int | None = None

    def __repr__(self) -> str:
        return f"JsonlFile({str(self.path)!r})"

    def __enter__(self) -> JsonlFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading -------------------------------------------------------------------------------

    def _data(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return b""

    def read(self, *, salvage: bool = False) -> tuple[list[JsonlLine], TornTail | None]:
        """Every complete record and the torn last line, if any (the file is not changed)."""
        lines, torn = scan(self._data(), self.path, loads=self._loads, salvage=salvage)
        if torn is not None:
            self._report_torn(torn, None)
        return lines, torn

    def records(self, *, salvage: bool = False) -> list[dict[str, Any]]:
        """Every complete record, oldest first."""
        return [line.record for line in self.read(salvage=salvage)[0]]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records())

    def index(
        self, *, header: re.Pattern[bytes] | None = None, repair: bool = True
    ) -> Iterator[IndexedLine]:
        """Yield ``(line number, byte offset, record)`` for every complete line, oldest first.

        Meant for building an in-memory index (key -> offset) when a file is opened. With
        ``header`` (a multi-line pattern matching one whole line, newline included) a matching
        line yields the pattern's groups (bytes) and line number 0 instead of a parsed record:
        indexing a large file is then one regex pass; lines that do not match are parsed.

        With ``repair`` (ignored when read-only), once the lines are consumed a torn last line
        is cut as before an append and the file is opened for appending (and created).

        Raises:
            StoreCorruptError: a line other than the last is not a JSON object.
        """
        data = self._data()
        pos = 0
        if header is not None:
            for match in header.finditer(data):
                start = match.start()
                if start != pos:
                    torn = yield from _lines(data, self.path, pos, start, loads=self._loads)
                    assert torn is None  # a matching line follows: this was not the last line
                yield 0, start, match.groups()
                pos = match.end()
        torn = yield from _lines(data, self.path, pos, len(data), loads=self._loads)
        repair = repair and not self.readonly
        if torn is not None and repair:
            self._cut(torn)
        elif torn is not None:
            self._report_torn(torn, None)
        if repair:
            self._open()

    def read_at(self, offset: int) -> dict[str, Any]:
        """The record on the line that starts at byte ``offset`` (one an index gave)."""
        with self.path.open("rb") as fh:
            fh.seek(offset)
            record: dict[str, Any] = self._loads(fh.readline())
            return record

    def iter_from(self, offset: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
        """Yield ``(offset, record)`` for every complete line from byte ``offset`` on.

        Reads in chunks (memory stays flat whatever the file's size); blank lines are skipped,
        an incomplete last line is not yielded.

        Raises:
            StoreCorruptError: a complete line is not valid JSON.
        """
        try:
            fh = self.path.open("rb")
        except FileNotFoundError:
            return
        with fh:
            fh.seek(offset)
            start = offset
            pending = b""
            count = 0
            while chunk := fh.read(_READ_CHUNK):
                pending += chunk
                lines = pending.split(b"\n")
                pending = lines.pop()
                for line in lines:
                    count += 1
                    if line.strip():
                        try:
                            record = self._loads(line)
                        except ValueError as exc:  # orjson's and json's decode errors
                            number = self._line_number(start) + count
                            raise StoreCorruptError(
                                self.path, number, f"not a valid record ({exc})"
                            ) from None
                        yield offset, record
                    offset += len(line) + 1

    def _line_number(self, offset: int) -> int:
        """How many lines end before byte ``offset`` (only computed for an error message)."""
        with self.path.open("rb") as fh:
            return fh.read(offset).count(b"\n")

    # --- repairing -----------------------------------------------------------------------------

    def _open(self) -> int:
        if self._fd is None:
            if self.readonly:
                raise StoreError(f"{self.path}: opened read-only; nothing can be appended")
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
        if self._fd is not None or self.readonly:
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
            number = 0  # unknown without reading the whole file; only reported
            torn = TornTail(start, number, raw)
            self._report_torn(torn, fd)
            return torn
        if not raw.endswith(b"\n"):
            # Valid JSON whose newline was lost: keep the record, finish its line.
            os.write(fd, b"\n")
        return None

    def _cut(self, torn: TornTail) -> None:
        """Cut a torn tail found by a scan (its line number known) before appending."""
        if self._fd is not None:
            self._report_torn(torn, self._fd)
            return
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        try:
            self._report_torn(torn, fd)
        finally:
            os.close(fd)

    def _report_torn(self, torn: TornTail, fd: int | None) -> None:
        """Log (and maybe warn about) a torn last line; with ``fd``, set its bytes aside."""
        where = f"{self.path}:{torn.number}" if torn.number else str(self.path)
        message = (
            f"{where}: the last line is incomplete ({len(torn.data)} bytes at offset "
            f"{torn.offset}), most likely because a writer was killed mid-write; it was never "
            f"acknowledged and is ignored"
        )
        if fd is not None:
            message += "; its bytes were dropped"
            if self.keep_torn:
                aside = self.path.with_name(self.path.name + ".torn")
                with aside.open("ab") as fh:
                    fh.write(torn.data.rstrip(b"\n") + b"\n")
                message = message.replace("dropped", f"moved to {aside}")
            self._end = None
            os.ftruncate(fd, torn.offset)
            os.fsync(fd)
        log.warning("%s", message)
        if self.warn:
            warnings.warn(message, TornWriteWarning, stacklevel=4)

    # --- appending -----------------------------------------------------------------------------

    def append(self, record: Mapping[str, Any], *, sync: bool = False) -> int:
        """Append one record; return the byte offset where its line starts.

        ``sync`` forces it to disk (fsync) before returning.
        """
        return self.append_bytes(self._dumps(record) + b"\n", sync=sync)

    def append_many(self, records: Iterable[Mapping[str, Any]], *, sync: bool = False) -> int:
        """Append records in one write; return the offset where the first starts."""
        return self.append_bytes(b"".join(self._dumps(r) + b"\n" for r in records), sync=sync)

    def append_bytes(self, payload: bytes, *, sync: bool = False) -> int:
        """Append whole lines already encoded (``payload`` ends in a newline).

        Returns the byte offset where they start.

        Raises:
            StoreError: the file was opened read-only.
        """
        if payload and not payload.endswith(b"\n"):
            raise ValueError("a JSONL payload must end in a newline")
        fd = self._fd if self._fd is not None else self._open()
        offset = self._end
        if offset is None:
            offset = os.lseek(fd, 0, os.SEEK_END)
        # Unknown until the whole payload is written: a failed or partial write leaves the next
        # append to ask the file again.
        self._end = None
        size = len(payload)
        written = os.write(fd, payload) if size else 0  # one call for a whole line, as a rule
        if written < size:
            view = memoryview(payload)[written:]
            while view:
                view = view[os.write(fd, view) :]
        self._end = offset + size
        if sync:
            os.fsync(fd)
        return offset

    def sync(self) -> None:
        """Force appended records to disk (fsync); a no-op when nothing was opened for writing."""
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        """Close the file (appending again reopens it). Idempotent."""
        fd, self._fd = self._fd, None
        self._end = None
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
