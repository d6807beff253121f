"""A task's input: its split (a first map), or segments written by the stage before it.

- A first map reads its split through the descriptor its worker opened, decompressed
  when the file is .gz or .bz2, cut into records by the job's input format.
- A later map reads every segment its one producer wrote, in the order it wrote them.
- A reduce merges the sorted runs of its partition from every producer (one run per
  producer spill) as streams: heapq.merge, never a whole partition in memory, each
  segment decoded one pair at a time; at most merge_factor runs at once (merging.py
  merges more in passes, through scratch slots).

Every segment is read with O_DIRECT and checked (storage.SegmentReader); one that fails is
read once more with fresh descriptors, then it is a fetch failure that names its producer.
"""
from __future__ import annotations

import bisect
import functools
import sys
import time
from itertools import islice
from typing import Any, BinaryIO, Callable, Iterator

from .. import records, storage
from ..errors import FetchError
from ..inputs import READERS, compressed, decompressed
from ..messages import AttemptSpec, SegmentLocation
from .reporter import Reporter
from .worker_files import WorkerFiles


class OrderError(Exception):
    """Keys of different runs could not be compared with each other."""


def split_batches(spec: AttemptSpec, f: BinaryIO,
                  reporter: Reporter) -> Iterator[tuple[list, list]]:
    """(keys, values) batches of a first map's split, with its progress reported."""
    split = spec.split
    read = READERS[spec.input_format]
    if spec.input_format == "files":
        read = functools.partial(read, path=split.path)
    size = max(1, split.end - split.start)
    if compressed(split.path):  # one split per file: read to its end, whatever its size
        source = decompressed(f, split.path)
        batches = read(source, 0, sys.maxsize)
        position = f.tell  # of the compressed bytes: the progress there is to tell
    else:
        batches = read(f, split.start, split.end)
        position = None
    counted = 0
    for keys, values, at in batches:
        reporter.count("map_input_records", len(keys))
        # of the file (compressed or not), within the split: a line across its end is
        # read whole, and its bytes past the end count for the next split
        now = position() if position else min(at - split.start, size)
        reporter.count("map_input_bytes", now - counted)
        counted = now
        yield keys, values
        reporter.maybe(min(1.0, now / size))


def segment_batches(spec: AttemptSpec, files: WorkerFiles,
                    reporter: Reporter) -> Iterator[tuple[list, list]]:
    """(keys, values) batches of what a later map's producer wrote, in its order."""
    reader = storage.SegmentReader(files.slot)
    segments = sorted(spec.segments, key=lambda s: (s.map_task, s.run, s.seq))
    try:
        for n, loc in enumerate(segments, 1):
            pairs = records.decode_pairs(read_checked(reader, spec.job, loc, reporter))
            reporter.count("map_input_records", len(pairs))
            yield [p[0] for p in pairs], [p[1] for p in pairs]
            reporter.maybe(n / max(1, len(segments)))
    finally:
        reader.close()


def read_checked(reader: storage.SegmentReader, job_id: str, loc: SegmentLocation,
                 reporter: Reporter) -> bytes:
    """One segment's payload, read and checked, a second time if need be; its bytes and
    the time it took are counted (shuffle_read_bytes, shuffle_read_ms)."""
    started = time.monotonic()
    payload = read_verified(reader, job_id, loc)
    reporter.add_time("shuffle_read_ms", time.monotonic() - started)
    reporter.count("shuffle_read_bytes", len(payload))
    return payload


def read_verified(reader: storage.SegmentReader, job_id: str, loc: SegmentLocation) -> bytes:
    """One segment's payload, read and checked, a second time with fresh descriptors if
    need be; FetchError naming its producer when it still fails."""
    expect = expected(job_id, loc)
    try:
        return reader.read(loc, expect)[0]
    except FetchError:
        reader.close()  # a second try with fresh file descriptors and buffer
        try:
            return reader.read(loc, expect)[0]
        except FetchError as exc:
            raise FetchError(str(exc), map_task=loc.map_task, node=loc.node) from None


def expected(job_id: str, loc: SegmentLocation) -> storage.SegmentId:
    """What the segment at a location must say it is."""
    return storage.SegmentId(job_id, loc.map_task, loc.map_attempt, loc.partition, loc.run,
                             loc.seq, loc.stage)


def runs(segments: list[SegmentLocation]) -> list:
    """Segments grouped into sorted runs (one per producer spill), each in sequence order."""
    by_run: dict = {}
    for loc in segments:
        by_run.setdefault((loc.map_task, loc.run), []).append(loc)
    return [sorted(locs, key=lambda x: x.seq) for _, locs in sorted(by_run.items())]


def run_pairs(spec: AttemptSpec, reader: storage.SegmentReader, reporter: Reporter,
              locs: list) -> Iterator:
    """The pairs of one producer's run, segment by segment as they are taken, each
    decoded one pair at a time (records.stream_pairs): its encoded bytes are what a run
    holds of memory."""
    total = len(spec.segments)
    for loc in locs:
        count, pairs = records.stream_pairs(read_checked(reader, spec.job, loc, reporter))
        reporter.count("reduce_segments_read", 1)
        reporter.count("reduce_input_records", count)
        reporter.maybe(min(0.99, reporter.progress + 1.0 / max(1, total)))
        yield from pairs


BLOCK = 1024  # pairs taken from each stream at a time by merge_streams


def merge_streams(streams: list, order: Callable[[Any], Any]) -> Iterator:
    """Sorted streams merged into one, stable: of equal keys, those of an earlier stream
    first, exactly as heapq.merge gives them; OrderError when keys of different streams
    cannot be compared."""
    try:
        for chunk in _merged_chunks(streams, order):
            yield from chunk
    except TypeError:
        raise OrderError() from None


def _merged_chunks(streams: list, order: Callable[[Any], Any]) -> Iterator[list]:
    """The merge in chunks, sorted in C rather than a pair at a time in Python (heapq.merge
    cost as much as all of the decoding). Each stream holds a block of BLOCK pairs; the
    least of the blocks' last keys is a bound no stream can go below. Every pair below it
    is taken, and pairs equal to it from each stream up to the first whose block ends at
    it (those after it may have more such pairs to come only after that one's). Taken in
    stream order, one stable sort of them merges them; each round empties one block."""
    blocks = [[block, 0, s] for s in streams if (block := list(islice(s, BLOCK)))]
    while blocks:
        bound = min(order(b[0][-1]) for b in blocks)
        chunk: list = []
        equal_ok = True
        for b in blocks:
            block, at = b[0], b[1]
            cut = (bisect.bisect_right if equal_ok else bisect.bisect_left)(
                block, bound, lo=at, key=order)
            chunk += block[at:cut] if at or cut < len(block) else block
            b[1] = cut
            if equal_ok and not bound < order(block[-1]):  # its block ends at the bound
                equal_ok = False
        chunk.sort(key=order)
        yield chunk
        blocks = [b for b in blocks if b[1] < len(b[0]) or _refill(b)]


def _refill(b: list) -> bool:
    """The next block of an emptied stream; False when it has none."""
    b[0], b[1] = list(islice(b[2], BLOCK)), 0
    return bool(b[0])


def unreadable_producers(spec: AttemptSpec, files: WorkerFiles) -> list:
    """Every producer whose segments this attempt cannot read (all re-run at once)."""
    reader = storage.SegmentReader(files.slot)
    bad = set()
    try:
        for loc in spec.segments:
            if loc.map_task in bad:
                continue
            try:
                reader.read(loc, expected(spec.job, loc))
            except FetchError:
                bad.add(loc.map_task)
    finally:
        reader.close()
    return sorted(bad)
