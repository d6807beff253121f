"""Steps: what the engine runs of a job, whatever API the job was written against.

A job is a list of steps; each step may have a map, a combine and a reduce (any of them
absent: a map-only step, or a reduce-only step that takes the previous step's pairs).
A native `blfsd.Job` gives its steps as per-record methods (`map(key, value)`,
`reduce(key, values)`), which the runtime drives in batches on its fast paths; a job in
another API (mrjob) gives task-level functions instead, each of which sees a whole task's
input as one stream and returns the task's whole output:

- ``map_task(records)``: records are the task's input, (key, value) pairs: for the first
  step, what the input format makes of the split (lines: (byte offset, line text));
  afterwards, the previous step's pairs. Returns an iterator of (key, value) pairs.
- ``combine_task(pairs)`` and ``reduce_task(pairs)``: pairs sorted by key (and by value
  too when ``sort_values``); grouping equal keys is the function's own business. Return
  (key, value) pairs.

Pairs between steps cross the shared disks as msgpack values; keys are sorted in the
engine's canonical order (for bytes keys: bytewise, as Hadoop streaming sorts).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional

Pairs = Iterator[tuple]
TaskFunction = Callable[[Iterator[tuple]], Iterable[tuple]]


@dataclass
class Step:
    """One step. Per-record callables (native jobs) or task-level ones (other APIs)."""

    map: Optional[Callable[[Any, Any], Iterable[tuple]]] = None
    combine: Optional[Callable[[Any, Iterator], Iterable[tuple]]] = None
    reduce: Optional[Callable[[Any, Iterator], Iterable[tuple]]] = None
    map_task: Optional[TaskFunction] = None
    combine_task: Optional[TaskFunction] = None
    reduce_task: Optional[TaskFunction] = None
    reducers: Optional[int] = None  # None: the job's or the command line's default
    partition: Optional[Callable[[Any, int], int]] = None  # None: crc32 of the key
    sort_values: bool = False  # values sorted within each key (secondary sort)
    # how the last step's pairs become output lines (None: key<TAB>value, records.py)
    format_line: Optional[Callable[[Any, Any], bytes]] = None

    @property
    def has_map(self) -> bool:
        return self.map is not None or self.map_task is not None

    @property
    def has_combine(self) -> bool:
        return self.combine is not None or self.combine_task is not None

    @property
    def has_reduce(self) -> bool:
        return self.reduce is not None or self.reduce_task is not None
