"""Input splits and the readers of a split (blfsd.inputs).

A line belongs to the split in which its first byte lies: a split that starts inside a line
skips to the next line, a line that crosses the split's end is read whole by that split.
Whatever the split size and the read block size, every line of a file is read exactly once,
in order, whole, with its byte offset as the key (docs/ARCHITECTURE.md, Job API).
"""
from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from blfsd.errors import UsageError
from blfsd.inputs import (BLOCK, READERS, byte_batches, file_batches, line_batches,
                          make_splits, parse_size)

_names = itertools.count()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("splits")


def write(workdir, data: bytes) -> str:
    path = os.path.join(workdir, f"input-{next(_names):06d}")
    with open(path, "wb") as f:
        f.write(data)
    return path


def reference_lines(data: bytes) -> list:
    """(offset, text, end) of every line, as a plain reading of the whole file sees it."""
    pieces = data.split(b"\n")
    if pieces[-1] == b"":
        pieces.pop()  # after a final newline (or in an empty file) there is no line
    out, pos = [], 0
    for piece in pieces:
        end = min(pos + len(piece) + 1, len(data))
        out.append((pos, piece.decode("utf-8", "surrogateescape").removesuffix("\r"), end))
        pos += len(piece) + 1
    return out


def read_all_lines(path: str, splits: list, block: int) -> list:
    """Every (offset, text) the splits yield, checking each batch on the way."""
    got = []
    size = os.path.getsize(path)
    ends = {off: end for off, _, end in reference_lines(open(path, "rb").read())}
    for split in splits:
        assert split["path"] == path
        for offsets, lines, position in line_batches(path, split["start"], split["end"],
                                                     block=block):
            assert len(offsets) == len(lines) > 0
            assert offsets == sorted(offsets)
            # a line is read by the split where its first byte lies
            assert all(split["start"] <= o < split["end"] for o in offsets), (split, offsets)
            # the position reported is where the batch's last line ends
            assert position == ends[offsets[-1]] and position <= size
            got += zip(offsets, lines)
    return got


# ---------------------------------------------------------------- contents

line_text = st.text(
    alphabet=st.sampled_from(list("abc xyz\t\r") + ["é", "日", "🎉", "ß", "\u2028", "\x00"]),
    max_size=30)
long_line = st.integers(100, 3000).map(lambda n: ("long-é-" * n)[:n])


@st.composite
def text_files(draw) -> bytes:
    lines = draw(st.lists(line_text | long_line, max_size=25))
    seps = draw(st.lists(st.sampled_from(["\n", "\r\n"]), min_size=len(lines),
                         max_size=len(lines)))
    body = "".join(l + s for l, s in zip(lines, seps))
    if lines and draw(st.booleans()):
        body = body[:-len(seps[-1])]  # no trailing newline
    return body.encode("utf-8")


raw_files = st.lists(st.sampled_from([b"\n", b"\r\n", b"\r", b"a", b"bc", b" ", b"\xc3\xa9",
                                      b"\xe6\x97\xa5", b"\xf0\x9f\x8e\x89", b"\xff", b"\xe6",
                                      b"\n\n", b"x" * 70]),
                     max_size=60).map(b"".join)

any_file = text_files() | raw_files


# ------------------------------------------------------------------ lines


@settings(max_examples=500, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=any_file, split_size=st.integers(1, 200), block=st.integers(1, 64))
@example(data=b"", split_size=1, block=1)
@example(data=b"\n", split_size=1, block=1)
@example(data=b"a\r\nb", split_size=2, block=1)   # boundary between \r and \n
@example(data=b"ab\ncd\n", split_size=3, block=1)  # boundary right after a newline
@example(data=b"ab\ncd\n", split_size=2, block=2)  # boundary right before a newline
@example(data="日本\n語".encode(), split_size=1, block=1)  # boundaries inside characters
@example(data=b"no newline at all", split_size=4, block=3)
def test_every_line_exactly_once_in_order(workdir, data, split_size, block):
    path = write(workdir, data)
    splits = make_splits([path], split_size, "lines")
    got = read_all_lines(path, splits, block)
    expected = [(o, t) for o, t, _ in reference_lines(data)]
    assert got == expected


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=any_file, split_size=st.integers(1, 300))
def test_default_block_size_gives_the_same_lines(workdir, data, split_size):
    path = write(workdir, data)
    splits = make_splits([path], split_size, "lines")
    assert read_all_lines(path, splits, BLOCK) == read_all_lines(path, splits, 1)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=st.lists(any_file, min_size=1, max_size=4), split_size=st.integers(1, 100),
       block=st.integers(1, 64))
def test_several_files_each_read_whole(workdir, files, split_size, block):
    paths = [write(workdir, d) for d in files]
    splits = make_splits(paths, split_size, "lines")
    for path, data in zip(paths, files):
        mine = [s for s in splits if s["path"] == path]
        expected = [(o, t) for o, t, _ in reference_lines(data)]
        assert read_all_lines(path, mine, block) == expected
    assert [s["path"] for s in splits] == sorted((s["path"] for s in splits), key=paths.index)


