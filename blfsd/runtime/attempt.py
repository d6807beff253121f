"""One attempt, start to end, inside its task process.

A map reads its split (or its producer's segments), runs the step's map over it, and
writes what it yields; a reduce merges its partition's runs, runs the step's reduce over
each key, and writes what it yields. Where the output goes is the stage's business
(pipeline.py): segments into leased slots for the stage it feeds (spill.MapOutput), or
the job's output, a part file (parts.PartOutput). The result, or why it failed (with a
kind that says whose fault it was), goes to the worker.
"""
from __future__ import annotations

import errno
import time
import traceback
from dataclasses import dataclass
from itertools import chain, groupby
from typing import Any, Callable, Iterator, Optional

from .. import records, storage
from ..errors import (DiskFull, FetchError, PathRefused, PoolExhausted, StorageError)
from ..messages import AttemptSpec, FailureKind, TaskKind, TaskResult
from ..taskchannel import TaskEnd
from . import code as taskcode
from .code import TaskCode
from .parts import PartOutput, PartWriter
from . import early
from .merging import Merge, Scratch
from .reading import OrderError, segment_batches, split_batches, unreadable_producers
from .spill import MapOutput, Shape
from .worker_files import WorkerFiles


@dataclass(frozen=True)
class TaskEnv:
    """What a task process knows of its worker (handed over by the fork). It knows no
    path of any disk: it gets descriptors (WorkerFiles)."""
    node: str  # the worker's name
    generation: int  # of its own pool
    slot_size: int
    spill_records: int
    segment_max: int
    spill_bytes: int = 32 << 20
    merge_factor: int = 16  # runs a reduce merges at once (runtime/merging.py)


class Output:
    """Where a task's pairs go, and what the task reports of them at its end."""

    def __init__(self, spec: AttemptSpec, env: TaskEnv, files: WorkerFiles, tc: TaskCode):
        self.spec, self.env, self.files, self.code = spec, env, files, tc
        self.sink: Optional[storage.SegmentSink] = None
        self.part: Optional[PartWriter] = None
        self.where: dict = {}
        self.started = time.monotonic()
        self.to = self._open()

    def _open(self) -> Any:
        spec, env = self.spec, self.env
        if spec.reducers == 0:  # the last stage: the job's output
            fd, self.where = self.files.output()
            self.part = PartWriter(fd, self.where.get("path") or "")
            return PartOutput(self.part, self.code.step.format_line)
        self.sink = storage.SegmentSink(env.node, env.generation, env.slot_size,
                                        self.files.lease, self.files.flush_device,
                                        spec.segment_format)

        def sid(partition: int, run: int, seq: int) -> storage.SegmentId:
            return storage.SegmentId(spec.job, spec.index, spec.attempt, partition, run,
                                     seq, spec.stage)
        return MapOutput(self._shape(), sid, self.sink, env.spill_records,
                         self.code.reporter, env.segment_max,
                         spill_bytes=env.spill_bytes)

    def _shape(self) -> Shape:
        """The output as the stage it feeds needs it (pipeline.py)."""
        feeds, spec = self.code.feeds, self.spec
        combine = combine_task = None
        if spec.sort_output and feeds is not None:  # it feeds a reduce: its combiner
            combine, combine_task = feeds.combine, feeds.combine_task
        constant = taskcode.constant_of(self.code) if combine else taskcode.NOT_CONSTANT
        return Shape(spec.reducers, self.code.partition(), combine=combine,
                     combine_task=combine_task, sort=spec.sort_output,
                     sort_values=spec.sort_values, constant=constant)

    def restart(self) -> None:
        """Forget what was written, for a reduce that starts over."""
        if self.part is not None:
            self.part.restart()
        else:
            self.sink.close()
            self.to = self._open()

    def result(self) -> TaskResult:
        """Everything made durable; what the master is told."""
        counters = self.code.job._counters
        took = "map_ms" if self.spec.kind == TaskKind.MAP else "reduce_ms"
        if self.part is None:
            self.to.spill()
            segments = self.sink.commit()
            self.code.reporter.add_time(took, time.monotonic() - self.started)
            return TaskResult(segments=segments, counters=counters)
        self.part.finish()
        self.code.reporter.count("output_bytes", self.part.size)
        self.code.reporter.add_time(took, time.monotonic() - self.started)
        result = TaskResult(path=self.where["path"], target=self.where["target"],
                            counters=counters)
        if self.spec.output_name:  # a cluster output: recorded, checked by its readers
            result = result.replace(size=self.part.size, crc=self.part.crc,
                                    file=self.where.get("file"))
        return result

    def close(self) -> None:
        if self.part is not None:
            self.part.close()
        if self.sink is not None:
            self.sink.close()


def run_map(tc: TaskCode, spec: AttemptSpec, env: TaskEnv, files: WorkerFiles) -> TaskResult:
    """A map: its input's records through the step's map, into its output."""
    out = Output(spec, env, files, tc)
    try:
        if spec.stage == 0:
            with files.split() as f:
                tc.bind_input(f)
                _map_over(tc, out, split_batches(spec, f, tc.reporter))
        else:
            _map_over(tc, out, segment_batches(spec, files, tc.reporter))
        return out.result()
    finally:
        out.close()


def _map_over(tc: TaskCode, out: Output, batches: Iterator) -> None:
    tc.setup()
    if tc.step.map_task is not None:  # a task-level map (mrjob): the whole input at once
        records_ = ((k, v) for keys, values in batches for k, v in zip(keys, values))
        out.to.add_pairs(tc.step.map_task(records_))
    else:
        mapper = tc.mapper()
        for keys, values in batches:
            out.to.add(mapper, keys, values)
    out.to.add_pairs(tc.finish())


