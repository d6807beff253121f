"""What runs inside a task process: the user's map, combine and reduce around our data path.

A task process is forked by the worker for one attempt and runs as a user that may open
nothing on the disks. It talks to its worker over a socketpair (taskchannel.TaskEnd): every
file it reads or writes (its split, its slots, peers' slots, its output) comes from the
worker as a descriptor (WorkerFiles); it reports progress, and finally success (with its
segment locations) or failure (with a kind and, for the user's own errors, the traceback).
"""
from __future__ import annotations

import errno
import functools
import heapq
import os
import time
import traceback
import zlib
from collections import Counter, _count_elements  # type: ignore[attr-defined]
from dataclasses import dataclass
from itertools import chain, groupby, repeat, starmap
from typing import Any, BinaryIO, Callable, Iterator, Optional

from . import records, storage
from .errors import (DiskFull, FetchError, PathRefused, PoolExhausted, RemoteError,
                     StorageError)
from .inputs import READERS
from .job import (_NOT_CONSTANT, Context, Job, constant_value, has_combiner,
                  load_job_class)
from .messages import AttemptSpec, FailureKind, SegmentLocation, TaskKind, TaskResult
from .taskchannel import TaskEnd, close_all

REPORT_EVERY = 0.5  # seconds between progress reports (they also prove we are alive)
_NOTHING: dict = {}


@dataclass(frozen=True)
class TaskEnv:
    """What a task process knows of its worker (handed over by the fork). It knows no
    path of any disk: it gets descriptors (WorkerFiles)."""
    node: str  # the worker's name
    generation: int  # of its own pool
    slot_size: int
    spill_records: int
    segment_max: int


Channel = TaskEnd  # the task's end of its socket to the worker


class WorkerFiles:
    """Every file a task reads or writes, opened by its worker and passed as a descriptor:
    the task runs as a user that may open nothing on the disks."""

    def __init__(self, chan: TaskEnd):
        self.chan = chan
        self._device: Optional[int] = None  # -1: there is none (--local)

    def _fd(self, op: str, **fields: Any) -> tuple[dict, int]:
        result, fds = self.chan.call_fds(op, **fields)
        if len(fds) != 1:
            close_all(fds)
            raise StorageError(f"{op}: the worker passed {len(fds)} descriptors, not one")
        return result, fds[0]

    def lease(self) -> tuple[int, int]:
        """A slot of our pool (its number, and a descriptor to write it)."""
        try:
            result, fd = self._fd("lease")
        except RemoteError as exc:
            raise PoolExhausted(str(exc)) from None
        return result["slot"], fd

    def flush_device(self) -> None:
        """fsync the block device under our pool (after the slots: storage rule 3)."""
        if self._device is None:
            result, fds = self.chan.call_fds("device")
            self._device = fds[0] if fds else -1
        if self._device >= 0:
            os.fsync(self._device)

    def split(self, spec: AttemptSpec) -> BinaryIO:
        """The map's split, open for reading."""
        try:
            _, fd = self._fd("open_split")
        except RemoteError as exc:
            raise _refused(exc) from None
        return os.fdopen(fd, "rb")

    def slot(self, loc: SegmentLocation) -> int:
        """A slot to read a segment from (O_DIRECT), through a view current for its pool
        generation."""
        try:
            return self._fd("open_slot", node=loc.node, slot=loc.slot,
                            generation=loc.generation)[1]
        except RemoteError as exc:
            raise FetchError(exc.args[0], map_task=loc.map_task, node=loc.node) from None

    def output(self) -> tuple[int, dict]:
        """The file a reduce writes its part to: its descriptor, and {path, target, file}
        (where it is, where the commit moves it, and for a cluster output its name
        relative to our disk)."""
        try:
            return self._fd("create_output")[::-1]
        except RemoteError as exc:
            raise _refused(exc) from None


def _refused(exc: RemoteError) -> StorageError:
    """The worker's refusal to open a file, as the error that says whose fault it is."""
    for kind in (DiskFull, PathRefused):
        if exc.code == kind.code:
            return kind(str(exc))
    return StorageError(str(exc))


