"""A task's output for the stage after it: buffered, combined, partitioned, sorted, and
spilled as segments into leased slots (storage.SegmentSink).

A map's output always went this way; in a pipeline so does a middle step's reduce. The
shape of what is written is the consumer's (pipeline.py): its number of partitions, its
step's partitioner and combiner, sorted by key (and by value too, with sort_values) when
it feeds a reduce, or one unsorted partition when it feeds a map.
"""
from __future__ import annotations

import time
from collections import Counter, _count_elements  # type: ignore[attr-defined]
from dataclasses import dataclass
from itertools import chain, groupby, repeat, starmap
from typing import Any, Callable, Iterable, Iterator, Optional

from .. import records, storage
from ..job import _NOT_CONSTANT, Job, constant_value, has_combiner
from .reporter import Reporter

_NOTHING: dict = {}


@dataclass
class Shape:
    """What the consumer of an output needs: how it is cut, combined and sorted."""
    partitions: int
    partition: Callable[[Any, int], int]
    combine: Optional[Callable] = None  # per key: combine(key, values) -> pairs
    combine_task: Optional[Callable] = None  # a whole spill: combine_task(pairs) -> pairs
    sort: bool = True
    sort_values: bool = False
    constant: Any = _NOT_CONSTANT  # the one value the map's code yields, if it proves one

    @classmethod
    def of_job(cls, job: Job, partitions: int) -> "Shape":
        """A single-step native job's map output."""
        combine = job.combine if has_combiner(job) else None
        return cls(partitions, job.partition, combine=combine,
                   constant=constant_value(job.map) if combine else _NOT_CONSTANT,
                   sort_values=bool(job.sort_values))


SIZE_SAMPLE = 1024  # buffered pairs encoded to size the first spill
MEMO_TRIAL = 8192  # distinct keys after which the partition memo must have paid


