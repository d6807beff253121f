"""The job's output: a last-stage task's part file, through the descriptor its worker made.

Lines are `key<TAB>value` (records.format_line; an mrjob job's own OUTPUT_PROTOCOL lines),
encoded once, in blocks, with the size and crc32 of what was written (a cluster output is
recorded with them and checked by its readers).
"""
from __future__ import annotations

import contextlib
import os
import zlib
from itertools import chain, islice, starmap
from typing import Any, Callable, Iterable, Iterator, Optional

from .. import records


class PartWriter:
    """A part file: lines of text (or bytes) written in blocks, counted and checksummed."""

    BLOCK = 1 << 20

    def __init__(self, fd: int, path: str = ""):
        self.fd = fd
        self.path = path  # where it is, to name it when a write fails
        self.size = self.crc = 0
        self._lines: list = []
        self._held = 0
        self._closed = False

    def write(self, line: Any) -> None:
        """A line of text, or of bytes (each block holds one kind)."""
        if self._lines and type(line) is not type(self._lines[0]):
            self.flush()
        self._lines.append(line)
        self._held += len(line)
        if self._held >= self.BLOCK:
            self.flush()

    def write_lines(self, lines: list) -> None:
        """Lines in order, as write() would take them one by one; a batch of one kind is
        taken at once (a reduce's output, 1024 lines a call)."""
        kinds = set(map(type, lines))
        if len(kinds) != 1:
            for line in lines:
                self.write(line)
            return
        if self._lines and type(self._lines[0]) not in kinds:
            self.flush()
        self._lines += lines
        self._held += sum(map(len, lines))
        if self._held >= self.BLOCK:
            self.flush()

    def flush(self) -> None:
        if not self._lines:
            return
        if isinstance(self._lines[0], bytes):
            data = b"".join(self._lines)
        else:
            data = "".join(self._lines).encode("utf-8", records.OUTPUT_ERRORS)
        self._lines, self._held = [], 0
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)
        view = memoryview(data)
        with self._named():
            while view:
                view = view[os.write(self.fd, view):]

    def restart(self) -> None:
        """Forget everything written (a task that starts over)."""
        self._lines, self._held, self.size, self.crc = [], 0, 0, 0
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)

    def finish(self) -> None:
        """Everything on disk (fsync)."""
        self.flush()
        with self._named():
            os.fsync(self.fd)

    @contextlib.contextmanager
    def _named(self) -> Iterator[None]:
        """An OSError of a write names the part file (a full disk says where)."""
        try:
            yield
        except OSError as exc:
            if exc.filename or not self.path:
                raise
            raise OSError(exc.errno, exc.strerror, self.path) from None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self.fd)


class PartOutput:
    """A last-stage task's output: its pairs as lines of the part file."""

    def __init__(self, part: PartWriter, format_line: Optional[Callable] = None):
        self.part = part
        self.format = format_line or records.format_line
        self.records = 0

    def add(self, mapper: Callable, keys: list, values: list) -> None:
        """A map-only last step: run the map over a batch, and write what it yields."""
        self.add_pairs(chain.from_iterable(map(mapper, keys, values)))

    BATCH = 1024  # pairs formatted and written together

    def add_pairs(self, pairs: Iterable) -> None:
        fmt, write_lines, it = self.format, self.part.write_lines, iter(pairs)
        while batch := list(islice(it, self.BATCH)):
            write_lines(list(starmap(fmt, batch)))
            self.records += len(batch)
