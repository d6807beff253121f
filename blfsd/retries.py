"""The retry policy: what a failed attempt counts against, and when its job fails.

Pure functions over the scheduler's tasks (blfsd/scheduler.py), no I/O. Whose fault a
failure was (its FailureKind) decides what it costs:
  - the task's own fault (user code, out of memory, timeout): one of the job's
    --max-attempts, and that worker is avoided for the task;
  - not the task's fault (a lost worker, a full disk, an internal error): a "loss", of
    which a task may have twice as many before its job fails; a full disk also sends the
    task to another node;
  - a fetch failure (the task could not read a producer's output): the producer runs
    again (and, by lineage, what produced the producer's input if that was released).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from . import pipeline
from .messages import FailureKind, JobState, TaskState

if TYPE_CHECKING:  # the scheduler's own types; it imports this module
    from .scheduler import Attempt, ScheduledJob


def charge(a: "Attempt", kind: FailureKind, error: str, info: dict,
           limit: int) -> Optional[str]:
    """Count a failure of attempt `a` against what it is about, `limit` being the job's
    --max-attempts. Returns why the job fails for it, or None if it goes on."""
    task, job = a.task, a.task.job
    if kind == FailureKind.FETCH:
        bad = info.get("map_tasks") or [info.get("map_task")]
        stage = task.stage.index - 1  # a fetch failure is about the stage before
        for index in bad if isinstance(bad, list) and job.state == JobState.RUNNING else []:
            why = refetch(job, stage, index, error, limit)
            if why:
                return why
        return None
    if kind.apart:
        task.lost += 1
        if kind == FailureKind.DISK_FULL:
            task.avoid.add(a.worker)  # another node's disk may have room
        if task.lost > 2 * limit:
            how = {FailureKind.LOST: "with its worker"}.get(kind, f"({kind}): {error}")
            return f"{task.name} lost {task.lost} times {how}"
    elif kind.counted:
        task.failures += 1
        task.avoid.add(a.worker)
        if task.failures >= limit:
            return failure_text(a, kind, error)
    return None


def refetch(job: "ScheduledJob", stage: int, index: Any, error: str,
            limit: int) -> Optional[str]:
    """A task could not read the output of task `index` of `stage`: that producer runs
    again (and, if its own input was already released, what produced that: lineage).
    Returns why the job fails, if the producer's output failed too often."""
    if not 0 <= stage < len(job.stages) or not isinstance(index, int) \
            or not 0 <= index < len(job.stages[stage].tasks):
        return None  # a report about no task we know: nothing to re-run
    task = job.stages[stage].tasks[index]
    if task.state != TaskState.SUCCEEDED:
        return None  # already running again
    for earlier in pipeline.lineage(job, task):
        earlier.discard_output(blame=False)
    task.discard_output()
    if task.failures >= limit:
        return f"the output of {task.name} could not be read {task.failures} times: {error}"
    return None


def failure_record(a: "Attempt", kind: FailureKind, error: str) -> dict:
    """A failed attempt as `blfs status` lists it."""
    return {"attempt": a.id, "task": a.task.name, "number": a.number, "worker": a.worker,
            "kind": kind, "error": error}


def failure_text(a: "Attempt", kind: FailureKind, error: str) -> str:
    """Why a job failed when one task failed too often: its last attempt's error."""
    return (f"task {a.task.name} failed {a.task.failures} times; last attempt "
            f"{a.number} on worker {a.worker} ({kind}):\n{error}")