def test_lines_lose_their_newline_and_cr_only():
    data = "  keep spaces  \r\n\ttab\t\r\r\nend\r".encode()
    lines = [t for _, t, _ in reference_lines(data)]
    assert lines == ["  keep spaces  ", "\ttab\t\r", "end"]


def test_line_batches_keep_bytes_that_are_not_utf8(workdir):
    """A line that is not UTF-8 is not lost: its bad bytes become lone surrogates
    (surrogateescape), which give the very bytes back."""
    path = write(workdir, b"caf\xc3\xa9\nbad \xff byte\n\xe6\x97")
    batches = list(line_batches(path, 0, os.path.getsize(path)))
    offsets = [o for b in batches for o in b[0]]
    lines = [t for b in batches for t in b[1]]
    pos = batches[-1][2]
    assert offsets == [0, 6, 17]
    assert lines == ["café", "bad \udcff byte", "\udce6\udc97"]
    assert [t.encode("utf-8", "surrogateescape") for t in lines] == \
        [b"caf\xc3\xa9", b"bad \xff byte", b"\xe6\x97"]
    assert pos == os.path.getsize(path)


def test_a_line_longer_than_a_split_is_read_by_the_first_split_only(workdir):
    data = b"x" * 1000 + b"\nnext\n"
    path = write(workdir, data)
    splits = make_splits([path], 100, "lines")
    assert len(splits) == 11
    per_split = [[t for _, ts, _ in line_batches(path, s["start"], s["end"], block=7)
                  for t in ts] for s in splits]
    assert per_split[0] == ["x" * 1000]
    assert per_split[10] == ["next"]
    assert all(p == [] for p in per_split[1:10])


# ------------------------------------------------------------------ bytes


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=any_file, split_size=st.integers(1, 200), chunk=st.integers(1, 64))
def test_byte_batches_cover_every_byte_once(workdir, data, split_size, chunk):
    path = write(workdir, data)
    splits = make_splits([path], split_size, "bytes")
    pieces, pos = [], 0
    for s in splits:
        assert s["start"] == pos
        for offsets, chunks, position in byte_batches(path, s["start"], s["end"], chunk=chunk):
            assert offsets == [pos] and len(chunks) == 1
            assert 0 < len(chunks[0]) <= chunk
            pos += len(chunks[0])
            assert position == pos
            pieces.append(chunks[0])
        assert pos == s["end"]
    assert b"".join(pieces) == data


# ------------------------------------------------------------------ splits


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(0, 500), min_size=1, max_size=5),
       split_size=st.integers(1, 120), fmt=st.sampled_from(["lines", "bytes"]))
def test_splits_tile_each_nonempty_file(workdir, sizes, split_size, fmt):
    paths = [write(workdir, b"z" * n) for n in sizes]
    splits = make_splits(paths, split_size, fmt)
    if not any(sizes):  # nothing but empty files: one empty split, the job runs on nothing
        assert splits == [{"path": paths[0], "start": 0, "end": 0}]
        return
    for path, n in zip(paths, sizes):
        mine = [(s["start"], s["end"]) for s in splits if s["path"] == path]
        if n == 0:
            assert mine == []  # an empty file gives no map task
            continue
        assert mine[0][0] == 0 and mine[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(mine, mine[1:]))
        assert all(0 < e - s <= split_size for s, e in mine)
        assert len(mine) == -(-n // split_size)


def test_files_format_gives_one_split_per_file(workdir):
    contents = [b"", b"one line", "über\r\nzwei\n".encode(), b"x" * 10_000, b"\xff\xfe"]
    paths = [write(workdir, c) for c in contents]
    splits = make_splits(paths, 16, "files")
    assert splits == [{"path": p, "start": 0, "end": len(c)} for p, c in zip(paths, contents)]
    for s, c in zip(splits, contents):
        ((keys, values, pos),) = list(file_batches(s["path"], s["start"], s["end"]))
        assert keys == [s["path"]]
        assert values == [c.decode("utf-8", "surrogateescape")]
        assert pos == len(c)
    assert READERS["files"] is file_batches
    assert READERS["lines"] is line_batches and READERS["bytes"] is byte_batches


# ------------------------------------------------------------------ parse_size


@pytest.mark.parametrize("text,value", [
    ("4096", 4096), (4096, 4096), ("1", 1),
    ("512K", 512 << 10), ("512k", 512 << 10), ("64M", 64 << 20), ("1G", 1 << 30),
    ("2T", 2 << 40), ("64MB", 64 << 20), ("64MiB", 64 << 20), ("64mib", 64 << 20),
    ("1KB", 1024), ("1kib", 1024), (" 64M ", 64 << 20), ("1.5G", 3 << 29), ("0.5K", 512),
    ("100B", 100), ("1e3", 1000),
])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", " ", "M", "B", "abc", "12Q", "-1M", "0", "0K", "-5",
                                  "0.1", "nan", "inf", "1e400", "--1", "1..5M", "K64"])
def test_parse_size_rejects_with_a_usage_error(text):
    with pytest.raises(UsageError):
        parse_size(text)


@pytest.mark.parametrize("value", [0, -1, True])
def test_parse_size_checks_integers_too(value):
    with pytest.raises(UsageError):
        parse_size(value)