def run_reduce(load: Callable[[], TaskCode], spec: AttemptSpec, env: TaskEnv,
               files: WorkerFiles) -> TaskResult:
    """A reduce: its partition's runs merged, each key through the step's reduce. Keys
    that Python cannot order among each other start it over in canonical order."""
    tc = load()
    scratch = Scratch(spec, files, env.node, env.generation, env.slot_size, env.segment_max)
    try:
        spec, sources = _all_input(spec, env, files, tc, scratch)
        return _merge_and_reduce(load, tc, spec, env, files, scratch, sources)
    except FetchError as exc:
        # name every producer whose output is bad, so that all re-run at once
        exc.map_tasks = unreadable_producers(spec, files)
        raise
    finally:
        scratch.close()


def _all_input(spec: AttemptSpec, env: TaskEnv, files: WorkerFiles, tc: TaskCode,
               scratch: Scratch) -> tuple[AttemptSpec, Optional[list]]:
    """A reduce placed early (slow start) asks for the rest of its input as it finishes,
    merging ahead meanwhile (runtime/early.py); any other has it all in its spec."""
    if not spec.partial:
        return spec, None
    ahead = Merge(spec, files, tc.reporter, False, scratch, env.merge_factor)
    try:
        return early.gather(spec, files, tc.reporter, ahead)
    finally:
        ahead.close()


def _merge_and_reduce(load: Callable[[], TaskCode], tc: TaskCode, spec: AttemptSpec,
                      env: TaskEnv, files: WorkerFiles, scratch: Scratch,
                      sources: Optional[list]) -> TaskResult:
    canonical = any(s.flags & storage.FLAG_CANONICAL_ORDER for s in spec.segments)
    out = Output(spec, env, files, tc)
    try:
        while True:
            try:
                merge = Merge(spec, files, tc.reporter, canonical, scratch, env.merge_factor,
                              sources)
                sources = None  # a start over (canonical order) merges every run anew
                _reduce_into(tc, out, merge)
                return out.result()
            except OrderError:
                if canonical:
                    raise StorageError("keys could not be ordered even canonically") \
                        from None
                canonical = True
                tc = load()  # a fresh job object: setup again, counters anew
                out.code = tc
                out.restart()
    finally:
        out.close()


def _reduce_into(tc: TaskCode, out: Output, merge: Merge) -> None:
    try:
        stream = merge.merged()
        tc.setup()
        if tc.step.reduce_task is not None:  # a task-level reduce (mrjob): grouping is its own
            out.to.add_pairs(tc.step.reduce_task(stream))
        else:
            out.to.add_pairs(_grouped_reduce(tc, stream, merge.canonical))
        out.to.add_pairs(tc.finish())
    finally:
        merge.close()


def _grouped_reduce(tc: TaskCode, stream: Iterator, canonical: bool) -> Iterator:
    """The step's reduce over each key and its values, as they stream."""
    keyfn = (lambda p: records.canonical(p[0])) if canonical else records.first
    reduce = tc.step.reduce
    groups = outputs = 0
    for _, grp in groupby(stream, key=keyfn):
        first = next(grp)
        groups += 1
        for pair in reduce(first[0], chain((first[1],), map(records.second, grp))):
            outputs += 1
            yield pair
        if groups % 1024 == 0:
            tc.reporter.maybe(tc.reporter.progress)
    tc.reporter.count("reduce_input_groups", groups)
    tc.reporter.count("reduce_output_records", outputs)


def run_attempt(spec: AttemptSpec, env: TaskEnv, chan: TaskEnd) -> int:
    """Run one attempt to its end; returns the exit code for the task process."""
    try:
        files = WorkerFiles(chan)

        def load() -> TaskCode:
            return taskcode.load(spec, env.node, chan)

        if spec.kind == TaskKind.MAP:
            result = run_map(load(), spec, env, files)
        else:
            result = run_reduce(load, spec, env, files)
        chan.notify("done", result=result)
        return 0
    except BaseException as exc:  # noqa: BLE001 - every way out is reported, then exit 1
        kind, error, info = failure_of(exc, env.node)
        report_failure(chan, kind, error, info)
    return 1


def failure_of(exc: BaseException, node: str) -> tuple[FailureKind, str, dict]:
    """Why an attempt failed, and whose fault it was: the user's code gets its traceback,
    our faults and the machine's get one line."""
    if isinstance(exc, DiskFull):
        return FailureKind.DISK_FULL, str(exc), {}
    if isinstance(exc, PathRefused):  # a path the job named: its own fault
        return FailureKind.USER, str(exc), {}
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return FailureKind.DISK_FULL, (f"disk full on {node}: {exc.filename or 'a write'}: "
                                       f"{exc.strerror}"), {}
    if isinstance(exc, FetchError):
        return FailureKind.FETCH, str(exc), {
            "map_task": exc.map_task, "node": exc.node,
            "map_tasks": getattr(exc, "map_tasks", None) or [exc.map_task]}
    if isinstance(exc, PoolExhausted):
        return FailureKind.POOL, f"out of pool slots on {node}: {exc}", {}
    if isinstance(exc, StorageError):
        return FailureKind.INTERNAL, str(exc), {}
    return FailureKind.USER, traceback.format_exc(), {}


def report_failure(chan: TaskEnd, kind: FailureKind, error: str,
                   info: Optional[dict] = None) -> None:
    """Tell the worker why the attempt failed (if the worker is still there)."""
    try:
        chan.notify("failed", kind=kind, error=error, info=info or {})
    except OSError:
        pass
