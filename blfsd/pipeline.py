"""How a job's steps become stages of tasks, and how the stages feed each other. No I/O.

A step may have a map, a combine and a reduce. Its map and its reduce are each a *stage*:
a list of tasks of one kind. The first step always has a map stage (an identity map if
the step has none); after that a step without a map is a reduce-only step that takes the
previous stage's pairs, and a step without a reduce is a map-only step.

Every stage but the last writes its output as segments into slots, as a map always did,
shaped for the stage it feeds:

- it feeds a **reduce** stage of R tasks: R partitions, sorted, cut by the consumer
  step's partitioner (and combined by its combiner);
- it feeds a **map** stage: one partition, unsorted, and the next stage has one map per
  task of this one: map i of step s+1 reads exactly what task i of step s wrote. The
  previous step's partitions are the next step's splits: they are already spread over the
  workers' disks, their number is the parallelism the user chose for that step, and no
  byte is copied or re-cut to make them.

The last stage writes the job's output: one part file per task. Nothing of a middle stage
ever leaves the shared disks.

A task is ready when every task it reads from (its producers) has succeeded and its output
is still held. A stage's slots are released once the stage it feeds has succeeded; a
task that must run again after that (its output was lost or failed its checksum) first
needs its producers run again: lineage, back to the job's input if need be.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from .messages import JobSpec, SegmentLocation, StepSpec, TaskKind, TaskState
from .stagebook import StageBook

if TYPE_CHECKING:
    from .scheduler import ScheduledJob, Task


@dataclass
class Stage:
    """The map or the reduce of one step, and the shape of what it writes."""
    index: int
    step: int
    kind: TaskKind
    tasks: list = field(default_factory=list)
    partitions: int = 0  # of its output, for the next stage; 0: it writes the job's output
    sort_output: bool = True  # its output feeds a reduce
    sort_values: bool = False  # ... sorted by value too within a key (the consumer's step)
    book: StageBook = field(default_factory=StageBook, repr=False, compare=False)

    @property
    def final(self) -> bool:
        return self.partitions == 0

    def done(self) -> bool:
        """Whether every task of the stage has succeeded."""
        return self.book.succeeded == len(self.tasks)


def stage_kinds(steps: list[StepSpec]) -> list[tuple[int, TaskKind]]:
    """(step, kind) of each stage, in order."""
    kinds = []
    for number, step in enumerate(steps):
        if step.map or number == 0:
            kinds.append((number, TaskKind.MAP))
        if step.reduce:
            kinds.append((number, TaskKind.REDUCE))
    return kinds


def reducers_of(step: StepSpec, spec: JobSpec) -> int:
    """A step's reduces: its own setting, else the job's (command line or master)."""
    return max(1, step.reducers or spec.reducers or 1)


def build_stages(spec: JobSpec) -> tuple[list[Stage], list[int]]:
    """The job's stages with their output shapes, and how many tasks each has (the
    scheduler makes them): the first map one per split, a later map one per task of the
    stage before it, a reduce its step's reducers."""
    kinds = stage_kinds(spec.steps)
    stages: list[Stage] = []
    sizes: list[int] = []
    for i, (step, kind) in enumerate(kinds):
        if kind == TaskKind.REDUCE:
            sizes.append(reducers_of(spec.steps[step], spec))
        else:
            sizes.append(len(spec.splits) if i == 0 else sizes[-1])
        stages.append(Stage(i, step, kind))
    for stage, nxt in zip(stages, stages[1:]):
        feeds_reduce = nxt.kind == TaskKind.REDUCE
        stage.partitions = sizes[nxt.index] if feeds_reduce else 1
        stage.sort_output = feeds_reduce
        stage.sort_values = feeds_reduce and spec.steps[nxt.step].sort_values
    return stages, sizes


def task_name(stage: Stage, index: int, steps: int) -> str:
    """m-00003 and r-00001 for a job of one step; s1-m-00003 for a pipeline's later steps."""
    base = f"{stage.kind[0]}-{index:05d}"
    return base if steps == 1 or stage.step == 0 else f"s{stage.step}-{base}"


def producers(job: "ScheduledJob", task: "Task") -> list:
    """The tasks whose output `task` reads: none for the first stage, the same-numbered
    task of the stage before for a later map, every task of it for a reduce."""
    if task.stage.index == 0:
        return []
    before = job.stages[task.stage.index - 1]
    return [before.tasks[task.index]] if task.kind == TaskKind.MAP else list(before.tasks)


def ready(job: "ScheduledJob", task: "Task", slow_start: float = 1.0) -> bool:
    """Every producer succeeded and still holds its output (a reduce's: counted in the
    stage's book, not looked up task by task); for a reduce, with slow_start below 1,
    that share of its producers is enough: it reads the rest as they finish."""
    if task.stage.index == 0:
        return True
    before = job.stages[task.stage.index - 1]
    if task.kind == TaskKind.REDUCE:
        need = len(before.tasks)
        if slow_start < 1.0:
            need = min(need, max(1, math.ceil(slow_start * need)))
        return before.book.readable >= need
    p = before.tasks[task.index]
    return p.state == TaskState.SUCCEEDED and not p.released


def input_segments(job: "ScheduledJob", task: "Task", given: Optional[set] = None,
                   only: Optional[list] = None) -> list[SegmentLocation]:
    """What a task of a later stage reads: its producers' segments (of its partition, for
    a reduce), each tagged with the producer (stage, task, attempt) that wrote it. Only
    producers whose output is readable, and not in `given` (what an early reduce has
    been told already); those are added to `given`. A producer is never given twice, so
    a reduce never merges two attempts of one map. `only`: of a reduce's producers, just
    these (by index, in order)."""
    partition = task.index if task.kind == TaskKind.REDUCE else 0
    out = []
    if only is None:
        candidates = producers(job, task)
    else:
        candidates = [job.stages[task.stage.index - 1].tasks[i] for i in only]
    for p in candidates:
        if p.state != TaskState.SUCCEEDED or p.released or (given is not None
                                                             and p.index in given):
            continue
        if given is not None:
            given.add(p.index)
        for loc in p.by_partition.get(partition, ()):
            out.append(loc.replace(stage=p.stage.index, map_task=p.index,
                                   map_attempt=p.winner.number))
    return out


def to_release(job: "ScheduledJob", stage: Stage) -> list:
    """The tasks whose output nobody needs once `stage` has succeeded: those of the stage
    before it that still hold theirs (the last stage's output is the job's, committed
    instead)."""
    if stage.index == 0 or not stage.done():
        return []
    return [t for t in job.stages[stage.index - 1].tasks
            if t.state == TaskState.SUCCEEDED and not t.released]


def lineage(job: "ScheduledJob", task: "Task") -> list:
    """The tasks that must run again before `task` can (its producers whose output was
    released), and theirs, back to the job's input: each once, and the stage a reduce
    reads looked at once for all the reduces of its stage (so a chain of reduces costs
    the tasks of its stages, not their product)."""
    again: list = []
    seen: set = set()
    expanded: set = set()  # stages whose reduces' producers were looked at
    todo = [task]
    while todo:
        t = todo.pop()
        if t.kind == TaskKind.REDUCE:
            if t.stage.index in expanded:
                continue
            expanded.add(t.stage.index)
        for p in producers(job, t):
            if p.released and p.state == TaskState.SUCCEEDED and id(p) not in seen:
                seen.add(id(p))
                again.append(p)
                todo.append(p)
    return again
