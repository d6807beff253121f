"""What the workers' slot pools can hold, as the scheduler counts it. No I/O.

A map's output (and a middle step's reduce's) stays in slots of its worker's pool until no
task of its job needs it any more: a first stage's until the job ends. Two jobs whose
outputs together need more slots than the pools have could each fill a part of them and
then fail, map after map, for want of the room the other one holds (FailureKind.POOL).
So a job starts only when the slots its outputs can hold at once fit beside those of the
jobs already running (`waiting_for`; first come, first served, so that a large job is
never passed over for ever), and an attempt goes to a worker with room in its pool
before one without (`room`). A worker tells its pool's size in its sync and pongs
(`slots`); while no worker has told it, nothing waits (a scheduler without pools).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Optional

from .messages import FINISHED

if TYPE_CHECKING:  # the scheduler's own types; it imports this module
    from .scheduler import ScheduledJob, WorkerState


def need(job: "ScheduledJob") -> int:
    """The slots a job's outputs can hold at once, one per task at least: a stage's outputs
    are held until the stage after it has succeeded, so those of two stages in a row; the
    last stage's output is the job's part files, not slots."""
    held = [len(s.tasks) for s in job.stages[:-1]]
    return max((a + b for a, b in zip(held, held[1:] + [0])), default=0)


def pool_size(w: "WorkerState") -> Optional[int]:
    """The slots of a worker's pool, if it said."""
    slots = w.info.get("slots")
    return slots if isinstance(slots, int) and not isinstance(slots, bool) else None


def capacity(workers: Iterable["WorkerState"]) -> Optional[int]:
    """The slots of the pools of the workers that take attempts (None: none said)."""
    sizes = [pool_size(w) for w in workers if w.alive and not w.draining]
    known = [n for n in sizes if n is not None]
    return sum(known) if known else None


def waiting_for(job: "ScheduledJob", running: list,
                workers: Iterable["WorkerState"]) -> Optional[str]:
    """Why `job` may not start beside the running jobs yet, or None if it may: its need
    must fit in what theirs leave of the pools. A job always starts when none runs (if it
    is larger than the pools, its outputs may still fit as its stages release them)."""
    total = capacity(workers)
    if total is None or not running:
        return None
    kept = sum(need(j) for j in running)
    wanted = need(job)
    if kept + wanted <= total:
        return None
    return (f"pool slots: the job needs {wanted}, the running jobs keep {kept} of the "
            f"workers' {total}")


def held_counts(jobs: Iterable["ScheduledJob"]) -> dict[str, int]:
    """node -> the slots that outputs of unfinished jobs hold there (from the books)."""
    held: dict[str, int] = {}
    for job in jobs:
        if job.state not in FINISHED:
            for stage in job.stages:
                for node, n in stage.book.held_count.items():
                    held[node] = held.get(node, 0) + n
    return held


def room(w: "WorkerState", held: dict[str, int]) -> float:
    """Slots of a worker's pool that no output holds (`held`: held_counts) and no attempt
    running there may take (each may: counted as one); unbounded if it never said."""
    size = pool_size(w)
    return float("inf") if size is None else size - held.get(w.name, 0) - len(w.running)


def prefer_room(workers: list, held: dict[str, int]) -> list:
    """The workers with room in their pools, if one of them can take an attempt now; else
    all of them (an attempt may still find a slot: a pool's count lags its leases)."""
    roomy = [w for w in workers if room(w, held) > 0]
    return roomy if any(w.alive and not w.draining and w.free > 0 for w in roomy) \
        else workers
