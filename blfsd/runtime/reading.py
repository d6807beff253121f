"""A task's input: its split (a first map), or segments written by the stage before it.

- A first map reads its split through the descriptor its worker opened, decompressed
  when the file is .gz or .bz2, cut into records by the job's input format.
- A later map reads every segment its one producer wrote, in the order it wrote them.
- A reduce merges the sorted runs of its partition from every producer (one run per
  producer spill) as streams, in sorted chunks (merged_chunks), never a whole partition
  in memory, each segment decoded a block at a time; at most merge_factor runs at once
  (merging.py merges more first, in passes through scratch slots).

Every segment is read with O_DIRECT and checked (storage.SegmentReader); one that fails is
read once more with fresh descriptors, then it is a fetch failure that names its producer.
"""
from __future__ import annotations

import bisect
import functools
import sys
import time
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


BLOCK = 1024  # pairs of a run held decoded at a time (at most one segment's)


def run_blocks(spec: AttemptSpec, reader: storage.SegmentReader, reporter: Reporter,
               locs: list) -> Iterator[list]:
    """One producer's run in blocks of pairs, segment by segment as they are taken: its
    current segment's encoded bytes and one block are what a run holds of memory."""
    total = len(spec.segments)
    for loc in locs:
        count, blocks = records.pair_blocks(read_checked(reader, spec.job, loc, reporter),
                                            BLOCK)
        reporter.count("reduce_segments_read", 1)
        reporter.count("reduce_input_records", count)
        reporter.maybe(min(0.99, reporter.progress + 1.0 / max(1, total)))
        yield from blocks


def merged_chunks(runs_: list, order: Callable[[Any], Any]) -> Iterator[list]:
    """Sorted runs (each an iterator of blocks of pairs) merged, in sorted chunks; stable:
    of equal keys, those of an earlier run first, exactly as heapq.merge would give them.
    OrderError when keys of different runs cannot be compared.

    Sorted in C rather than a pair at a time in Python (heapq.merge cost as much as all of
    the decoding): the least of the runs' current blocks' last keys is a bound no run can
    go below. Every pair below it is taken, and pairs equal to it from each run up to the
    first whose block ends at it (later runs' equal pairs come after all of that one's).
    Taken in run order, one stable sort merges them; each round empties at least one block."""
    try:
        heads = [[block, 0, run] for run in runs_ if (block := next(run, None))]
        while heads:
            bound = min(order(h[0][-1]) for h in heads)
            chunk: list = []
            equal_ok = True
            for h in heads:
                block, at = h[0], h[1]
                cut = (bisect.bisect_right if equal_ok else bisect.bisect_left)(
                    block, bound, lo=at, key=order)
                chunk += block[at:cut] if at or cut < len(block) else block
                h[1] = cut
                if equal_ok and not bound < order(block[-1]):  # its block ends at the bound
                    equal_ok = False
            chunk.sort(key=order)
            yield chunk
            heads = [h for h in heads if h[1] < len(h[0]) or _next_block(h)]
    except TypeError:
        raise OrderError() from None


def _next_block(head: list) -> bool:
    """The next block of a run whose block was all taken; False when it has no more."""
    head[0], head[1] = next(head[2], None), 0
    return head[0] is not None


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
