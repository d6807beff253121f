"""A tiny in-process engine for blfsd.mrjob_compat's steps, and mrjob's own runners to
compare it with.

It does what the real engine promises the adapter: input splits read as the `lines` format
reads them (or whole files for `files`), map tasks, a combine over each map's sorted
output, partitions by crc32 of the key bytes, a bytewise sort by key (and value with
sort_values), reduce tasks, the next step fed with the reducers' pairs, and part files made
with format_line. Tasks run in a working directory holding files(job).
"""
from __future__ import annotations

import contextlib
import gzip
import importlib
import importlib.util
import os
import shutil
import sys
import tempfile
import zlib
from dataclasses import dataclass, field
from typing import Any, Optional

from blfsd import mrjob_compat as mc


@dataclass
class Result:
    parts: list  # bytes of each part file
    counters: dict = field(default_factory=dict)  # {group: {name: n}}
    statuses: list = field(default_factory=list)

    @property
    def lines(self) -> list:
        return [line for part in self.parts for line in part.splitlines(keepends=True)]


@dataclass
class Split:
    records: list
    path: Optional[str] = None
    start: int = 0
    length: Optional[int] = None


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read()
    return gzip.decompress(data) if path.endswith(".gz") else data


def _as_text(line: bytes, raw: bool) -> Any:
    """A line as blfs's lines format gives it (text, bad bytes replaced, no CR)."""
    return line if raw else line.decode("utf-8", "replace").removesuffix("\r")


def line_splits(paths: list, lines_per_split: int, raw: bool = False) -> list:
    """Splits of whole lines with their byte offsets; a .gz file is one split."""
    splits = []
    for path in paths:
        data = _read(path)
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        size = lines_per_split if not path.endswith(".gz") else max(1, len(lines))
        offset = 0
        for first in range(0, len(lines), size):
            chunk = lines[first:first + size]
            records, start = [], offset
            for line in chunk:
                records.append((offset, _as_text(line, raw)))
                offset += len(line) + 1
            splits.append(Split(records, path, start, offset - start))
    return splits


def file_splits(paths: list) -> list:
    return [Split([(path, _read(path).decode("utf-8", "replace"))], path)
            for path in paths]


def _sorted(pairs: list, by_value: bool) -> list:
    return sorted(pairs, key=(lambda p: (p[0], p[1])) if by_value else (lambda p: p[0]))


class Engine:
    def __init__(self, job: Any, reducers: int = 3, lines_per_split: int = 64,
                 raw: bool = False):
        self.job = job
        self.reducers = reducers
        self.lines_per_split = lines_per_split
        self.raw = raw
        self.result = Result([])
        self.ctx = mc.TaskContext()

    def _context(self, **fields: Any) -> mc.TaskContext:
        return mc.TaskContext(job_id="simjob", increment_counter=self._count,
                              set_status=self.result.statuses.append, **fields)

    def _count(self, group: str, name: str, n: int) -> None:
        g = self.result.counters.setdefault(group, {})
        g[name] = g.get(name, 0) + n

    def run(self, inputs: list) -> Result:
        inputs = [os.path.abspath(p) for p in inputs]
        with tempfile.TemporaryDirectory() as wd:
            for name, path in mc.files(self.job).items():
                shutil.copy(path, os.path.join(wd, name))
            with contextlib.chdir(wd):
                steps = mc.steps(self.job, context=lambda: self.ctx)
                if mc.input_format(self.job) == "files":
                    splits = file_splits(inputs)
                else:
                    splits = line_splits(inputs, self.lines_per_split, self.raw)
                outputs = [s.records for s in splits]
                for number, step in enumerate(steps):
                    outputs = self._step(step, splits if number == 0 else None, outputs)
                self.result.parts = [b"".join(step.format_line(k, v) for k, v in pairs)
                                     for pairs in outputs]
        return self.result

    def _step(self, step: Any, splits: Optional[list], inputs: list) -> list:
        maps = []
        for task, records in enumerate(inputs):
            split = splits[task] if splits else Split(records)
            self.ctx = self._context(task=task, input_path=split.path,
                                     input_start=split.start, input_length=split.length)
            pairs = list(step.map_task(iter(records))) if step.map_task else list(records)
            if step.combine_task:
                pairs = list(step.combine_task(iter(_sorted(pairs, step.sort_values))))
            maps.append(pairs)
        if not step.reduce_task:
            return maps
        n = step.reducers or self.reducers
        partitions: list = [[] for _ in range(n)]
        for pairs in maps:
            for key, value in pairs:
                assert isinstance(key, bytes) and isinstance(value, bytes)
                partitions[zlib.crc32(key) % n].append((key, value))
        outputs = []
        for task, pairs in enumerate(partitions):
            self.ctx = self._context(task=task)
            outputs.append(list(step.reduce_task(iter(_sorted(pairs, step.sort_values)))))
        return outputs


def run_adapter(path: str, args: list, inputs: list, **engine: Any) -> tuple:
    """(job, Result) of a job file run through mrjob_compat on the simulated engine."""
    with open(path, encoding="utf-8") as f:
        source = f.read()
    job = mc.load(source, path, list(args))
    return job, Engine(job, **engine).run(inputs)


def example_path(name: str) -> str:
    return importlib.import_module(f"mrjob.examples.{name}").__file__


def run_mrjob(path: str, args: list, inputs: list, runner: str = "inline") -> Result:
    """The same job run by mrjob itself (a fresh import of the job file)."""
    mc.import_mrjob()
    from mrjob.job import MRJob
    spec = importlib.util.spec_from_file_location(
        f"_ref_{os.path.basename(path)[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    classes = [v for v in vars(module).values() if isinstance(v, type)
               and issubclass(v, MRJob) and v.__module__ == spec.name]
    job = classes[0](["-r", runner, "--no-conf", *args, *map(os.path.abspath, inputs)])
    with job.make_runner() as r:
        r.run()
        data = b"".join(r.cat_output())
        counters: dict = {}
        for step in r.counters():
            for group, names in step.items():
                for name, n in names.items():
                    counters.setdefault(group, {})
                    counters[group][name] = counters[group].get(name, 0) + n
    return Result([data], counters)