class Reporter:
    """Sends progress, status and counters now and then; built-in counters live here too."""

    def __init__(self, chan: Channel, job: Job):
        self.chan = chan
        self.job = job
        self.last = 0.0
        self.progress = 0.0
        job._touch = lambda: self.maybe(self.progress)  # counters and status prove life

    def count(self, name: str, n: int) -> None:
        """A built-in counter of the blfs group (map_input_records, ...)."""
        g = self.job._counters.setdefault("blfs", {})
        g[name] = g.get(name, 0) + n

    def maybe(self, progress: float) -> None:
        """Report progress at most every REPORT_EVERY seconds, or when the status changed."""
        self.progress = progress
        now = time.monotonic()
        if now - self.last >= REPORT_EVERY or self.job._status_changed:
            self.last = now
            self.job._status_changed = False
            self.chan.notify("progress", progress=progress, status=self.job._status,
                             counters=self.job._counters)


# ------------------------------------------------------------------------------------ map

class MapOutput:
    """Buffers a map's output, combines it, and spills sorted segments per partition.

    With a combiner, output is counted rather than stored, by key, one Counter per value
    object (word count's 1): as it streams when the map's code proves a constant value,
    else per small batch whose pairs all carry the very same value; other batches are
    stored as pairs. Unhashable keys switch the whole buffer to a list. Batches stay small
    so that their tuples are recycled while still in the CPU cache.
    """

    BATCH = 128  # input records per batch

    def __init__(self, job: Job, reducers: int, sid: Callable[[int, int, int], Any],
                 sink: storage.SegmentSink, limit: int, reporter: Reporter,
                 segment_max: int):
        self.job = job
        self.reducers = reducers
        self.sid = sid
        self.sink = sink
        self.limit = limit
        self.reporter = reporter
        self.segment_max = min(segment_max, sink.max_payload)
        self.combine = job.combine if has_combiner(job) else None
        self.counting = self.combine is not None
        # when the map's code proves every value is one constant, count keys as they stream
        self.constant = constant_value(job.map) if self.counting else _NOT_CONSTANT
        self.by_value: dict = {}  # (type, value) -> Counter of the keys that came with it
        self.pairs: list = []  # everything not counted
        self.records = 0
        self.spills = 0
        self._partition = job.partition
        self._memo: dict = {}

    def add(self, mapper: Callable, keys: list, values: list) -> None:
        """Run the map over one batch of input records and buffer what it yields."""
        if self.counting and self.constant is not _NOT_CONSTANT:
            self._count_stream(mapper, keys, values)
        else:
            self._add_checked(mapper, keys, values)
        if self.buffered() >= self.limit:
            self.spill()

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
        """The partition of a key (memoized for str keys), checked."""
        if type(key) is not str:  # memoize only str: in a dict, True == 1 == 1.0
            return self._check(self._partition(key, self.reducers))
        p = self._memo.get(key)
        if p is None:
            p = self._memo[key] = self._check(self._partition(key, self.reducers))
            if len(self._memo) > 1_000_000:
                self._memo.clear()
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
        """Combine what is buffered, partition and sort it, and write each partition as
        segments (several when it is larger than segment_max) of one sorted run."""
        self.reporter.count("map_output_records", self.records)
        self.records = 0
        parts: list = [[] for _ in range(self.reducers)]
        if self.combine is not None:
            for k, values in self._grouped():
                for out in self.combine(k, values):
                    k2, v2 = out
                    parts[self.part(k2)].append((k2, v2))
        else:
            for k, v in self.pairs:
                parts[self.part(k)].append((k, v))
        self.pairs, self.by_value = [], {}
        for p, pairs in enumerate(parts):
            if not pairs:
                continue
            flags = storage.FLAG_CANONICAL_ORDER if records.sort_pairs(pairs) else 0
            for seq, payload in enumerate(records.chunk_pairs(pairs, self.segment_max)):
                self.sink.write(self.sid(p, self.spills, seq), payload, flags)
        self.spills += 1
        self.reporter.count("map_spills", 1)


