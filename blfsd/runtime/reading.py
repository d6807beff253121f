"""A task's input: its split (a first map), or segments written by the stage before it.

- A first map reads its split through the descriptor its worker opened, decompressed
  when the file is .gz or .bz2, cut into records by the job's input format.
- A later map reads every segment its one producer wrote, in the order it wrote them.
- A reduce merges the sorted runs of its partition from every producer (one run per
  producer spill) as streams: heapq.merge, never a whole partition in memory.

Every segment is read with O_DIRECT and checked (storage.SegmentReader); one that fails is
read once more with fresh descriptors, then it is a fetch failure that names its producer.
"""
from __future__ import annotations

import functools
import heapq
import sys
from typing import BinaryIO, Iterator

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
    for keys, values, at in batches:
        reporter.count("map_input_records", len(keys))
        done = (position() if position else at - split.start) / size
        yield keys, values
        reporter.maybe(min(1.0, done))


def segment_batches(spec: AttemptSpec, files: WorkerFiles,
                    reporter: Reporter) -> Iterator[tuple[list, list]]:
    """(keys, values) batches of what a later map's producer wrote, in its order."""
    reader = storage.SegmentReader(files.slot)
    segments = sorted(spec.segments, key=lambda s: (s.map_task, s.run, s.seq))
    try:
        for n, loc in enumerate(segments, 1):
            pairs = records.decode_pairs(read_checked(reader, spec.job, loc))
            reporter.count("map_input_records", len(pairs))
            reporter.count("shuffle_bytes_read", loc.length)
            yield [p[0] for p in pairs], [p[1] for p in pairs]
            reporter.maybe(n / max(1, len(segments)))
    finally:
        reader.close()


def read_checked(reader: storage.SegmentReader, job_id: str, loc: SegmentLocation) -> bytes:
    """One segment's payload, read and checked, a second time if need be."""
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


def merged(spec: AttemptSpec, reader: storage.SegmentReader, reporter: Reporter,
           canonical: bool) -> Iterator:
    """A reduce's input: every run of its partition merged, sorted by key (and value,
    with sort_values); OrderError when keys of different runs cannot be compared."""
    total = len(spec.segments)

    def read_run(locs: list) -> Iterator:
        for loc in locs:
            payload = read_checked(reader, spec.job, loc)
            reporter.count("reduce_segments_read", 1)
            # bytes of the pools (the nodes' disks) this attempt read: blfs ui's metrics
            reporter.count("shuffle_bytes_read", loc.length)
            reporter.maybe(min(0.99, reporter.progress + 1.0 / max(1, total)))
            yield from records.decode_pairs(payload)

    order = records.pair_order(canonical, spec.merge_values)
    stream = heapq.merge(*[read_run(locs) for locs in runs(spec.segments)], key=order)
    while True:
        try:
            item = next(stream)
        except StopIteration:
            return
        except TypeError:
            raise OrderError() from None
        yield item


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