class MapOutput:
    """Buffers a task's output, combines it, and spills sorted segments per partition.

    With a combiner, output is counted rather than stored, by key, one Counter per value
    object (word count's 1): as it streams when the map's code proves a constant value,
    else per small batch whose pairs all carry the very same value; other batches are
    stored as pairs. Unhashable keys switch the whole buffer to a list. Batches stay small
    so that their tuples are recycled while still in the CPU cache.
    """

    BATCH = 128  # input records per batch

    def __init__(self, shape: Shape, sid: Callable[[int, int, int], Any],
                 sink: storage.SegmentSink, limit: int, reporter: Reporter,
                 segment_max: int, job: Optional[Job] = None,
                 spill_bytes: Optional[int] = None):
        self.shape = shape
        self.reducers = shape.partitions
        self.sid = sid
        self.sink = sink
        self.limit = self.spill_records = limit  # entries buffered before a spill
        self.spill_bytes = spill_bytes
        self._sized = spill_bytes is None
        self.reporter = reporter
        self.job = job or reporter.job  # whose counters a replayed batch must restore
        self.segment_max = min(segment_max, sink.max_payload)
        self.combine = shape.combine
        self.counting = self.combine is not None
        # when the map's code proves every value is one constant, count keys as they stream
        self.constant = shape.constant if self.counting else _NOT_CONSTANT
        self.by_value: dict = {}  # (type, value) -> Counter of the keys that came with it
        self.pairs: list = []  # everything not counted
        self.records = 0
        self.spills = 0
        self._partition = shape.partition
        self._memo: Optional[dict] = {}  # key -> partition (see part)
        self._asked = 0

    @classmethod
    def for_job(cls, job: Job, reducers: int, sid: Callable[[int, int, int], Any],
                sink: storage.SegmentSink, limit: int, reporter: Reporter,
                segment_max: int) -> "MapOutput":
        """The output of a single-step native job's map."""
        return cls(Shape.of_job(job, reducers), sid, sink, limit, reporter, segment_max, job)

    def add_pairs(self, pairs: Iterable) -> None:
        """Buffer pairs that are already made (a task-level function's, a reduce's, a
        finish()'s), in batches."""
        batch: list = []
        for pair in pairs:
            batch.append(pair)
            if len(batch) >= 4096:
                self._buffer(batch)
                batch = []
        if batch:
            self._buffer(batch)

    def _buffer(self, pairs: list) -> None:
        self.records += len(pairs)
        if self.counting:
            self._count(pairs)
        else:
            self.pairs.extend(pairs)
        self._maybe_spill()

    def _maybe_spill(self) -> None:
        if not self._sized and len(self.pairs) >= SIZE_SAMPLE:
            self._size_spills(len(records.encode_pairs(self.pairs[:SIZE_SAMPLE])),
                              SIZE_SAMPLE)
        if self.buffered() >= self.limit:
            self.spill()

    def _size_spills(self, encoded: int, pairs: int) -> None:
        """Spill by bytes, not records (Hadoop's io.sort.mb): from what `pairs` pairs
        encode to, the entries that make about spill_bytes. Once from a sample of the
        first pairs, then from each spill's real bytes; never above spill_records."""
        self._sized = True
        per = max(1.0, encoded / max(1, pairs))
        self.limit = max(SIZE_SAMPLE, min(self.spill_records, int(self.spill_bytes / per)))

    def add(self, mapper: Callable, keys: list, values: list) -> None:
        """Run the map over one batch of input records and buffer what it yields."""
        if self.counting and self.constant is not _NOT_CONSTANT:
            self._count_stream(mapper, keys, values)
        else:
            self._add_checked(mapper, keys, values)
        self._maybe_spill()

    def _count_stream(self, mapper: Callable, keys: list, values: list) -> None:
        """Count the keys straight from the user's generators: no list, no check per record."""
        saved = {g: dict(names) for g, names in self.job._counters.items()}
        batch: Counter = Counter()
        try:
            _count_elements(batch, map(records.first,
                                       chain.from_iterable(map(mapper, keys, values))))
        except TypeError:
            # An unhashable key (or the user's own TypeError, which the replay raises
            # again): forget this batch and run it again through the checked path.
            self.job._counters = saved
            self.constant = _NOT_CONSTANT
            self._add_checked(mapper, keys, values)
            return
        self.records += sum(batch.values())
        self._counter_for(self.constant).update(batch)

    def _counter_for(self, value: Any) -> Counter:
        """The counter of the keys that came with this value (its type kept: 1 is not 1.0)."""
        slot = (type(value), value)
        target = self.by_value.get(slot)
        if target is None:
            target = self.by_value[slot] = Counter()
        return target

    def _add_checked(self, mapper: Callable, keys: list, values: list) -> None:
        step = self.BATCH
        for i in range(0, len(keys), step):
            pairs = list(chain.from_iterable(map(mapper, keys[i:i + step],
                                                  values[i:i + step])))
            self.records += len(pairs)
            if self.counting:
                self._count(pairs)
            else:
                self.pairs.extend(pairs)

    def buffered(self) -> int:
        """Entries held: pairs, plus distinct keys counted by value."""
        return len(self.pairs) + sum(len(c) for c in self.by_value.values())

    def _count(self, pairs: list) -> None:
        if not pairs:
            return
        try:
            value = pairs[0][1]
            # One C pass checks two things. The very same value object every time (word
            # count's 1): equal values of other types (1.0, True) must stay themselves, so
            # equality is not enough. And pairs: {}.get(k, v) takes one or two arguments,
            # so a longer record raises TypeError, and a 1-tuple gives None, which is not
            # the first pair's value; either way the batch is stored, and the spill's
            # unpacking reports the bad record.
            uniform = len(set(map(id, starmap(_NOTHING.get, pairs)))) == 1
            target = self._counter_for(value) if uniform else None
        except (TypeError, IndexError):  # an unhashable value, or not pairs
            target = None
        if target is None:
            self.pairs.extend(pairs)
            return
        try:
            target.update(map(records.first, pairs))
        except TypeError:  # an unhashable key, after some keys were counted
            self._stop_counting(pairs, target)

    def _stop_counting(self, pairs: list, target: Counter) -> None:
        """Undo a partial count of this batch, and keep everything as a list from now on."""
        for pair in pairs:
            try:
                hash(pair[0])
            except TypeError:
                break
            target[pair[0]] -= 1
        self._uncount_all()
        self.pairs.extend(pairs)
        self.counting = False

    def _uncount_all(self) -> None:
        """Everything counted back into plain pairs."""
        for (_, value), keys in self.by_value.items():
            self.pairs.extend((k, value) for k, c in keys.items() for _ in range(c))
        self.by_value = {}

    def part(self, key: Any) -> int:
        """The partition of a key (memoized for str keys while the memo pays), checked."""
        memo = self._memo
        # memoize only str: in a dict, True == 1 == 1.0
        if memo is None or type(key) is not str:
            return self._check(self._partition(key, self.reducers))
        self._asked += 1
        p = memo.get(key)
        if p is None:
            p = memo[key] = self._check(self._partition(key, self.reducers))
            if len(memo) >= MEMO_TRIAL and 2 * len(memo) > self._asked:
                # mostly keys never seen before (a sort's): the memo costs three times
                # what it saves, so stop keeping it
                self._memo = None
            elif len(memo) > 1_000_000:
                memo.clear()
        return p

    def _check(self, p: Any) -> int:
        if not isinstance(p, int) or not 0 <= p < self.reducers:
            raise ValueError(f"partition() returned {p!r}, not an int in 0..{self.reducers - 1}")
        return p

    def _grouped(self) -> Iterator[tuple[Any, Iterator]]:
        """(key, values) for everything buffered; values repeat as often as they came."""
        if self.by_value:
            groups: dict = {}
            try:
                for (_, value), keys in self.by_value.items():
                    for k, c in keys.items():
                        if c > 0:
                            groups.setdefault(k, []).append(repeat(value, c))
                for k, v in self.pairs:
                    groups.setdefault(k, []).append((v,))
            except TypeError:  # an unhashable key among the uncounted pairs: sort instead
                self._uncount_all()
            else:
                for k, parts in groups.items():
                    yield k, (parts[0] if len(parts) == 1 else chain.from_iterable(parts))
                return
        records.sort_pairs(self.pairs)
        for k, grp in groupby(self.pairs, key=records.first):
            yield k, (v for _, v in grp)

    def spill(self) -> None:
        """Combine what is buffered, partition (and sort) it, and write each partition as
        segments (several when it is larger than segment_max) of one run."""
        started = time.monotonic()
        entries, written = self.buffered(), 0
        self.reporter.count("map_output_records", self.records)
        parts: list = [[] for _ in range(self.reducers)]
        for k, v in self._combined():
            parts[self.part(k)].append((k, v))
        if self.combine is not None or self.shape.combine_task is not None:
            self.reporter.count("combine_input_records", self.records)
            self.reporter.count("combine_output_records", sum(map(len, parts)))
        self.records = 0
        self.pairs, self.by_value = [], {}
        for p, pairs in enumerate(parts):
            if not pairs:
                continue
            flags = 0
            if self.shape.sort and records.sort_pairs(pairs, self.shape.sort_values):
                flags = storage.FLAG_CANONICAL_ORDER
            for seq, payload in enumerate(records.chunk_pairs(pairs, self.segment_max)):
                self.sink.write(self.sid(p, self.spills, seq), payload, flags)
                written += len(payload)
        self.reporter.count("map_output_bytes", written)
        if self.spill_bytes and entries:
            self._size_spills(written, entries)
        self.spills += 1
        self.reporter.count("map_spills", 1)
        self.reporter.add_time("spill_ms", time.monotonic() - started)

    def _combined(self) -> Iterator:
        """What is buffered, through the combiner if there is one."""
        if self.combine is not None:
            for k, values in self._grouped():
                for out in self.combine(k, values):
                    k2, v2 = out
                    yield k2, v2
        elif self.shape.combine_task is not None:
            records.sort_pairs(self.pairs, self.shape.sort_values)
            for k2, v2 in self.shape.combine_task(iter(self.pairs)):
                yield k2, v2
        else:
            yield from self.pairs

