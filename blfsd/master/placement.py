"""The master's decisions about data, without I/O: where a put's splits go, how many reducers
a job gets, which outputs and datasets are taken, and who serves a read.

(The decisions about tasks, such as placement, retries, speculation and commit, are the
scheduler's: blfsd.scheduler.)
"""
from __future__ import annotations

from typing import Iterable, Mapping, Optional

from ..errors import Conflict, ConnectionClosed, UsageError
from ..messages import FINISHED, JobSpec

MAX_PUT_SPLITS = 100_000


def roomiest_first(disk_free: Mapping[str, Optional[int]]) -> list[str]:
    """Workers by the room left on their disks, most first; equals by name (a worker that
    has not said yet counts as full)."""
    return sorted(sorted(disk_free), key=lambda n: -(disk_free[n] or 0))


def check_replicas(replicas: int, disks: int, of: str) -> None:
    """UsageError, in one line, when the cluster has fewer disks than replicas wanted
    (one copy is always allowed: the master may not know its workers yet)."""
    if replicas > max(1, disks):
        raise UsageError(f"cannot keep {replicas} replicas of each {of}: the cluster has "
                         f"{disks} disks")


def split_nodes(workers: list[str], splits: int, replicas: int = 1,
                disks: int = 0) -> list[list[str]]:
    """The workers that keep each split of a new dataset, `replicas` different ones per
    split: round robin over `workers` (roomiest first, so that a put smaller than the
    cluster lands on the emptiest disks), each replica on the next worker after the one
    before. UsageError when the cluster has fewer than `replicas` disks (`disks`: the
    nodes it knows); ConnectionClosed when fewer workers than that are connected now."""
    if replicas < 1:
        raise UsageError(f"--replicas must be at least 1, not {replicas}")
    if not workers:
        raise ConnectionClosed("no worker is connected to the master")
    check_replicas(replicas, max(disks, len(workers)), "split")
    if len(workers) < replicas:
        raise ConnectionClosed(f"{replicas} replicas need {replicas} connected workers; "
                               f"{len(workers)} are connected now")
    n = len(workers)
    return [[workers[(i + k) % n] for k in range(replicas)] for i in range(splits)]


def default_reducers(asked: Optional[int], configured: int, alive: int) -> int:
    """The job's own count, else [master] reducers, else one per live worker."""
    return asked or configured or max(1, alive)


def check_output(spec: JobSpec, recorded: bool, has_success: bool,
                 live_outputs: Iterable[tuple[str, str]]) -> None:
    """Conflict unless the job's output is free: a cluster output of that name is not
    `recorded` yet, an output directory does not hold a finished job's _SUCCESS, and no
    unfinished job (id, output) writes there."""
    output = spec.output
    if spec.output_name and recorded:
        raise Conflict(f"output {output} already exists (blfs rm {output} first)")
    if not spec.output_name and has_success:
        raise Conflict(f"output {output} already holds a finished job's _SUCCESS")
    for job_id, other in live_outputs:
        if other == output:
            raise Conflict(f"job {job_id} is already writing to {output}")


def check_dataset_name(name: str, stored: bool, putting: bool) -> None:
    """Conflict when a dataset of that name exists or is being put."""
    if stored or putting:
        raise Conflict(f"dataset {name!r} already exists (blfs rm {name} first)")


def user_of(name: str, jobs: Iterable) -> Optional[str]:
    """The id of an unfinished job that reads dataset `name` or writes output `name`."""
    for job in jobs:
        if job.state not in FINISHED and name in job.spec.datasets + [job.spec.output_name]:
            return job.id
    return None


def read_plan(holders: list[str], connected: list[str]) -> list[tuple[str, str]]:
    """(server, node) pairs to try for a read of a file kept on the disks of `holders`:
    each connected holder from its own disk first; then, for each holder in turn, every
    connected worker through its view of that disk (a disk outlives its worker, and every
    node mounts it)."""
    own = [(h, h) for h in holders if h in connected]
    views = [(w, h) for h in holders for w in connected if (w, h) not in own]
    return own + views


def copy_targets(holder: str, connected: list[str]) -> list[str]:
    """Workers to copy a part written on `holder` to, in the order to try them: those after
    it in name order, wrapping around (so that the copies spread over the cluster)."""
    others = sorted(w for w in connected if w != holder)
    after = [w for w in others if w > holder] + [w for w in others if w < holder]
    return after