def run_map(job: Job, spec: AttemptSpec, env: TaskEnv, files: WorkerFiles,
            reporter: Reporter) -> TaskResult:
    """Run a map attempt over its split: records in, segments out (fsynced, slot
    then device), and their locations in the result."""
    start, end = spec.split.start, spec.split.end
    read = READERS[spec.input_format]
    if spec.input_format == "files":
        read = functools.partial(read, path=spec.split.path)
    sink = storage.SegmentSink(env.node, env.generation, env.slot_size, files.lease,
                               files.flush_device)

    def sid(partition: int, run: int, seq: int) -> storage.SegmentId:
        return storage.SegmentId(spec.job, spec.index, spec.attempt, partition, run, seq)

    out = MapOutput(job, spec.reducers, sid, sink, env.spill_records, reporter,
                    env.segment_max)
    span = max(1, end - start)
    mapper = job.map
    try:
        with files.split(spec) as f:
            for keys, values, position in read(f, start, end):
                reporter.count("map_input_records", len(keys))
                out.add(mapper, keys, values)
                reporter.maybe(min(1.0, (position - start) / span))
        out.spill()
        locations = sink.commit()
    finally:
        sink.close()
    return TaskResult(segments=locations, counters=job._counters)


# --------------------------------------------------------------------------------- reduce

class _OrderError(Exception):
    """Keys of different runs could not be compared with each other."""


def _ordered(merged: Iterator) -> Iterator:
    """The merged stream, with a comparison failure told apart from the user's."""
    while True:
        try:
            item = next(merged)
        except StopIteration:
            return
        except TypeError:
            raise _OrderError() from None
        yield item


def _runs(segments: list[SegmentLocation]) -> list:
    """Segments grouped into sorted runs (one per map spill), each in sequence order."""
    by_run: dict = {}
    for loc in segments:
        by_run.setdefault((loc.map_task, loc.run), []).append(loc)
    return [sorted(locs, key=lambda x: x.seq) for _, locs in sorted(by_run.items())]


def _expected(job_id: str, partition: int, loc: SegmentLocation) -> storage.SegmentId:
    """What the segment at a location must say it is."""
    return storage.SegmentId(job_id, loc.map_task, loc.map_attempt, partition, loc.run,
                             loc.seq)


def _read_run(reader: storage.SegmentReader, job_id: str, partition: int, locs: list,
              reporter: Reporter, total: int) -> Iterator:
    """The records of one sorted run, segment by segment; a segment that fails
    its check is read once more with fresh descriptors before it is a fetch failure."""
    for loc in locs:
        expect = _expected(job_id, partition, loc)
        try:
            payload, _ = reader.read(loc, expect)
        except FetchError:
            reader.close()  # a second try with fresh file descriptors and buffer
            try:
                payload, _ = reader.read(loc, expect)
            except FetchError as exc:
                raise FetchError(str(exc), map_task=loc.map_task, node=loc.node) from None
        reporter.count("reduce_segments_read", 1)
        reporter.maybe(min(0.99, reporter.progress + 1.0 / max(1, total)))
        yield from records.decode_pairs(payload)


class PartWriter:
    """A reduce's output file, through the descriptor its worker made: lines of text
    encoded once, in blocks, with the size and crc32 of what was written."""

    BLOCK = 1 << 20

    def __init__(self, fd: int):
        self.fd = fd
        self.size = self.crc = 0
        self._lines: list = []
        self._held = 0
        self._closed = False

    def write(self, line: str) -> None:
        self._lines.append(line)
        self._held += len(line)
        if self._held >= self.BLOCK:
            self.flush()

    def flush(self) -> None:
        data = "".join(self._lines).encode("utf-8", "backslashreplace")
        self._lines, self._held = [], 0
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def restart(self) -> None:
        """Forget everything written (a reduce that starts over)."""
        self._lines, self._held, self.size, self.crc = [], 0, 0, 0
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)

    def finish(self) -> None:
        """Everything on disk (fsync)."""
        self.flush()
        os.fsync(self.fd)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self.fd)


def run_reduce(make_job: Callable[[], tuple], spec: AttemptSpec, files: WorkerFiles
               ) -> TaskResult:
    """Run a reduce attempt: merge its partition's runs from every map, reduce,
    and write the part under OUTPUT/_temporary/JOB/ (moved into place by the commit)."""
    segments = spec.segments
    partition = spec.index
    fd, where = files.output()
    part = PartWriter(fd)
    canonical = any(s.flags & storage.FLAG_CANONICAL_ORDER for s in segments)
    try:
        while True:
            job, reporter = make_job()
            try:
                _reduce_into(job, spec, files, segments, partition, part, canonical,
                             reporter)
                break
            except _OrderError:
                if canonical:
                    raise StorageError("keys could not be ordered even canonically") \
                        from None
                canonical = True
                part.restart()
            except FetchError as exc:
                # name every map whose output is bad, so that all of them re-run at once
                exc.map_tasks = _unreadable_maps(spec, files, segments, partition)
                raise
        part.finish()
    finally:
        part.close()
    result = TaskResult(path=where["path"], target=where["target"], counters=job._counters)
    if spec.output_name:  # a cluster output: recorded, checked by its readers
        result = result.replace(size=part.size, crc=part.crc, file=where.get("file"))
    return result


