"""What a task runs of its job: the functions of its step, and the job object whose
counters, status, setup and finish are the task's.

A native job (a `blfsd.Job` subclass) is instantiated with the task's context; its steps
are its own methods or what its steps() returns. An mrjob job (an `MRJob` subclass) is
loaded through mrjob_compat, with a plain Job object to carry its counters and status.
Either way the task gets a `TaskCode`: its step, the step it feeds (whose partitioner and
combiner shape its output), and the hooks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from ..job import _NOT_CONSTANT, Context, Job, constant_value, load_job_class, native_steps
from ..messages import AttemptSpec, TaskKind
from ..records import default_partition
from ..steps import Step
from ..taskchannel import TaskEnd
from .reporter import Reporter


NOT_CONSTANT = _NOT_CONSTANT


def constant_of(tc: "TaskCode") -> Any:
    """The one value a native map's code yields with every key, if it proves one (then
    its output is counted by key as it streams: spill.MapOutput)."""
    return constant_value(tc.mapper()) if tc.native else NOT_CONSTANT


def identity(key: Any, value: Any) -> Iterable:
    """The map of a first step that has none: each record passes as a pair."""
    yield key, value


@dataclass
class TaskCode:
    """The task's step and hooks, and the Job object that counts for it."""
    job: Job
    reporter: Reporter
    step: Step
    feeds: Optional[Step]  # the step of the stage this task's output goes to
    native: bool
    context: Any = None  # an mrjob job's TaskContext

    def bind_input(self, f: Any) -> None:
        """The split's descriptor, where a task that reads its input file itself (mrjob's
        mapper_raw) can open it: the task may not open the file's path."""
        if self.context is not None:
            self.context.input_local = f"/proc/self/fd/{f.fileno()}"

    def setup(self) -> None:
        if self.native:
            self.job.setup()

    def finish(self) -> Iterable:
        """What the job's finish() yields at the end of the task (native jobs)."""
        return (self.job.finish() or ()) if self.native else ()

    def mapper(self) -> Callable:
        return self.step.map or identity

    def partition(self) -> Callable[[Any, int], int]:
        """How the output is cut for the stage it feeds."""
        if self.feeds is not None and self.feeds.partition is not None:
            return self.feeds.partition
        return self.job.partition if self.native else default_partition


def load(spec: AttemptSpec, node: str, chan: TaskEnd) -> TaskCode:
    """The task's code, ready to run (setup not called yet)."""
    ctx = Context(spec.job, spec.task, spec.attempt, node,
                  spec.index if spec.kind == TaskKind.REDUCE else None, spec.step,
                  spec.kind, spec.split.path if spec.split else None)
    context = None
    if spec.api == "mrjob":
        holder = Job(spec.args, ctx)
        steps, context = _mrjob_steps(spec, holder)
        job, native = holder, False
    else:
        cls = load_job_class(spec.source, spec.job_file, spec.job_class)
        job = cls(spec.args, ctx)
        steps, native = native_steps(job, spec.job_file), True
    reporter = Reporter(chan, job)  # before setup: its status updates count too
    step = steps[spec.step]
    return TaskCode(job, reporter, step, _feeds(spec, steps), native, context)


def _feeds(spec: AttemptSpec, steps: list) -> Optional[Step]:
    """The step of the next stage: this step's reduce, when this is its map; else the next
    step (None after the last)."""
    if spec.kind == TaskKind.MAP and steps[spec.step].has_reduce:
        return steps[spec.step]
    return steps[spec.step + 1] if spec.step + 1 < len(steps) else None


def _mrjob_steps(spec: AttemptSpec, holder: Job) -> tuple[list, Any]:
    """An mrjob job's steps, told about this task (its input, counters, status), and the
    context they are told it through."""
    from .. import mrjob_compat
    mrjob_job = mrjob_compat.load(spec.source, spec.job_file, spec.args)
    split = spec.split
    context = mrjob_compat.TaskContext(
        job_id=spec.job, task=spec.index, attempt=spec.attempt,
        input_path=split.path if split else None, input_start=split.start if split else 0,
        input_length=(split.end - split.start) if split else None,
        increment_counter=holder.increment_counter, set_status=holder.set_status)
    return mrjob_compat.steps(mrjob_job, context=lambda: context), context
