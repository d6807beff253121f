"""A reduce placed before all its producers finished (slow start: `[master] slow_start`).

It starts with the segments of the producers that had finished, and asks its worker for
the rest as they finish (`more_input`, answered by the master within seconds). Meanwhile
it merges ahead: once the producers 0..k-1 have all finished, their runs are final, and
when a merge pass will be needed anyway (more runs are expected than merge_factor) every
merge_factor consecutive runs of that prefix are merged into one run of its own, in
scratch slots, while the other maps still run. Only consecutive runs are merged, in
producer order, so equal keys keep the order one merge of every run would give them.

A producer is told to the reduce once, with the attempt that won it then; a map that runs
again later (a lost output, a bad checksum) is never mixed in: the reduce reads the
attempt it was told of, and if that output cannot be read the reduce fails as any reduce
does and its next attempt is told of the new winner.
"""
from __future__ import annotations

from typing import Optional

from .. import storage
from ..messages import AttemptSpec, SegmentLocation
from .merging import Merge, Run
from .reading import OrderError, runs


class EarlyMerge:
    """The runs an early reduce has, and the merges it did ahead of the final one."""

    def __init__(self, spec: AttemptSpec, merge: Merge):
        self.spec, self.merge = spec, merge
        self.by_producer: dict[int, list[SegmentLocation]] = {}
        self.producers = spec.producers  # how many it has in all
        self.done: list[Run] = []  # merged ahead, covering producers [0, self.covered)
        self.waiting: list[Run] = []  # final runs of producers [self.covered, prefix)
        self.covered = 0
        self.prefix = 0  # producers 0..prefix-1 have all been told
        self.off = False  # keys that need the canonical order: no merging ahead
        self.merged_in = 0  # raw runs merged ahead
        self.seen: set[tuple[int, int]] = set()  # (producer, run) of every segment told

    def add(self, segments: list[SegmentLocation], producers: int = 0) -> None:
        """Segments of newly finished producers; merge ahead what can be."""
        self.producers = producers or self.producers
        for loc in segments:
            self.by_producer.setdefault(loc.map_task, []).append(loc)
            self.seen.add((loc.map_task, loc.run))
            if loc.flags & storage.FLAG_CANONICAL_ORDER:
                self.off = True
        while self.prefix in self.by_producer:
            self.waiting += [Run(locs) for locs in runs(self.by_producer[self.prefix])]
            self.prefix += 1
        factor = self.merge.factor
        while not self.off and self._pass_ahead() and len(self.waiting) >= factor:
            group, self.waiting = self.waiting[:factor], self.waiting[factor:]
            try:
                self.done.append(self.merge.merge_group(group))
            except OrderError:
                self.off = True  # the final merge starts over in the canonical order
                return
            self.merged_in += factor

    def finish(self) -> None:
        """Every producer is told: if runs merged ahead and the rest still exceed
        merge_factor, merge just enough of the rest (not the runs merged ahead again)."""
        if self.off or not self.done:
            return
        factor = self.merge.factor
        excess = len(self.done) + len(self.waiting) - factor
        while excess > 0 and len(self.waiting) >= 2:
            size = min(factor, excess + 1, len(self.waiting))
            group, self.waiting = self.waiting[:size], self.waiting[size:]
            try:
                self.done.append(self.merge.merge_group(group))
            except OrderError:
                self.off = True
                return
            excess -= size - 1

    def _pass_ahead(self) -> bool:
        """Is a merge ahead worth it now? Only while producers still run (the slot would
        be idle), and only while the final merge would still have more than merge_factor
        runs to start from (more runs expected, less those merged ahead already)."""
        told = len(self.by_producer)
        if not told or not self.producers or told >= self.producers:
            return False
        expected = len(self.seen) * self.producers / told
        return len(self.done) + expected - self.merged_in > self.merge.factor

    def sources(self) -> Optional[list[Run]]:
        """What the final merge starts from: the runs merged ahead, then every other run in
        producer order; None when nothing was merged ahead (or it cannot be used)."""
        if self.off or not self.done:
            return None
        rest = [loc for p in sorted(self.by_producer) if p >= self.prefix
                for loc in self.by_producer[p]]
        return self.done + self.waiting + [Run(locs) for locs in runs(rest)]


def gather(spec: AttemptSpec, files, reporter, merge: Merge) -> tuple[AttemptSpec,
                                                                       Optional[list[Run]]]:
    """Ask for the rest of an early reduce's input until it has all of it, merging ahead
    meanwhile; its spec with every segment, and where the final merge starts."""
    early = EarlyMerge(spec, merge)
    segments = list(spec.segments or [])
    early.add(segments)
    while True:
        news = files.more_input()
        new = [SegmentLocation.from_wire(s) for s in news.get("segments") or []]
        segments += new
        early.add(new, news.get("producers") or 0)
        reporter.maybe(reporter.progress)  # alive while it waits
        if news.get("complete"):
            break
    early.finish()
    return spec.replace(segments=segments, partial=False), early.sources()