def _unreadable_maps(spec: AttemptSpec, files: WorkerFiles, segments: list,
                     partition: int) -> list:
    """Every map whose segments this attempt cannot read (all re-run at once)."""
    reader = storage.SegmentReader(files.slot)
    bad = set()
    try:
        for loc in segments:
            if loc.map_task in bad:
                continue
            try:
                reader.read(loc, _expected(spec.job, partition, loc))
            except FetchError:
                bad.add(loc.map_task)
    finally:
        reader.close()
    return sorted(bad)


def _reduce_into(job: Job, spec: AttemptSpec, files: WorkerFiles, segments: list,
                 partition: int, part: PartWriter, canonical: bool,
                 reporter: Reporter) -> None:
    """Merge the runs, group by key, reduce, and write the lines of the part."""
    reader = storage.SegmentReader(files.slot)
    runs = [_read_run(reader, spec.job, partition, locs, reporter, len(segments))
            for locs in _runs(segments)]
    order = (lambda p: records.canonical(p[0])) if canonical else records.first
    merged = _ordered(heapq.merge(*runs, key=order))
    keyfn = (lambda p: records.canonical(p[0])) if canonical else records.first
    reduce = job.reduce
    fmt = records.format_line
    groups = outputs = 0
    try:
        for _, grp in groupby(merged, key=keyfn):
            first_pair = next(grp)
            key = first_pair[0]
            values = chain((first_pair[1],), (v for _, v in grp))
            groups += 1
            for k, v in reduce(key, values):
                part.write(fmt(k, v))
                outputs += 1
            if groups % 1024 == 0:
                reporter.maybe(reporter.progress)
    finally:
        reader.close()
    reporter.count("reduce_input_groups", groups)
    reporter.count("reduce_output_records", outputs)


# -------------------------------------------------------------------------------- process

def run_attempt(spec: AttemptSpec, env: TaskEnv, chan: Channel) -> int:
    """Run one attempt to its end; returns the exit code for the task process."""
    try:
        cls = load_job_class(spec.source, spec.job_file, spec.job_class)

        def make_job() -> tuple:
            ctx = Context(spec.job, spec.task, spec.attempt, env.node,
                          spec.index if spec.kind == TaskKind.REDUCE else None)
            job = cls(spec.args, ctx)
            reporter = Reporter(chan, job)  # before setup: its status updates count too
            job.setup()
            return job, reporter

        files = WorkerFiles(chan)
        if spec.kind == TaskKind.MAP:
            job, reporter = make_job()
            result = run_map(job, spec, env, files, reporter)
        else:
            result = run_reduce(make_job, spec, files)
        chan.notify("done", result=result)
        return 0
    except DiskFull as exc:
        _report_failure(chan, FailureKind.DISK_FULL, str(exc))
    except PathRefused as exc:  # a path the job named: its own fault, no traceback of ours
        _report_failure(chan, FailureKind.USER, str(exc))
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            _report_failure(chan, FailureKind.USER, traceback.format_exc())
        else:
            _report_failure(chan, FailureKind.DISK_FULL, f"disk full on {env.node}: "
                            f"{exc.filename or 'a write'}: {exc.strerror}")
    except FetchError as exc:
        _report_failure(chan, FailureKind.FETCH, str(exc), {
            "map_task": exc.map_task, "node": exc.node,
            "map_tasks": getattr(exc, "map_tasks", None) or [exc.map_task]})
    except PoolExhausted as exc:
        _report_failure(chan, FailureKind.POOL, f"out of pool slots on {env.node}: {exc}")
    except StorageError as exc:
        _report_failure(chan, FailureKind.INTERNAL, str(exc))
    except BaseException:
        _report_failure(chan, FailureKind.USER, traceback.format_exc())
    return 1


def _report_failure(chan: Channel, kind: FailureKind, error: str,
                    info: Optional[dict] = None) -> None:
    """Tell the worker why the attempt failed (if the worker is still there)."""
    try:
        chan.notify("failed", kind=kind, error=error, info=info or {})
    except OSError:
        pass
