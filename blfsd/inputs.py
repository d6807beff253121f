"""Input: finding files, cutting them into splits, and reading a split's records."""
from __future__ import annotations

import bz2
import contextlib
import gzip
import os
from bisect import bisect_left
from itertools import accumulate
from typing import Any, BinaryIO, Iterator, Optional, Union

from .errors import UsageError

BLOCK = 4 << 20
BYTES_CHUNK = 1 << 20


def expand_inputs(paths: list) -> list:
    """Files named, or found (sorted, not hidden) in directories named. Checks readability."""
    files: list = []
    for path in paths:
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if not n.startswith((".", "_")))
            found = [os.path.join(path, n) for n in names
                     if os.path.isfile(os.path.join(path, n))]
            if not found:
                raise UsageError(f"input directory {path} holds no files")
            files += found
        else:
            files.append(path)
    for path in files:
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise UsageError(f"cannot read input {path}: {exc.strerror}") from None
    return [os.path.abspath(f) for f in files]


COMPRESSED: dict = {".gz": lambda f: gzip.GzipFile(fileobj=f, mode="rb"),
                    ".bz2": lambda f: bz2.BZ2File(f, mode="rb")}


def compressed(path: str) -> bool:
    """Whether a file is read through a decompressor (by its name, as Hadoop does)."""
    return os.path.splitext(path)[1].lower() in COMPRESSED


def decompressed(f: BinaryIO, path: str) -> BinaryIO:
    """A split's file as its records are read: through gzip or bzip2 for .gz and .bz2."""
    opener = COMPRESSED.get(os.path.splitext(path)[1].lower())
    return f if opener is None else opener(f)


def make_splits(files: list, split_size: int, input_format: str) -> list:
    """Byte ranges [start, end) of the inputs: one per file for the 'files' format and for
    a compressed file (it cannot be cut). An empty file has no records and gives no map,
    unless every input is empty: then one empty split, and the job runs on nothing (its
    parts are empty), as on any other valid input."""
    splits = []
    for path in files:
        size = os.path.getsize(path)
        if input_format == "files" or compressed(path):
            splits.append({"path": path, "start": 0, "end": size})
            continue
        for start in range(0, size, split_size):
            splits.append({"path": path, "start": start, "end": min(size, start + split_size)})
    if not splits and files:
        splits.append({"path": files[0], "start": 0, "end": 0})
    return splits


MAX_SPLIT = 64 << 20


def split_size(files: list, asked: Optional[str], capacity: int) -> int:
    """The size asked for (--split-size), or by default enough splits of the files for
    two waves of maps over the cluster's task slots (so that a slow map does not leave the
    others idle), at least 1M and at most 64M each."""
    if asked is not None:
        return parse_size(asked)
    total = sum(os.path.getsize(f) for f in files)
    return min(MAX_SPLIT, max(1 << 20, -(-total // max(1, 2 * capacity))))


def line_cuts(path: str, split_size: int) -> list:
    """[start, end) ranges of about split_size bytes that hold whole lines (for `put`)."""
    size = os.path.getsize(path)
    cuts: list = []
    with open(path, "rb") as f:
        start = 0
        while start < size:
            end = min(size, start + max(1, split_size))
            if end < size:
                end = _after_newline(f, end - 1, size)
            cuts.append((start, end))
            start = end
    return cuts


def _after_newline(f, pos: int, size: int) -> int:
    """The offset just after the first newline at or after pos (or the end of the file)."""
    f.seek(pos)
    while True:
        block = f.read(1 << 16)
        if not block:
            return size
        i = block.find(b"\n")
        if i >= 0:
            return pos + i + 1
        pos += len(block)


Source = Union[str, BinaryIO]  # a path, or a file already open (a task's, from its worker)


@contextlib.contextmanager
def _opened(source: Source) -> Iterator[BinaryIO]:
    """The file of a path, opened here and closed after; or the open file itself."""
    if isinstance(source, str):
        with open(source, "rb") as f:
            yield f
    else:
        yield source


def line_batches(source: Source, start: int, end: int,
                 block: int = BLOCK) -> Iterator[tuple[list, list, int]]:
    """(offsets, lines, position) batches for the lines that start in [start, end).

    A line belongs to the split in which its first byte lies; so a split that starts
    inside a line skips to the next line, and a line that crosses `end` is read whole.
    Lines are decoded as UTF-8, without their newline or CR; bytes that are not UTF-8
    become lone surrogates (Python's surrogateescape), so no line is lost or altered:
    `line.encode("utf-8", "surrogateescape")` gives its bytes back, and an output line
    holding them is written as those very bytes (records.OUTPUT_ERRORS).
    """
    with _opened(source) as f:
        pos = start
        if start > 0:
            f.seek(start - 1)
            pos = start - 1 + len(f.readline())
        f.seek(pos)
        carry = b""
        while pos < end:
            data = f.read(block)
            if not data:
                if carry:
                    yield [pos], [_text(carry)], pos + len(carry)
                return
            buf = carry + data
            if buf.isascii():  # the common case: decode once, characters are bytes
                lines = buf.decode("ascii").split("\n")
                carry = lines.pop().encode("ascii")
            else:
                lines = buf.split(b"\n")
                carry = lines.pop()
            offsets = list(accumulate(map(len, lines), _next_line, initial=pos))
            n = bisect_left(offsets, end, 0, len(lines))
            if n:
                yield offsets[:n], _texts(lines[:n]), offsets[n]
            if n < len(lines):
                return
            pos = offsets[-1]


def _next_line(offset: int, length: int) -> int:
    return offset + length + 1


def _text(line: bytes) -> str:
    return line.decode("utf-8", "surrogateescape").removesuffix("\r")


def _texts(lines: list) -> list:
    """Lines as text without a trailing CR; decoded already when the block was ASCII."""
    if lines and isinstance(lines[0], str):
        if any("\r" in x for x in lines):
            return [x.removesuffix("\r") for x in lines]
        return lines
    return [_text(x) for x in lines]


def byte_batches(source: Source, start: int, end: int,
                 chunk: int = BYTES_CHUNK) -> Iterator[tuple[list, list, int]]:
    """(offsets, chunks, position): the split's bytes, each exactly once."""
    with _opened(source) as f:
        f.seek(start)
        pos = start
        while pos < end:
            data = f.read(min(chunk, end - pos))
            if not data:
                return
            yield [pos], [data], pos + len(data)
            pos += len(data)


def file_batches(source: Source, start: int, end: int,
                 path: str = "") -> Iterator[tuple[list, list, int]]:
    """One record: (the file's path, its whole text)."""
    with _opened(source) as f:
        text = f.read().decode("utf-8", "surrogateescape")
    yield [path or source], [text], end


READERS = {"lines": line_batches, "bytes": byte_batches, "files": file_batches}


def format_size(n: Any) -> str:
    """Bytes for people (1.5G), as parse_size reads them; "?" for what is not a number."""
    if not isinstance(n, (int, float)) or isinstance(n, bool):
        return "?"
    for unit in ("B", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return "?"


def parse_size(text) -> int:
    """'64M', '512K', '1G', '4096' to bytes."""
    if isinstance(text, bool) or (isinstance(text, int) and text <= 0):
        raise UsageError(f"size must be positive: {text!r}")
    if isinstance(text, int):
        return text
    s = str(text).strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(s[-1:], 1)
    number = s[:-1] if mult > 1 else s
    try:
        value = int(float(number) * mult)
    except (ValueError, OverflowError):
        raise UsageError(f"not a size: {text!r} (say e.g. 64M)") from None
    if value <= 0:
        raise UsageError(f"size must be positive: {text!r}")
    return value
