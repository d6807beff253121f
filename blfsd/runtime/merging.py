"""A reduce's input: its partition's runs merged, at most merge_factor of them at once.

Every run being merged holds one segment's bytes in memory, so a reduce that merged all
of a large partition's runs at once grew with their number. When there are more than
`[worker] merge_factor` runs, consecutive groups of them are merged first into runs of
the reduce's own: segments written into scratch slots of its worker's pool (leased like
a map's, through storage.SegmentSink, fsynced; given back as soon as a pass has read
them, and the worker frees the rest when the attempt ends, however it ends), and read
back with the same O_DIRECT reads and checks. Each pass
merges just enough runs for at most merge_factor to remain (all of them in groups of
merge_factor when even that is not enough, and then another pass); those feed the final
merge as streams. Groups are consecutive and the merge is stable (reading.merged_chunks),
so the values of equal keys come out in the very order one merge of every run would give.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import chain
from typing import Callable, Iterator, Optional

from .. import records, storage
from ..errors import FetchError, StorageError
from ..messages import AttemptSpec, SegmentLocation
from .reading import BLOCK, merged_chunks, read_verified, run_blocks, runs
from .reporter import Reporter
from .worker_files import WorkerFiles

FIRST_BATCH = 4096  # merged pairs encoded at once, before bytes per pair are known


def pass_groups(count: int, factor: int) -> list[range]:
    """The consecutive groups of runs one pass merges: from the first run on, just enough
    for at most `factor` to remain, or every run in groups of `factor` when even that is
    not enough (another pass follows)."""
    excess, start, groups = count - factor, 0, []
    while excess > 0 and count - start >= 2:  # a group of one would merge nothing
        size = min(factor, excess + 1, count - start)
        groups.append(range(start, start + size))
        excess -= size - 1
        start += size
    return groups


@dataclass
class Run:
    """A sorted run: a producer's spill, or one that a merge pass of this attempt wrote."""
    locs: list[SegmentLocation]
    own: bool = False


class Scratch:
    """Where a reduce attempt's merge passes write their runs: scratch slots of its
    worker's pool, leased on demand (one sink for the whole attempt), each given back as
    soon as every run with a segment in it has been merged into another."""

    def __init__(self, spec: AttemptSpec, files: WorkerFiles, node: str, generation: int,
                 slot_size: int, segment_max: int):
        self.spec, self.files = spec, files
        self.sink = storage.SegmentSink(node, generation, slot_size,
                                        lambda: files.lease(scratch=True), files.flush_device,
                                        spec.segment_format)
        self.segment_max = min(segment_max, self.sink.max_payload)
        self.runs = 0
        self._run_start = 0  # the first of the current run's locations
        self.live: dict[int, int] = {}  # slot -> runs in it not merged yet

    def write_run(self, chunks: Iterator[list], flags: int, reporter: Reporter) -> Run:
        """Sorted chunks of pairs as one run of segments, durable (storage rule 3) when it
        returns; each segment about segment_max bytes."""
        run, step = self.runs, FIRST_BATCH
        self.runs += 1
        start = self._run_start = len(self.sink.locations)
        batch: list = []
        for chunk in chunks:
            batch += chunk
            if len(batch) >= step:
                size = self._write(batch, run, flags)
                reporter.count("reduce_merge_bytes", size)
                reporter.maybe(reporter.progress)  # a long pass is alive too
                # the next batch aims at one segment, from this one's bytes per pair
                step = max(256, int(len(batch) * self.segment_max * 0.9 / max(1, size)))
                batch = []
        if batch:
            reporter.count("reduce_merge_bytes", self._write(batch, run, flags))
        self.sink.commit()
        spec = self.spec
        locs = [loc.replace(stage=spec.stage, map_task=spec.index, map_attempt=spec.attempt)
                for loc in self.sink.locations[start:]]
        for slot in {loc.slot for loc in locs}:
            self.live[slot] = self.live.get(slot, 0) + 1
        return Run(locs, own=True)

    def _write(self, pairs: list, run: int, flags: int) -> int:
        """Pairs as the next segments of a run (several when they exceed segment_max)."""
        spec, size = self.spec, 0
        for payload in records.chunk_pairs(pairs, self.segment_max):
            seq = len(self.sink.locations) - self._run_start
            self.sink.write(storage.SegmentId(spec.job, spec.index, spec.attempt, spec.index,
                                              run, seq, spec.stage), payload, flags)
            size += len(payload)
        return size

    def done_with(self, consumed: list[Run]) -> None:
        """These runs were merged into another: slots that hold nothing else still to be
        read, and are not being written, go back to the worker."""
        for run in consumed:
            if run.own:
                for slot in {loc.slot for loc in run.locs}:
                    self.live[slot] -= 1
        writing = self.sink.slots[-1:]
        free = [s for s, n in self.live.items() if n == 0 and s not in writing]
        if free:
            self.sink.forget(free)
            self.files.release_scratch(free)
            for s in free:
                del self.live[s]

    def close(self) -> None:
        self.sink.close()


class Merge:
    """A reduce attempt's merge of its partition's runs (merged), read with its own
    SegmentReader; closed when the reduce is done with it (or starts over)."""

    def __init__(self, spec: AttemptSpec, files: WorkerFiles, reporter: Reporter,
                 canonical: bool, scratch: Scratch, factor: int,
                 sources: Optional[list[Run]] = None):
        self.spec, self.reporter = spec, reporter
        self.sources = sources  # where to start (an early reduce merged some ahead)
        self.reader = storage.SegmentReader(files.slot)
        self.scratch = scratch
        self.factor = max(2, factor)
        self.canonical = canonical
        self.order: Callable = records.pair_order(canonical, spec.merge_values)
        self.flags = storage.FLAG_MERGED | (storage.FLAG_CANONICAL_ORDER if canonical else 0)

    def merged(self) -> Iterator:
        """Every run merged, sorted by key (and value, with sort_values); OrderError when
        keys of different runs cannot be compared."""
        return chain.from_iterable(self._chunks())

    def _chunks(self) -> Iterator[list]:
        sources = self.sources or [Run(locs) for locs in runs(self.spec.segments)]
        while len(sources) > self.factor:
            sources = self._one_pass(sources)
        yield from merged_chunks([self._blocks(r) for r in sources], self.order)

    def close(self) -> None:
        self.reader.close()

    def _one_pass(self, sources: list[Run]) -> list[Run]:
        started = time.monotonic()
        out, done = [], 0
        for group in pass_groups(len(sources), self.factor):
            out += sources[done:group.start]
            out.append(self._merge(sources[group.start:group.stop]))
            done = group.stop
        self.reporter.count("reduce_merge_passes", 1)
        self.reporter.add_time("reduce_merge_ms", time.monotonic() - started)
        return out + sources[done:]

    def merge_group(self, group: list[Run]) -> Run:
        """Consecutive runs merged into one of this attempt's own, ahead of the final merge
        (an early reduce: runtime/early.py)."""
        started = time.monotonic()
        run = self._merge(group)
        self.reporter.count("reduce_early_merges", 1)
        self.reporter.add_time("reduce_merge_ms", time.monotonic() - started)
        return run

    def _merge(self, group: list[Run]) -> Run:
        chunks = merged_chunks([self._blocks(r) for r in group], self.order)
        run = self.scratch.write_run(chunks, self.flags, self.reporter)
        self.scratch.done_with(group)
        return run

    def _blocks(self, run: Run) -> Iterator[list]:
        if not run.own:
            return run_blocks(self.spec, self.reader, self.reporter, run.locs)
        return self._own_blocks(run.locs)

    def _own_blocks(self, locs: list) -> Iterator[list]:
        """A run this attempt wrote: read and checked like a producer's; a bad one is not
        a producer's fault, so it fails this attempt (to run again) and no map."""
        for loc in locs:
            yield from records.pair_blocks(self._read_own(loc), BLOCK)[1]
            self.reporter.maybe(self.reporter.progress)

    def _read_own(self, loc: SegmentLocation) -> bytes:
        try:
            return read_verified(self.reader, self.spec.job, loc)
        except FetchError as exc:
            raise StorageError(f"a merge pass's own segment is unreadable: {exc}") from None
